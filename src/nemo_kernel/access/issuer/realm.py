"""A realm of the built-in issuer: authenticates clients and users, issues, introspects and revokes tokens.

Tokens are RS256/ES256 JWTs shaped like Keycloak's (``realm_access``, ``resource_access``, ``azp``, ``jti``),
so anything that accepts Keycloak tokens accepts these, and NEMO accepts Keycloak's by configuration alone.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import jwt

from nemo_kernel.access.errors import AccessDenied
from nemo_kernel.access.issuer.hashing import SecretHasher
from nemo_kernel.access.issuer.identities import (
    Client,
    ClientRepository,
    RevocationList,
    User,
    UserRepository,
)
from nemo_kernel.access.issuer.keys import KeyRing
from nemo_kernel.access.verifier import TokenVerifier

ACCESS = "Bearer"
REFRESH = "Refresh"
#: Seconds an access token is valid unless the realm is told otherwise (``nemo up``: ``NEMO_TOKEN_TTL``).
DEFAULT_ACCESS_TOKEN_TTL = 300


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error: ``{"error": code, "error_description": ...}``."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _roles_claims(realm_roles: frozenset[str], client_roles: Mapping[str, frozenset[str]]) -> dict[str, Any]:
    claims: dict[str, Any] = {"realm_access": {"roles": sorted(realm_roles)}}
    resource = {c: {"roles": sorted(r)} for c, r in client_roles.items() if r}
    if resource:
        claims["resource_access"] = resource
    return claims


class Realm:
    """One issuer realm (``/realms/<name>``) over its repositories and key ring."""

    def __init__(
        self,
        name: str,
        *,
        users: UserRepository,
        clients: ClientRepository,
        keys: KeyRing,
        revocations: RevocationList,
        hasher: SecretHasher | None = None,
        audience: str = "nemo-api",
        issuer_url: str | None = None,
        access_token_ttl: int = DEFAULT_ACCESS_TOKEN_TTL,
        refresh_token_ttl: int = 1800,
    ) -> None:
        self.name = name
        self.users = users
        self.clients = clients
        self.keys = keys
        self.revocations = revocations
        self.hasher = hasher or SecretHasher()
        self.audience = audience
        self.issuer_url = issuer_url.rstrip("/") if issuer_url else None
        self.access_token_ttl = access_token_ttl
        self.refresh_token_ttl = refresh_token_ttl

    def issuer(self, base_url: str) -> str:
        """The issuer URL: the configured one, else derived from how the request reached us (as Keycloak does)."""
        return self.issuer_url or f"{base_url.rstrip('/')}/realms/{self.name}"

    def local_verifier(self, *, audience: str | None = None) -> TokenVerifier:
        """A :class:`TokenVerifier` for this realm in the same process: keys from the ring, revocation and
        disabled accounts checked on every call through :meth:`introspect` (no HTTP, no cache)."""
        if self.issuer_url is None:
            raise ValueError("a local verifier needs the realm's issuer_url")
        return TokenVerifier(
            issuer=self.issuer_url,
            keys=self.keys,
            audience=audience or self.audience,
            introspector=self,
            introspect_jwts=True,
        )

    # --- client and user authentication -------------------------------------------------------------------

    async def authenticate_client(self, client_id: str, secret: str | None) -> Client:
        """The enabled confidential client with this secret; ``invalid_client`` (401) otherwise."""
        client = await self.clients.get_client(client_id)
        # Verify against a hash even for unknown clients would equalise timing; the argon2 cost dominates
        # either way, and client ids are not secret, so we keep the simple path.
        if (
            client is None
            or not client.enabled
            or secret is None
            or not await self.hasher.verify(client.secret_hash, secret)
        ):
            raise OAuthError("invalid_client", "client authentication failed", status=401)
        return client

    async def _authenticate_user(self, username: str, password: str) -> User:
        user = await self.users.get_user(username)
        if user is None or not user.enabled or not await self.hasher.verify(user.password_hash, password):
            raise OAuthError("invalid_grant", "invalid user credentials")
        return user

    # --- grants ---------------------------------------------------------------------------------------------

    async def client_credentials(self, client: Client, issuer: str, scope: str | None = None) -> dict[str, Any]:
        """Tokens for the client's service account (no refresh token, as in Keycloak)."""
        self._require_grant(client, "client_credentials")
        claims = {
            "sub": client.id,
            "preferred_username": f"service-account-{client.client_id}",
            "client_id": client.client_id,
            **_roles_claims(client.realm_roles, client.client_roles),
        }
        access, _ = await self._sign(issuer, client.client_id, ACCESS, self.access_token_ttl, claims, scope)
        return self._response(access, None, scope)

    async def password(
        self, client: Client, issuer: str, username: str, password: str, scope: str | None = None
    ) -> dict[str, Any]:
        """Resource owner password grant: access and refresh tokens for a user."""
        self._require_grant(client, "password")
        user = await self._authenticate_user(username, password)
        return await self._user_tokens(client, issuer, user, scope)

    async def refresh(self, client: Client, issuer: str, refresh_token: str) -> dict[str, Any]:
        """Refresh grant with rotation: the presented refresh token is revoked and a new pair issued."""
        self._require_grant(client, "refresh_token")
        claims = await self._decode(refresh_token)
        if claims is None or claims.get("typ") != REFRESH:
            raise OAuthError("invalid_grant", "invalid refresh token")
        if claims.get("azp") != client.client_id:
            raise OAuthError("invalid_grant", "refresh token issued to another client")
        user = await self.users.get_user(str(claims.get("preferred_username", "")))
        if user is None or not user.enabled or user.id != claims.get("sub"):
            raise OAuthError("invalid_grant", "user no longer active")
        await self.revocations.revoke(str(claims["jti"]), float(claims["exp"]))
        scope = claims.get("scope")
        return await self._user_tokens(client, issuer, user, scope if isinstance(scope, str) else None)

    async def _user_tokens(self, client: Client, issuer: str, user: User, scope: str | None) -> dict[str, Any]:
        claims = {
            "sub": user.id,
            "preferred_username": user.username,
            **_roles_claims(user.realm_roles, user.client_roles),
        }
        if user.email:
            claims["email"] = user.email
        access, _ = await self._sign(issuer, client.client_id, ACCESS, self.access_token_ttl, claims, scope)
        refresh_claims = {"sub": user.id, "preferred_username": user.username}
        refresh, _ = await self._sign(issuer, client.client_id, REFRESH, self.refresh_token_ttl, refresh_claims, scope)
        return self._response(access, refresh, scope)

    @staticmethod
    def _require_grant(client: Client, grant: str) -> None:
        if grant not in client.grant_types:
            raise OAuthError("unauthorized_client", f"client may not use the {grant} grant")

    async def _sign(
        self, issuer: str, client_id: str, typ: str, ttl: int, extra: Mapping[str, Any], scope: str | None
    ) -> tuple[str, dict[str, Any]]:
        key, private = await self.keys.signing_key()
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": [self.audience] if typ == ACCESS else issuer,
            "azp": client_id,
            "iat": now,
            "exp": now + ttl,
            "jti": str(uuid.uuid4()),
            "typ": typ,
            **extra,
        }
        if scope:
            claims["scope"] = scope
        token = jwt.encode(claims, private, algorithm=key.algorithm, headers={"kid": key.kid})  # type: ignore[arg-type]
        return token, claims

    def _response(self, access: str, refresh: str | None, scope: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": access,
            "expires_in": self.access_token_ttl,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": scope or "",
        }
        if refresh is not None:
            body["refresh_token"] = refresh
            body["refresh_expires_in"] = self.refresh_token_ttl
        return body

    # --- introspection and revocation ---------------------------------------------------------------------

    async def _decode(self, token: str) -> dict[str, Any] | None:
        """Claims of a token this realm signed, still valid and not revoked; ``None`` otherwise."""
        try:
            header = jwt.get_unverified_header(token)
            key = await self.keys.key(header.get("kid"), str(header.get("alg")))
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[str(header.get("alg"))],
                options={"verify_aud": False, "require": ["exp", "jti", "iss"]},
            )
        except (jwt.PyJWTError, AccessDenied):
            return None
        if self.issuer_url is not None and claims["iss"] != self.issuer_url:
            return None
        if not str(claims["iss"]).endswith(f"/realms/{self.name}"):
            return None
        if await self.revocations.is_revoked(str(claims["jti"])):
            return None
        return claims

    async def _subject_active(self, claims: Mapping[str, Any]) -> bool:
        """A token dies with its account: disabling or removing the user or client makes it inactive."""
        client = await self.clients.get_client(str(claims.get("azp")))
        if client is None or not client.enabled:
            return False
        if claims.get("sub") == client.id:
            return True
        user = await self.users.get_user(str(claims.get("preferred_username", "")))
        return user is not None and user.enabled and user.id == claims.get("sub")

    async def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: the claims with ``active: true``, or exactly ``{"active": false}``."""
        claims = await self._decode(token)
        if claims is None or not await self._subject_active(claims):
            return {"active": False}
        return {
            **claims,
            "active": True,
            "client_id": claims.get("azp"),
            "username": claims.get("preferred_username"),
            "token_type": claims.get("typ"),
        }

    async def revoke(self, client: Client, token: str) -> None:
        """RFC 7009: revoke a token issued to ``client``; unknown or invalid tokens are ignored (still 200)."""
        claims = await self._decode(token)
        if claims is None:
            return
        if claims.get("azp") != client.client_id:
            raise OAuthError("unauthorized_client", "token was issued to another client")
        await self.revocations.revoke(str(claims["jti"]), float(claims["exp"]))


def role_set(roles: Iterable[str]) -> frozenset[str]:
    """Roles as a frozenset, blanks dropped."""
    return frozenset(r.strip() for r in roles if r.strip())
