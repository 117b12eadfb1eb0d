"""``oidc``: bearer token validation with :class:`TokenVerifier`; identity headers for the upstream."""

from __future__ import annotations

import base64
import json

from nemo_kernel.access.errors import AccessDenied
from nemo_kernel.access.gateway.config import ConsumerConfig, OidcSettings
from nemo_kernel.access.gateway.context import Refusal, RequestContext
from nemo_kernel.access.gateway.plugins.base import GatewayPlugin
from nemo_kernel.access.tokens import Principal, bearer_token
from nemo_kernel.access.verifier import ClientCredentials, TokenVerifier

#: Claims passed upstream in ``X-Userinfo`` (base64 JSON), as Kong's OIDC plugins do.
_USERINFO_CLAIMS = ("sub", "preferred_username", "azp", "email")
#: Principals whose consumer and headers are remembered (the verifier's cache bounds how many are live).
_IDENTITY_CACHE_SIZE = 10_000


class OidcAuthentication(GatewayPlugin):
    """Verify the bearer token, map it to a consumer, and tell the upstream who is calling."""

    name = "oidc"
    priority = 1050

    def __init__(
        self, settings: OidcSettings, consumers: list[ConsumerConfig], verifier: TokenVerifier | None = None
    ) -> None:
        introspection = settings.introspection
        self._verifier = verifier or TokenVerifier.from_issuer(
            settings.issuer,
            audience=settings.audience,
            introspection_client=(
                ClientCredentials(introspection.client_id, introspection.client_secret) if introspection else None
            ),
            introspect_jwts=settings.introspects_jwts(),
            introspection_cache_ttl=introspection.cache_ttl if introspection else 0.0,
            leeway=settings.leeway,
        )
        self._identities: dict[int, tuple[Principal, ConsumerConfig | None, dict[str, str]]] = {}
        self._consumers: dict[str, ConsumerConfig] = {}
        for consumer in consumers:
            for key in (consumer.username, *consumer.subjects):
                self._consumers.setdefault(key, consumer)

    async def access(self, ctx: RequestContext) -> None:
        """401 (with an RFC 6750 challenge) unless the token verifies; 503 if the issuer cannot be reached."""
        try:
            principal = await self._verifier.verify(bearer_token(ctx.request.headers.get("Authorization")))
        except AccessDenied as denied:
            raise Refusal(denied.status, denied.code, denied.message, headers=denied.headers()) from None
        ctx.principal = principal
        # The verifier hands out the same Principal object for a token while it caches it, so the consumer and
        # the identity headers are worked out once per token rather than once per request.
        known = self._identities.get(id(principal))
        if known is None or known[0] is not principal:
            known = (principal, self._consumer_for(principal), self._identity_headers(principal))
            if len(self._identities) >= _IDENTITY_CACHE_SIZE:
                self._identities.clear()
            self._identities[id(principal)] = known
        ctx.consumer = known[1]
        ctx.upstream_headers.update(known[2])

    def _identity_headers(self, principal: Principal) -> dict[str, str]:
        headers = {"X-Authenticated-Subject": principal.subject}
        if principal.client_id:
            headers["X-Authenticated-Client"] = principal.client_id
        headers["X-Authenticated-Roles"] = ",".join(sorted(principal.realm_roles))
        consumer = self._consumer_for(principal)
        if consumer is not None:
            headers["X-Consumer-Username"] = consumer.username
        userinfo = {k: principal.claims[k] for k in _USERINFO_CLAIMS if k in principal.claims}
        headers["X-Userinfo"] = base64.b64encode(json.dumps(userinfo, separators=(",", ":")).encode()).decode()
        return headers

    def _consumer_for(self, principal: Principal) -> ConsumerConfig | None:
        for key in (principal.client_id, principal.username, principal.subject):
            if key and key in self._consumers:
                return self._consumers[key]
        return None
