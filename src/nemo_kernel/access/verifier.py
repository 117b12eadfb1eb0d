"""Bearer token verification: JWT signature against the issuer's JWKS, claims, and optional introspection.

One async core (:class:`TokenVerifier`) with two pluggable sources, so the same verifier works against a remote
provider (Keycloak, oidc-provider: :class:`RemoteJwks`, :class:`RemoteIntrospector`) and against NEMO's built-in
issuer in the same process (which implements :class:`KeySource` and :class:`Introspector` directly).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import jwt

from nemo_kernel.access.errors import IdentityProviderUnavailable, InvalidToken
from nemo_kernel.access.tokens import ASYMMETRIC_ALGORITHMS, KEY_TYPE_FOR_ALGORITHM, Principal, principal_from_claims

__all__ = [
    "ClientCredentials",
    "Introspector",
    "KeySource",
    "OidcDiscovery",
    "RemoteIntrospector",
    "RemoteJwks",
    "TokenVerifier",
]

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class KeySource(Protocol):
    """Where verification keys come from."""

    async def key(self, kid: str | None, algorithm: str) -> jwt.PyJWK:
        """The public key with ``kid`` usable for ``algorithm``; raises :class:`InvalidToken` if there is none."""
        ...


class Introspector(Protocol):
    """RFC 7662 token introspection."""

    async def introspect(self, token: str) -> Mapping[str, Any]:
        """The introspection response; ``{"active": False}`` for a token that must be refused."""
        ...


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """A confidential client's id and secret, used to authenticate to the introspection endpoint."""

    client_id: str
    client_secret: str

    def __repr__(self) -> str:  # the secret must never reach a log line
        return f"ClientCredentials(client_id={self.client_id!r}, client_secret='***')"


class OidcDiscovery:
    """The issuer's discovery document (``/.well-known/openid-configuration``), fetched once and kept."""

    def __init__(self, issuer: str, http: httpx.AsyncClient) -> None:
        self.issuer = issuer.rstrip("/")
        self._http = http
        self._document: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    async def document(self) -> dict[str, Any]:
        """The discovery document; its ``issuer`` must equal the configured issuer (OIDC Discovery 4.3)."""
        if self._document is not None:
            return self._document
        async with self._lock:
            if self._document is None:
                url = f"{self.issuer}/.well-known/openid-configuration"
                doc = await _get_json(self._http, url)
                if str(doc.get("issuer", "")).rstrip("/") != self.issuer:
                    raise IdentityProviderUnavailable(
                        "discovery document names another issuer", details={"issuer": doc.get("issuer")}
                    )
                self._document = doc
            return self._document

    async def endpoint(self, name: str) -> str:
        """One endpoint URL of the document, e.g. ``jwks_uri`` or ``introspection_endpoint``."""
        value = (await self.document()).get(name)
        if not isinstance(value, str):
            raise IdentityProviderUnavailable(f"issuer advertises no {name}")
        return value


