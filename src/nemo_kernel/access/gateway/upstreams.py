"""Where each service's requests go: its fixed URL, or round-robin over the running replicas of a workload."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from yarl import URL

from nemo_kernel.access.gateway.config import GatewayConfig, ServiceConfig
from nemo_kernel.access.gateway.context import Refusal


class UpstreamTargets:
    """Base URLs per service. ``replicas`` maps ``namespace/name`` to the URLs of a workload's running replicas."""

    def __init__(self, config: GatewayConfig, replicas: Mapping[str, Sequence[str]] | None = None) -> None:
        replicas = replicas or {}
        self._targets: dict[str, tuple[str, ...]] = {}
        for service in config.services:
            if service.url is not None:
                self._targets[service.name] = (_encoded(service.url),)
            else:
                assert service.workload is not None  # the config allows exactly one of url and workload
                urls = sorted(_encoded(u.rstrip("/") + service.path) for u in replicas.get(service.workload, ()))
                self._targets[service.name] = tuple(urls)
        self._next: dict[str, int] = dict.fromkeys(self._targets, 0)

    def pick(self, service: ServiceConfig) -> str:
        """The base URL for the next request to ``service``; 503 when a workload has no running replica."""
        targets = self._targets.get(service.name, ())
        if len(targets) == 1:
            return targets[0]
        if not targets:
            raise Refusal(503, "no_upstream", f"service {service.name!r} has no running replica")
        index = self._next[service.name]
        self._next[service.name] = (index + 1) % len(targets)
        return targets[index]


def _encoded(url: str) -> str:
    # The proxy appends the request path to this text and sends it as already encoded: the host must be in its
    # ASCII form (IDNA) and the path percent-encoded. Without a trailing slash, so that "/x" appends cleanly.
    return str(URL(url)).rstrip("/")
