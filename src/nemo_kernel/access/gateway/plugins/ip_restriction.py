"""``ip-restriction``: allow and deny lists of IPv4/IPv6 addresses and CIDRs, deny first."""

from __future__ import annotations

from nemo_kernel.access.gateway.config import IpRestrictionSettings
from nemo_kernel.access.gateway.context import Refusal, RequestContext, in_networks
from nemo_kernel.access.gateway.plugins.base import GatewayPlugin


class IpRestriction(GatewayPlugin):
    """Refuse (403) a client address that is denied, or not allowed when an allow list exists."""

    name = "ip-restriction"
    priority = 3000

    def __init__(self, settings: IpRestrictionSettings) -> None:
        self._settings = settings
        self._allow, self._deny = settings.networks()

    async def access(self, ctx: RequestContext) -> None:
        """Deny wins over allow; an unknown address is refused whenever any list is set."""
        address = ctx.client_ip
        if address is None:
            raise Refusal(self._settings.status, "ip_forbidden", "cannot determine client address")
        if in_networks(address, self._deny) or (self._allow and not in_networks(address, self._allow)):
            raise Refusal(self._settings.status, "ip_forbidden", self._settings.message, details={"ip": str(address)})