async def _get_json(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    try:
        response = await http.get(url)
        response.raise_for_status()
        data = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise IdentityProviderUnavailable("identity provider unreachable", details={"url": url}) from exc
    if not isinstance(data, dict):
        raise IdentityProviderUnavailable("identity provider sent a non-object", details={"url": url})
    return data


class RemoteJwks:
    """A JWKS fetched over HTTP, cached for ``ttl`` seconds and re-fetched when a token names an unknown ``kid``.

    Re-fetches caused by unknown ``kid`` values are spaced at least ``min_refresh_interval`` apart, so a flood of
    tokens with made-up key ids cannot turn the verifier into a load generator against the issuer.
    """

    def __init__(
        self,
        discovery: OidcDiscovery | None = None,
        *,
        jwks_uri: str | None = None,
        http: httpx.AsyncClient | None = None,
        ttl: float = 300.0,
        min_refresh_interval: float = 10.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if discovery is None and jwks_uri is None:
            raise ValueError("RemoteJwks needs a discovery document or a jwks_uri")
        self._discovery = discovery
        self._jwks_uri = jwks_uri
        self._http = http or (discovery._http if discovery else httpx.AsyncClient(timeout=5.0))
        self._ttl = ttl
        self._min_refresh = min_refresh_interval
        self._clock = clock
        self._keys: dict[str | None, _JwkEntry] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def key(self, kid: str | None, algorithm: str) -> jwt.PyJWK:
        """The key for ``kid``; refreshes the set when stale or when ``kid`` is unknown (rate-bounded)."""
        seen = self._fetched_at
        if seen is None or self._clock() - seen >= self._ttl:
            await self._refresh(seen)
        found = self._find(kid, algorithm)
        seen = self._fetched_at
        if found is None and seen is not None and self._clock() - seen >= self._min_refresh:
            await self._refresh(seen)
            found = self._find(kid, algorithm)
        if found is None:
            raise InvalidToken("token signed with an unknown key", details={"kid": kid})
        return found

    def _find(self, kid: str | None, algorithm: str) -> jwt.PyJWK | None:
        if kid is not None:
            entry = self._keys.get(kid)
            return entry.key if entry is not None and entry.fits(algorithm) else None
        # Without a kid, accept only an unambiguous match: guessing among several keys invites confusion.
        fitting = [e.key for e in self._keys.values() if e.fits(algorithm)]
        return fitting[0] if len(fitting) == 1 else None

    async def _refresh(self, seen: float | None) -> None:
        async with self._lock:
            if self._fetched_at != seen:
                return  # another task refreshed while we waited for the lock: use its result
            uri = self._jwks_uri or await self._discovery.endpoint("jwks_uri")  # type: ignore[union-attr]
            document = await _get_json(self._http, uri)
            self._keys = parse_jwks(document)
            self._fetched_at = self._clock()
            self.fetches += 1


@dataclass(frozen=True, slots=True)
class _JwkEntry:
    key: jwt.PyJWK
    kty: str
    alg: str | None

    def fits(self, algorithm: str) -> bool:
        """A key verifies only the algorithm family of its type, and only its declared ``alg`` if it has one."""
        if self.alg is not None and self.alg != algorithm:
            return False
        return self.kty == KEY_TYPE_FOR_ALGORITHM.get(algorithm)


def parse_jwks(document: Mapping[str, Any]) -> dict[str | None, _JwkEntry]:
    """Signing keys of a JWKS document by ``kid``; keys we cannot use (encryption, unknown type) are skipped."""
    keys: dict[str | None, _JwkEntry] = {}
    for entry in document.get("keys", []):
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            parsed = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError):
            continue
        kid = entry.get("kid")
        keys[kid if isinstance(kid, str) else None] = _JwkEntry(parsed, str(entry.get("kty")), entry.get("alg"))
    return keys


class RemoteIntrospector:
    """RFC 7662 introspection against the issuer, authenticated as a client, with a bounded result cache.

    Results are cached for at most ``cache_ttl`` seconds (never past the token's ``exp``), so a revocation takes
    effect within ``cache_ttl``. Failures of the endpoint are not cached and refuse the request (503): without
    an answer we cannot know the token is still active.
    """

    def __init__(
        self,
        credentials: ClientCredentials,
        discovery: OidcDiscovery | None = None,
        *,
        endpoint: str | None = None,
        http: httpx.AsyncClient | None = None,
        cache_ttl: float = 10.0,
        cache_size: int = 10_000,
        clock: Clock = time.time,
    ) -> None:
        if discovery is None and endpoint is None:
            raise ValueError("RemoteIntrospector needs a discovery document or an endpoint")
        self._credentials = credentials
        self._discovery = discovery
        self._endpoint = endpoint
        self._http = http or (discovery._http if discovery else httpx.AsyncClient(timeout=5.0))
        self._ttl = cache_ttl
        self._size = cache_size
        self._clock = clock
        self._cache: OrderedDict[bytes, tuple[float, Mapping[str, Any]]] = OrderedDict()
        self.calls = 0

    async def introspect(self, token: str) -> Mapping[str, Any]:
        """The (possibly cached) introspection response for ``token``."""
        # Cache by digest so raw bearer tokens are not kept in memory longer than the request.
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(key)
            return hit[1]
        endpoint = self._endpoint or await self._discovery.endpoint("introspection_endpoint")  # type: ignore[union-attr]
        self.calls += 1
        try:
            response = await self._http.post(
                endpoint,
                data={"token": token, "token_type_hint": "access_token"},
                auth=(self._credentials.client_id, self._credentials.client_secret),
            )
            response.raise_for_status()
            result = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise IdentityProviderUnavailable("introspection endpoint unreachable") from exc
        if not isinstance(result, dict):
            raise IdentityProviderUnavailable("introspection answered a non-object")
        expires = now + self._ttl
        exp = result.get("exp")
        if isinstance(exp, int | float):
            expires = min(expires, float(exp))
        self._cache[key] = (expires, result)
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return result


class _VerifiedJwts:
    """A bounded LRU of the principals of JWTs that verified, keyed by the token's digest, each until a deadline.
    The same token gives the same :class:`Principal` object while cached, so callers may memoise on it."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self._size = size
        self._entries: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()

    def get(self, key: bytes, now: float) -> Principal | None:
        """The principal of the token with digest ``key`` if it verified and its deadline is not past."""
        if self.ttl <= 0:
            return None
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[0] <= now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return hit[1]

    def put(self, key: bytes, principal: Principal, until: float) -> None:
        """Remember the ``principal`` of the verified token with digest ``key`` until ``until``."""
        if self.ttl <= 0:
            return
        self._entries[key] = (until, principal)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)


class TokenVerifier:
    """Verify bearer tokens and return the :class:`Principal` they speak for.

    JWTs are checked locally: algorithm in the allow-list, signature against ``keys``, ``iss``, ``aud`` (when an
    audience is configured), ``exp``/``nbf``/``iat`` with ``leeway`` seconds of clock skew. Opaque tokens (not a
    JWS) are accepted only through ``introspector``. With ``introspect_jwts=True`` a JWT is also introspected, so
    that a revoked JWT is refused before it expires.
    """

    def __init__(
        self,
        *,
        issuer: str,
        keys: KeySource,
        audience: str | Sequence[str] | None = None,
        introspector: Introspector | None = None,
        introspect_jwts: bool = False,
        algorithms: frozenset[str] = ASYMMETRIC_ALGORITHMS,
        leeway: float = 30.0,
        clock: Clock = time.time,
        verified_cache_ttl: float = 60.0,
        verified_cache_size: int = 10_000,
    ) -> None:
        unsafe = algorithms - ASYMMETRIC_ALGORITHMS
        if unsafe:
            raise ValueError(f"algorithms not allowed for public-key verification: {sorted(unsafe)}")
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self._keys = keys
        self._introspector = introspector
        self._introspect_jwts = introspect_jwts and introspector is not None
        self._algorithms = algorithms
        self._leeway = leeway
        self._clock = clock
        # Signature checks dominate the cost of a request through the gateway; a JWT that verified once is
        # good until its exp (plus leeway, as jwt.decode has it). Capped at verified_cache_ttl so that a
        # retired signing key stops being honoured soon after. Introspection, when on, still runs per request
        # (through its own TTL cache), so a revoked token is refused as before.
        self._verified = _VerifiedJwts(verified_cache_ttl, verified_cache_size)

    @classmethod
    def from_issuer(
        cls,
        issuer: str,
        *,
        audience: str | Sequence[str] | None = None,
        introspection_client: ClientCredentials | None = None,
        introspect_jwts: bool = False,
        http: httpx.AsyncClient | None = None,
        jwks_ttl: float = 300.0,
        jwks_min_refresh_interval: float = 10.0,
        introspection_cache_ttl: float = 10.0,
        leeway: float = 30.0,
    ) -> TokenVerifier:
        """A verifier for a remote OIDC provider, configured by its issuer URL alone (plus an optional client).

        Nothing is fetched here: the discovery document and the JWKS are fetched on first use, so a service may
        start before its identity provider.
        """
        client = http or httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        discovery = OidcDiscovery(issuer, client)
        keys = RemoteJwks(discovery, ttl=jwks_ttl, min_refresh_interval=jwks_min_refresh_interval)
        introspector = (
            RemoteIntrospector(introspection_client, discovery, cache_ttl=introspection_cache_ttl)
            if introspection_client
            else None
        )
        return cls(
            issuer=issuer,
            keys=keys,
            audience=audience,
            introspector=introspector,
            introspect_jwts=introspect_jwts,
            leeway=leeway,
        )

    async def verify(self, token: str) -> Principal:
        """Verify ``token``; raise :class:`InvalidToken` (401) or :class:`IdentityProviderUnavailable` (503)."""
        if not token:
            raise InvalidToken("missing bearer token")
        if token.count(".") == 2:
            now = self._clock()
            digest = hashlib.sha256(token.encode()).digest()
            principal = self._verified.get(digest, now)
            if principal is None:
                claims = await self._verify_jwt(token)
                principal = principal_from_claims(claims)
                exp = claims.get("exp")
                if isinstance(exp, int | float):
                    self._verified.put(digest, principal, min(float(exp) + self._leeway, now + self._verified.ttl))
            if self._introspect_jwts:
                await self._require_active(token)
            return principal
        elif self._introspector is not None:
            claims = dict(await self._require_active(token))
            self._check_claims(claims)
        else:
            raise InvalidToken("token is not a signed JWT")
        return principal_from_claims(claims)

    async def _verify_jwt(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise InvalidToken("malformed token") from exc
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            raise InvalidToken("token algorithm not allowed", details={"alg": algorithm})
        kid = header.get("kid")
        key = await self._keys.key(kid if isinstance(kid, str) else None, algorithm)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("token not meant for this audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("token from another issuer") from exc
        except jwt.InvalidSignatureError as exc:
            raise InvalidToken("bad token signature") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from exc
        return claims

    async def _require_active(self, token: str) -> Mapping[str, Any]:
        assert self._introspector is not None
        result = await self._introspector.introspect(token)
        if result.get("active") is not True:
            raise InvalidToken("token is not active")
        return result

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        """Checks for introspected (opaque) tokens, whose claims were not in a signed JWT we verified."""
        now = self._clock()
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp + self._leeway < now:
            raise InvalidToken("token expired")
        iss = claims.get("iss")
        if iss is not None and str(iss).rstrip("/") != self.issuer:
            raise InvalidToken("token from another issuer")
        if self.audience is not None and "aud" in claims:
            wanted = {self.audience} if isinstance(self.audience, str) else set(self.audience)
            aud = claims["aud"]
            have = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
            if not wanted & have:
                raise InvalidToken("token not meant for this audience")
