"""Prometheus metrics and the structured access log of the gateway."""

from __future__ import annotations

import json
import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from nemo_kernel.metrics import names

# Finer between 100 and 500 ms, where latency SLOs put their thresholds: a p99 estimated from buckets moves in
# steps as wide as the buckets, and a step from 100 to 250 ms left breach prediction no trend to follow.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1, 2.5, 5, 10)
_TOTAL = "_total"

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
            buckets=_BUCKETS,
            registry=self.registry,
        )
        # The same, per workload a route's service points at: the stable series of metrics.names that SLOs, the
        # dashboards and `nemo top` read (the control plane's collector scrapes them from the status /metrics).
        self.workload_requests = Counter(
            names.WORKLOAD_REQUESTS.name.removesuffix(_TOTAL),
            names.WORKLOAD_REQUESTS.help,
            ["namespace", "workload", "route", "code"],
            registry=self.registry,
        )
        self.workload_errors = Counter(
            names.WORKLOAD_ERRORS.name.removesuffix(_TOTAL),
            names.WORKLOAD_ERRORS.help,
            ["namespace", "workload", "route", "code", "decided_by"],
            registry=self.registry,
        )
        self.workload_latency = Histogram(
            names.WORKLOAD_LATENCY.name,
            names.WORKLOAD_LATENCY.help,
            ["namespace", "workload", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._per_workload: dict[tuple[str, str, int, str], tuple[Counter, Counter | None, Histogram]] = {}
        # labels() hashes and locks on every call; the children for a route and outcome are reused instead.
        self._counted: dict[tuple[str, int, str], Counter] = {}
        self._timed: dict[str, Histogram] = {}
        self.upstream_errors = Counter(
            "nemo_gateway_upstream_errors", "Upstream failures, by kind", ["route", "kind"], registry=self.registry
        )

    def observe(self, route: str, status: int, decided_by: str, seconds: float, workload: str | None = None) -> None:
        """Count one request and record how long it took; also per workload when the route leads to one
        (``workload`` is ``namespace/name``)."""
        if workload is not None:
            self._observe_workload(workload, route, status, decided_by, seconds)
        counted = self._counted.get((route, status, decided_by))
        if counted is None:
            counted = self._counted[(route, status, decided_by)] = self.requests.labels(route, str(status), decided_by)
        counted.inc()
        timed = self._timed.get(route)
        if timed is None:
            timed = self._timed[route] = self.latency.labels(route)
        timed.observe(seconds)

    def _observe_workload(self, workload: str, route: str, status: int, decided_by: str, seconds: float) -> None:
        key = (workload, route, status, decided_by)
        children = self._per_workload.get(key)
        if children is None:
            namespace, _, name = workload.partition("/")
            code = str(status)
            # an error is the workload's 5xx, or a refusal (a plugin's, or the proxy's when no replica answered)
            blame = decided_by or ("workload" if status >= 500 else "")
            errors = self.workload_errors.labels(namespace, name, route, code, blame) if blame else None
            children = self._per_workload[key] = (
                self.workload_requests.labels(namespace, name, route, code),
                errors,
                self.workload_latency.labels(namespace, name, route),
            )
        requests, errors, latency = children
        requests.inc()
        if errors is not None:
            errors.inc()
        latency.observe(seconds)


def log_access(record: dict[str, Any]) -> None:
    """One JSON line per request: who, what, the decision, which plugin decided and why."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(json.dumps(record, separators=(",", ":"), default=str))
