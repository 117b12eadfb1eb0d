"""Prometheus metrics and the structured access log of the gateway."""

from __future__ import annotations

import json
import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

access_log = logging.getLogger("nemo.gateway.access")


class GatewayMetrics:
    """The gateway's metrics, in a registry of its own (several gateways may share a process in tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "nemo_gateway_requests",
            "Requests handled, by route, status and the plugin that refused (empty if proxied)",
            ["route", "status", "decided_by"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nemo_gateway_request_duration_seconds",
            "Time from request received to response headers sent",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        # labels() hashes and locks on every call; the children for a route and outcome are reused instead.
        self._counted: dict[tuple[str, int, str], Counter] = {}
        self._timed: dict[str, Histogram] = {}
        self.upstream_errors = Counter(
            "nemo_gateway_upstream_errors", "Upstream failures, by kind", ["route", "kind"], registry=self.registry
        )

    def observe(self, route: str, status: int, decided_by: str, seconds: float) -> None:
        """Count one request and record how long it took."""
        counted = self._counted.get((route, status, decided_by))
        if counted is None:
            counted = self._counted[(route, status, decided_by)] = self.requests.labels(route, str(status), decided_by)
        counted.inc()
        timed = self._timed.get(route)
        if timed is None:
            timed = self._timed[route] = self.latency.labels(route)
        timed.observe(seconds)


def log_access(record: dict[str, Any]) -> None:
    """One JSON line per request: who, what, the decision, which plugin decided and why."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(json.dumps(record, separators=(",", ":"), default=str))
