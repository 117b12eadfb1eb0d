"""Gateway plugins and the factory that builds them from configuration entries."""

from __future__ import annotations

from nemo_kernel.access.gateway.config import (
    AclPlugin,
    ConsumerConfig,
    IpRestrictionPlugin,
    OidcPlugin,
    PluginSpec,
    RateLimitingPlugin,
    UsageControlPlugin,
)
from nemo_kernel.access.gateway.counters import CounterStores
from nemo_kernel.access.gateway.plugins.acl import RoleAcl
from nemo_kernel.access.gateway.plugins.base import GatewayPlugin
from nemo_kernel.access.gateway.plugins.ip_restriction import IpRestriction
from nemo_kernel.access.gateway.plugins.oidc import OidcAuthentication
from nemo_kernel.access.gateway.plugins.rate_limiting import RateLimiting
from nemo_kernel.access.gateway.plugins.usage_control import UsageControl

__all__ = [
    "GatewayPlugin",
    "IpRestriction",
    "OidcAuthentication",
    "RateLimiting",
    "RoleAcl",
    "UsageControl",
    "build_plugin",
]


def scope_of(entry: PluginSpec) -> str:
    """A stable id of where an entry applies, used to name its counters (equal on every gateway instance)."""
    return f"{entry.name}|s={entry.service or ''}|r={entry.route or ''}|c={entry.consumer or ''}"


def build_plugin(entry: PluginSpec, consumers: list[ConsumerConfig], stores: CounterStores) -> GatewayPlugin:
    """The plugin instance for one configuration entry."""
    if isinstance(entry, IpRestrictionPlugin):
        return IpRestriction(entry.config)
    if isinstance(entry, OidcPlugin):
        return OidcAuthentication(entry.config, consumers)
    if isinstance(entry, AclPlugin):
        return RoleAcl(entry.config)
    if isinstance(entry, RateLimitingPlugin):
        return RateLimiting(entry.config, stores, scope_of(entry))
    if isinstance(entry, UsageControlPlugin):
        return UsageControl(entry.config, stores, scope_of(entry))
    raise TypeError(f"unknown plugin entry {entry!r}")
