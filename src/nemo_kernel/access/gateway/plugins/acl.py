"""``acl``: allow or deny by role; 401 without an identity, 403 with the wrong one."""

from __future__ import annotations

from nemo_kernel.access.gateway.config import AclSettings
from nemo_kernel.access.gateway.context import Refusal, RequestContext
from nemo_kernel.access.gateway.plugins.base import GatewayPlugin
from nemo_kernel.access.policy import effective_roles


class RoleAcl(GatewayPlugin):
    """Role-based allow/deny; NEMO's role implications apply (an admin passes an operator-only ACL)."""

    name = "acl"
    priority = 950

    def __init__(self, settings: AclSettings) -> None:
        self._allow = frozenset(settings.allow)
        self._deny = frozenset(settings.deny)
        self._client = settings.client

    async def access(self, ctx: RequestContext) -> None:
        """Deny first, then allow."""
        if ctx.principal is None:
            raise Refusal(
                401,
                "invalid_token",
                "authentication required",
                headers={"WWW-Authenticate": 'Bearer realm="nemo"'},
            )
        roles = effective_roles(ctx.principal.roles(self._client))
        if roles & self._deny:
            raise Refusal(403, "forbidden", "role denied", details={"denied": sorted(roles & self._deny)})
        if self._allow and not roles & self._allow:
            raise Refusal(403, "forbidden", "missing role", details={"required_any": sorted(self._allow)})
