"""How the CLI gets the bearer token it sends: a raw token, or client credentials traded for access tokens.

Credentials, first found wins: ``--token`` / ``NEMO_TOKEN`` (a raw bearer token, sent as is), then
``NEMO_CLIENT_ID`` + ``NEMO_CLIENT_SECRET``, then the ``admin-credentials.json`` that ``nemo up`` wrote in the
data directory.

Where credentials may go is decided from local facts only, never from what a server says about itself: the
admin credentials are used only for an API at the origin (scheme, host, port) of the local ``nemo up``'s API or
gateway (from ``endpoint.json``) or of the admin file's issuer; client credentials are sent to the issuer pinned by
``NEMO_OIDC_ISSUER`` when it is set (otherwise to the issuer the API names, which the user chose to talk to).

Access tokens from client credentials are cached in memory and in ``DATA_DIR/cli-token.json`` (0600, keyed by
issuer and client id): every token request costs the issuer an Argon2id verification of the client secret
(about 64 MiB and tens of milliseconds by design), and each CLI command is a new process, so without the file
every ``nemo ...`` would pay it. The file holds only short-lived access tokens (5 minutes by default), never a
secret, and lives next to the admin credentials that are more sensitive still.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from nemo_kernel.cli.secret_files import read_json, write_secret_json

#: A cached token is renewed when it has less than this left, so a command never starts with a dying token.
REFRESH_MARGIN = 30.0


class TokenError(Exception):
    """No token could be had (no credentials, refused credentials, issuer unreachable)."""


@dataclass(frozen=True, slots=True)
class ClientSecret:
    """A client id and its secret, for the client_credentials grant."""

    client_id: str
    client_secret: str

    def __repr__(self) -> str:  # the secret must not reach a traceback or a log line
        return f"ClientSecret(client_id={self.client_id!r}, client_secret='***')"


def _json(http: httpx.Client, method: str, url: str, **kwargs: object) -> dict[str, object]:
    try:
        response = http.request(method, url, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        raise TokenError(f"cannot reach {url}: {exc}") from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400 or not isinstance(body, dict):
        detail = body.get("error_description") or body.get("error") if isinstance(body, dict) else None
        raise TokenError(f"{url} answered HTTP {response.status_code}" + (f": {detail}" if detail else ""))
    return body


class ClientCredentialsTokens:
    """Access tokens for one client from the issuer the API names, cached in memory and in ``cache_file``."""

    def __init__(
        self,
        api_url: str,
        credentials: ClientSecret,
        http: httpx.Client,
        cache_file: Path | None,
        *,
        issuer: str | None = None,
    ) -> None:
        self._api_url = api_url.rstrip("/")
        self._credentials = credentials
        self._http = http
        self._cache_file = cache_file
        self._issuer: str | None = issuer.rstrip("/") if issuer else None
        self._token: tuple[str, float] | None = None

    def issuer(self) -> str:
        """The pinned issuer, or the one the API trusts, from its ``/.well-known/nemo-configuration``."""
        if self._issuer is None:
            config = _json(self._http, "GET", f"{self._api_url}/.well-known/nemo-configuration")
            self._issuer = str(config["issuer"]).rstrip("/")
        return self._issuer

    def _cache_key(self) -> str:
        return f"{self.issuer()} {self._credentials.client_id}"

    def token(self) -> str:
        """A token with at least :data:`REFRESH_MARGIN` seconds left: from memory, the cache file, or the issuer."""
        if self._token is None and self._cache_file is not None:
            entry = (read_json(self._cache_file) or {}).get(self._cache_key())
            if isinstance(entry, dict) and isinstance(entry.get("access_token"), str):
                self._token = (entry["access_token"], float(entry.get("expires_at", 0)))
        if self._token is not None and self._token[1] - time.time() > REFRESH_MARGIN:
            return self._token[0]
        return self.fresh()

    def fresh(self) -> str:
        """A new token from the issuer's token endpoint (found by OIDC discovery), cached for the next call."""
        issuer = self.issuer()
        discovery = _json(self._http, "GET", f"{issuer}/.well-known/openid-configuration")
        answer = _json(
            self._http,
            "POST",
            str(discovery["token_endpoint"]),
            data={"grant_type": "client_credentials"},
            auth=(self._credentials.client_id, self._credentials.client_secret),
        )
        token = answer.get("access_token")
        if not isinstance(token, str):
            raise TokenError("the token endpoint answered without an access_token")
        expires_in = answer.get("expires_in")
        expires_at = time.time() + (float(expires_in) if isinstance(expires_in, int | float) else 60.0)
        self._token = (token, expires_at)
        self._store(token, expires_at)
        return token

    def forget(self) -> None:
        """Drop the current token (the API refused it), so the next :meth:`token` fetches a new one."""
        self._token = None
        self._store(None, 0.0)

    def _store(self, token: str | None, expires_at: float) -> None:
        if self._cache_file is None:
            return
        now = time.time()
        entries = {
            k: v
            for k, v in (read_json(self._cache_file) or {}).items()
            if isinstance(v, dict) and float(v.get("expires_at", 0)) > now
        }
        entries.pop(self._cache_key(), None)
        if token is not None:
            entries[self._cache_key()] = {"access_token": token, "expires_at": expires_at}
        # A cache that cannot be written only costs the next command a token request.
        with contextlib.suppress(OSError):
            write_secret_json(self._cache_file, entries)


class StaticToken:
    """A raw bearer token given by the user: sent as is, never refreshed."""

    def __init__(self, token: str) -> None:
        self._value = token

    def token(self) -> str:
        """The token."""
        return self._value

    def fresh(self) -> str:
        """The same token: there is nothing to refresh it with."""
        return self._value

    def forget(self) -> None:
        """Nothing to forget."""


TokenSource = ClientCredentialsTokens | StaticToken


def origin(url: str) -> tuple[str, str, int]:
    """Scheme, host and port of a URL (default ports filled in), to compare where requests go."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def find_credentials(
    api_url: str, http: httpx.Client, *, raw_token: str | None, admin_file: Path, local_urls: Iterable[str]
) -> TokenSource | None:
    """The token source for ``api_url`` by the order in the module docstring; ``None`` when there is none.

    ``local_urls`` are the URLs of the local ``nemo up`` (its API and gateway), read from its endpoint file.
    """
    if raw_token:
        return StaticToken(raw_token)
    cache = admin_file.with_name("cli-token.json")
    client_id, secret = os.environ.get("NEMO_CLIENT_ID"), os.environ.get("NEMO_CLIENT_SECRET")
    if client_id and secret:
        pinned = os.environ.get("NEMO_OIDC_ISSUER") or None
        return ClientCredentialsTokens(api_url, ClientSecret(client_id, secret), http, cache, issuer=pinned)
    admin = read_json(admin_file)
    if admin is None or not isinstance(admin.get("client_id"), str) or not isinstance(admin.get("client_secret"), str):
        return None
    trusted = {origin(url) for url in (*local_urls, str(admin.get("issuer", ""))) if url}
    if origin(api_url) not in trusted:
        return None  # the local admin secret never goes to a server we did not start
    # The file names the local `nemo up`'s issuer (kept current by it), which spares each command a discovery call.
    issuer = admin.get("issuer") if isinstance(admin.get("issuer"), str) else None
    return ClientCredentialsTokens(
        api_url, ClientSecret(admin["client_id"], admin["client_secret"]), http, cache, issuer=issuer
    )
