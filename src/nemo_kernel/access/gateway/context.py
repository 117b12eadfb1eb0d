"""Per-request state shared by the gateway core and its plugins, and the refusal plugins raise."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from aiohttp import web

from nemo_kernel.access.errors import error_body
from nemo_kernel.access.gateway.config import ConsumerConfig, Network, RouteConfig, ServiceConfig
from nemo_kernel.access.tokens import Principal

IPAddress = IPv4Address | IPv6Address


@dataclass(slots=True)
class RequestContext:
    """What the gateway knows about one request as it passes through the plugin chain.

    ``path`` is the request's path in normal form (:func:`~nemo_kernel.access.gateway.paths.normalise_path`): the
    one the route was chosen on. Plugins use it, never ``request.path``, which is decoded but not normalised.
    """

    request: web.Request
    request_id: str
    client_ip: IPAddress | None
    route: RouteConfig
    service: ServiceConfig
    path: str
    now: float
    principal: Principal | None = None
    consumer: ConsumerConfig | None = None
    upstream_headers: dict[str, str] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)


class Refusal(Exception):
    """A plugin's decision to answer the request itself (401, 403, 429, 503 ...) instead of proxying it."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.details = dict(details or {})
        self.plugin: str | None = None  # set by the chain runner: which plugin decided

    def body(self) -> dict[str, Any]:
        """The project's error body."""
        return error_body(self.code, self.message, self.details)


def client_ip(request: web.Request, trusted: list[Network]) -> IPAddress | None:
    """The client's address: the socket peer, or, when the peer is a trusted proxy, the right-most address of
    ``X-Forwarded-For`` that is not itself a trusted proxy (everything left of it could be forged)."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return None
    try:
        address: IPAddress = ip_address(peer[0])
    except ValueError:
        return None
    if not trusted or not _in(address, trusted):
        return address
    forwarded = [part.strip() for h in request.headers.getall("X-Forwarded-For", []) for part in h.split(",")]
    for hop in reversed(forwarded):
        try:
            hop_address = ip_address(hop)
        except ValueError:
            return address  # a garbled chain: trust only what we saw ourselves
        if not _in(hop_address, trusted):
            return hop_address
        address = hop_address
    return address


def _in(address: IPAddress, networks: list[Network]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def in_networks(address: IPAddress, networks: list[Network]) -> bool:
    """Whether ``address`` is in any of ``networks`` (IPv4-mapped IPv6 addresses count as IPv4)."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return _in(address.ipv4_mapped, networks) or _in(address, networks)
    return _in(address, networks)
