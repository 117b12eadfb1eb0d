"""Route matching (hosts, methods, longest path prefix) and plugin resolution by specificity, as in Kong."""

from __future__ import annotations

from dataclasses import dataclass

from nemo_kernel.access.gateway.config import ConsumerConfig, GatewayConfig, PluginSpec, RouteConfig, ServiceConfig
from nemo_kernel.access.gateway.counters import CounterStores
from nemo_kernel.access.gateway.plugins import GatewayPlugin, build_plugin


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """A matched route, its service, and the path to request upstream."""

    route: RouteConfig
    service: ServiceConfig
    upstream_path: str


def _prefix_matches(prefix: str, path: str) -> bool:
    # Segment-aware: "/api" matches "/api" and "/api/x" but not "/apix".
    if prefix == "/" or path == prefix:
        return True
    base = prefix.rstrip("/")
    return path.startswith(base + "/")


class RouteTable:
    """Routes ordered so that the longest matching path prefix wins; hosts and methods must match if given."""

    def __init__(self, config: GatewayConfig) -> None:
        services = {s.name: s for s in config.services}
        entries = [(prefix, route, services[route.service]) for route in config.routes for prefix in route.paths]
        self._entries = sorted(entries, key=lambda e: (len(e[0]), e[1].hosts is not None), reverse=True)

    def match(self, method: str, host: str, path: str) -> RouteMatch | None:
        """The route for a request, or ``None`` (the gateway answers 404)."""
        hostname = (host.rsplit(":", 1)[0] if host and not host.endswith("]") else host).lower()  # as routes keep it
        for prefix, route, service in self._entries:
            if route.methods is not None and method not in route.methods:
                continue
            if route.hosts is not None and hostname not in route.hosts:
                continue
            if not _prefix_matches(prefix, path):
                continue
            rest = path[len(prefix.rstrip("/")) :] if route.strip_path else path
            return RouteMatch(route, service, rest if rest.startswith("/") else "/" + rest)
        return None


#: Kong's precedence of a plugin configured at several levels: the most specific scope wins.
#: Key: (has consumer, has route, has service).
_RANK = {
    (True, True, True): 8,
    (True, True, False): 7,
    (True, False, True): 6,
    (False, True, True): 5,
    (True, False, False): 4,
    (False, True, False): 3,
    (False, False, True): 2,
    (False, False, False): 1,
}


class PluginResolver:
    """Builds plugin instances once and answers, per (route, consumer), the chain in priority order."""

    def __init__(self, config: GatewayConfig, stores: CounterStores) -> None:
        self._entries: list[tuple[PluginSpec, GatewayPlugin]] = [
            (entry, build_plugin(entry, config.consumers, stores)) for entry in config.plugins if entry.enabled
        ]
        self._chains: dict[tuple[str, str | None], list[GatewayPlugin]] = {}

    @property
    def plugins(self) -> list[GatewayPlugin]:
        """Every plugin instance."""
        return [plugin for _, plugin in self._entries]

    def chain(self, route: RouteConfig, consumer: ConsumerConfig | None) -> list[GatewayPlugin]:
        """For each plugin name, its most specific applicable instance; ordered by descending priority."""
        key = (route.name, consumer.username if consumer else None)
        cached = self._chains.get(key)
        if cached is not None:
            return cached
        best: dict[str, tuple[int, GatewayPlugin]] = {}
        for entry, plugin in self._entries:
            if entry.route is not None and entry.route != route.name:
                continue
            if entry.service is not None and entry.service != route.service:
                continue
            if entry.consumer is not None and (consumer is None or entry.consumer != consumer.username):
                continue
            rank = _RANK[(entry.consumer is not None, entry.route is not None, entry.service is not None)]
            if entry.name not in best or rank > best[entry.name][0]:
                best[entry.name] = (rank, plugin)
        chain = sorted((plugin for _, plugin in best.values()), key=lambda p: p.priority, reverse=True)
        self._chains[key] = chain
        return chain
