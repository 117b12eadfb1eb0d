"""The CLI's HTTP client: finds the API (``--api``, ``NEMO_API``, or the ``nemo up`` of the same user) and sends
a bearer token with every call (see :mod:`nemo_kernel.cli.tokens` for where it comes from)."""

from __future__ import annotations

import json
import os
import ssl
from typing import Any

import httpx
import psutil

from nemo_kernel.cli.tokens import ClientCredentialsTokens, TokenError, TokenSource, find_credentials
from nemo_kernel.config import Settings


class CliError(Exception):
    """An error the CLI reports in one line and exits non-zero."""


def local_endpoints(settings: Settings) -> list[str]:
    """The API and gateway URLs the local ``nemo up`` recorded (empty if it never ran here)."""
    try:
        info = json.loads(settings.endpoint_file.read_text())
    except (OSError, ValueError):
        return []
    return [str(info[key]) for key in ("url", "gateway") if isinstance(info, dict) and info.get(key)]


def discover_api(explicit: str | None, settings: Settings) -> str:
    """The API base URL to talk to."""
    if explicit:
        return explicit.rstrip("/")
    path = settings.endpoint_file
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        raise CliError(
            f"no running `nemo up` found ({path} missing); start one, or pass --api URL / NEMO_API"
        ) from None
    if not psutil.pid_exists(int(info.get("pid", -1))):
        raise CliError(f"the `nemo up` recorded in {path} (pid {info.get('pid')}) is not running; start it again")
    return str(info["url"]).rstrip("/")


class _TlsOnFirstUse(httpx.BaseTransport):
    """httpx's default transport, made at the first request that goes through it (an https one).

    Making it loads the CA bundle, which takes longer than a whole request to a local API (tens of milliseconds,
    more on a busy machine): a command whose API and issuer speak plain HTTP never pays for it.
    """

    def __init__(self) -> None:
        self._transport: httpx.HTTPTransport | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the default transport, made now if this is its first request."""
        if self._transport is None:
            self._transport = httpx.HTTPTransport()
        return self._transport.handle_request(request)

    def close(self) -> None:
        """Close the default transport if it was made."""
        if self._transport is not None:
            self._transport.close()


class ApiClient:
    """Thin synchronous client of ``/api/v1`` that turns error bodies into :class:`CliError`.

    With a token source, every call carries ``Authorization: Bearer``; a 401 is retried once with a new token,
    because a cached token may have been revoked, or issued before the control plane moved to another URL.
    """

    def __init__(self, base_url: str, settings: Settings, timeout: float = 30.0) -> None:
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            transport=_TlsOnFirstUse(),
            # Plain HTTP needs no CA bundle; a context that trusts nothing keeps this transport useless for TLS.
            mounts={"http://": httpx.HTTPTransport(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))},
        )
        self.tokens: TokenSource | None = find_credentials(
            base_url,
            self._http,
            raw_token=_raw_token(),
            admin_file=settings.admin_credentials_file,
            local_urls=local_endpoints(settings),
        )

    def access_token(self, *, fresh: bool = False) -> str:
        """The bearer token this client sends (a new one with ``fresh``); :class:`CliError` if there is none."""
        if self.tokens is None:
            raise CliError(_NO_CREDENTIALS)
        try:
            return self.tokens.fresh() if fresh else self.tokens.token()
        except TokenError as exc:
            raise CliError(f"cannot get a token: {exc}") from exc

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the API; returns the decoded JSON body (None for 204)."""
        response = self._checked(method, path, kwargs)
        return response.json() if response.content else None

    def get_text(self, path: str, **params: Any) -> str:
        """GET ``/api/v1{path}`` whose answer is text (a YAML file), not JSON."""
        return self._checked("GET", path, {"params": {k: v for k, v in params.items() if v is not None}}).text

    def _checked(self, method: str, path: str, kwargs: dict[str, Any]) -> httpx.Response:
        response = self._send(method, path, kwargs)
        if response.status_code == 401 and isinstance(self.tokens, ClientCredentialsTokens):
            self.tokens.forget()
            response = self._send(method, path, kwargs)
        if response.status_code >= 400:
            hint = f"\n{_NO_CREDENTIALS}" if response.status_code == 401 and self.tokens is None else ""
            raise CliError(_describe_error(response) + hint)
        return response

    def _send(self, method: str, path: str, kwargs: dict[str, Any]) -> httpx.Response:
        _check_path(path)
        headers = dict(kwargs.get("headers") or {})
        if self.tokens is not None:
            headers["Authorization"] = f"Bearer {self.access_token()}"
        try:
            return self._http.request(method, f"/api/v1{path}", **{**kwargs, "headers": headers})
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the API at {self.base_url}: {exc}") from exc

    def get(self, path: str, **params: Any) -> Any:
        """GET ``/api/v1{path}``."""
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        """POST a JSON body to ``/api/v1{path}``."""
        return self.request("POST", path, json=body, params={k: v for k, v in params.items() if v is not None})

    def patch(self, path: str, body: Any) -> Any:
        """PATCH ``/api/v1{path}`` with a JSON body."""
        return self.request("PATCH", path, json=body)

    def put(self, path: str, body: Any = None) -> Any:
        """PUT a JSON body to ``/api/v1{path}``."""
        return self.request("PUT", path, json=body)

    def delete(self, path: str, **params: Any) -> Any:
        """DELETE ``/api/v1{path}``."""
        return self.request("DELETE", path, params={k: v for k, v in params.items() if v is not None})


