"""The one place where every ``/api/v1`` call is checked for access.

Every router under ``/api/v1`` is mounted with :func:`authorize`: a bearer token (OIDC access token) verified by
the app's :class:`ApiAccess`, then the role the method and path need (``nemo_kernel.access.policy``). The tokens
come from the built-in issuer served by the API itself at ``/realms/{realm}`` (verified in-process: keys from the
realm's key ring, and every token introspected in-process, so a revoked token or a disabled, removed account is
refused on its next call), or from an external issuer (``NEMO_OIDC_ISSUER``, e.g. Keycloak) whose JWKS is fetched
and cached, with introspection when a client is configured.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nemo_kernel.access import ClientCredentials, Principal, TokenVerifier
from nemo_kernel.access.fastapi import bearer_auth
from nemo_kernel.access.issuer import Realm, sql_realm
from nemo_kernel.config import Settings
from nemo_kernel.store import Database

# Declares the scheme in the OpenAPI document (so /docs can send a token); the check itself is bearer_auth's.
_scheme = HTTPBearer(auto_error=False, description="OIDC access token (`nemo token`)")


class ApiAccess:
    """How the API checks its callers: the token verifier, and the built-in realm when the API hosts one."""

    def __init__(self, verifier: TokenVerifier, audience: str, realm: Realm | None = None) -> None:
        self.verifier = verifier
        self.audience = audience
        self.realm = realm
        self._check = bearer_auth(verifier)

    @property
    def issuer(self) -> str:
        """The issuer whose tokens the API accepts."""
        return self.verifier.issuer

    @classmethod
    def from_settings(cls, settings: Settings, db: Database, api_url: str) -> ApiAccess:
        """The built-in realm at ``{public_url or api_url}/realms/{realm}`` on ``db``, or the external issuer."""
        if settings.oidc_issuer:
            secret = settings.oidc_client_secret
            introspection = (
                ClientCredentials(settings.oidc_client_id, secret.get_secret_value())
                if settings.oidc_client_id and secret is not None
                else None
            )
            verifier = TokenVerifier.from_issuer(
                settings.oidc_issuer,
                audience=settings.oidc_audience,
                introspection_client=introspection,
                introspect_jwts=settings.oidc_introspect_jwts,
                introspection_cache_ttl=settings.oidc_introspection_cache_ttl,
            )
            return cls(verifier, settings.oidc_audience)
        # The issuer is in every token and clients fetch keys from it: it must be the address they use, which
        # differs from the bind address behind a name, a proxy or a 0.0.0.0 bind.
        issuer = f"{(settings.public_url or api_url).rstrip('/')}/realms/{settings.realm}"
        realm = sql_realm(
            db, settings.realm, issuer_url=issuer, audience=settings.oidc_audience, access_token_ttl=settings.token_ttl
        )
        return cls(realm.local_verifier(), settings.oidc_audience, realm)

    def configuration(self) -> dict[str, str | None]:
        """What ``/.well-known/nemo-configuration`` tells clients: where to get tokens, and for which audience."""
        return {"issuer": self.issuer, "audience": self.audience, "realm": self.realm.name if self.realm else None}

    async def check(self, request: Request) -> Principal:
        """Verify the request's bearer token and role; raises the 401/403/503 refusal otherwise."""
        return await self._check(request)


async def authorize(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(_scheme)] = None
) -> Principal:
    """Check the caller may make this request; the principal is also left on ``request.state.principal``."""
    access: ApiAccess = request.app.state.access
    return await access.check(request)
