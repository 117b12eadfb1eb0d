"""Which network addresses a host named in a request may reach: the guard against SSRF and DNS rebinding.

A host an admin allowed (a webhook's, a petition's git server) may still resolve to a loopback, private, link-local
(the cloud metadata service) or otherwise non-global address. :meth:`AddressAllowlist.refusal` refuses every such
address unless the admin listed it, or a network holding it, in the setting that governs the caller; the caller
then connects to the very address it checked, never resolving the name a second time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def ip_address(text: str) -> Address | None:
    """The IP address ``text`` writes, IPv4-mapped IPv6 as the IPv4 address it maps; None for a host name."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class AddressAllowlist:
    """An admin's setting (``setting``, named in refusals): host names requests may name, and the addresses and
    networks (``127.0.0.1``, ``10.0.0.0/8``, ``::1``) they may reach although these are not global."""

    setting: str
    hosts: frozenset[str]
    networks: tuple[Network, ...]

    @classmethod
    def of(cls, setting: str, entries: Collection[str]) -> AddressAllowlist:
        """The allowlist of the admin's entries (lower-case host names, addresses or networks)."""
        networks = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                continue  # a host name
        return cls(setting, frozenset(entries), tuple(networks))

    def allows_host(self, host: str) -> bool:
        """Whether a request may name ``host``: a name listed, or an address in a listed network."""
        address = ip_address(host)
        return host in self.hosts or (address is not None and self._listed(address))

    def refusal(self, address_text: str) -> str | None:
        """Why a request may not connect to ``address_text`` (an address its host resolved to), or None: an address
        that is not global (loopback, private, link-local such as the cloud metadata service, multicast, reserved)
        is reached only when the admin listed it or its network."""
        address = ip_address(address_text)
        if address is None:
            return f"{address_text} is not an IP address"
        if self._listed(address) or (address.is_global and not address.is_multicast):
            return None
        return f"{address} is not a global address and {self.setting} does not list it"

    def _listed(self, address: Address) -> bool:
        return any(address in network for network in self.networks)