def _check_path(path: str) -> None:
    """Refuse an API path a name given on the command line would turn into another resource's: commands put names
    into paths as written, and an HTTP client resolves dot segments (``nemo workload delete ../clusters/edge`` sent
    ``DELETE /api/v1/clusters/edge``), so an empty, ``.`` or ``..`` segment, or a control character, is an error."""
    for segment in path.split("/")[1:]:
        if segment in ("", ".", "..") or not segment.isprintable():
            raise CliError(f"{segment!r} is not a name (in {path!r}): a name is not empty, '.' or '..'")


_NO_CREDENTIALS = (
    "no credentials: set NEMO_CLIENT_ID and NEMO_CLIENT_SECRET, or NEMO_TOKEN (or --token), "
    "or run the CLI as the user whose `nemo up` wrote admin-credentials.json"
)


# `nemo --token T ...` is an option of the root command; its callback records it here for the clients it makes.
_root_token: str | None = None


def use_token(token: str | None) -> None:
    """Send ``token`` as is from every client this process makes (``--token``); ``None`` to use credentials."""
    global _root_token
    _root_token = token or None


def _raw_token() -> str | None:
    return _root_token or os.environ.get("NEMO_TOKEN") or None


def _describe_error(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
    message = str(error.get("message"))
    details = error.get("details")
    fields = [f"{d.get('field')}: {d.get('message')}" for d in details if isinstance(d, dict)] if details else []
    # For clients that show only the message, the API repeats the field errors in it: a summary of the first ones
    # after a title, or the one error itself. Each is said once here, with its field.
    if fields and (start := message.find(fields[0])) > 0:
        message = message[:start].rstrip(" :;")
    elif len(fields) == 1 and fields[0].endswith(f": {message}"):
        message, fields = fields[0], []
    lines = [f"{message} (HTTP {response.status_code}, {error.get('code')})", *(f"  {f}" for f in fields)]
    return "\n".join(lines)


def api_from_env_or(explicit: str | None) -> ApiClient:
    """A client for the API chosen by ``--api``, ``NEMO_API`` or discovery."""
    explicit = explicit or os.environ.get("NEMO_API")
    settings = Settings()  # once: reading the settings from the environment costs more than a local request
    return ApiClient(discover_api(explicit, settings), settings)
