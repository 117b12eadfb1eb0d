"""Metrics views: what the analytics engine says about workloads, replicas, nodes and clusters.

Shared by the API (``/metrics/query``, ``/metrics/top/...``, ``/workloads/{name}/metrics``), the CLI (``nemo top``
and ``nemo metrics query``, through the API) and the web pages. Every number comes from one
:class:`~nemo_kernel.metrics.MetricsReader` (the embedded store, or Prometheus when ``NEMO_PROMETHEUS_URL`` is set),
through :class:`~nemo_kernel.metrics.MetricsQuery` questions about NEMO's stable series (``metrics.names``), so the
same view answers the same on both backends. The reader is asked for at each call, because the control plane may
switch it after the views are built.

A reader's :class:`~nemo_kernel.metrics.MetricsUnavailable` (503) and ``ValueError`` (a bad query) go to the caller.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pydantic import Field

from nemo_kernel.domain import Model, ReplicaPhase
from nemo_kernel.metrics import Aggregation, Matcher, MatchOp, MetricsQuery, MetricsReader, QueryResult, Selector
from nemo_kernel.metrics import names as n
from nemo_kernel.orchestrator.views.workloads import WorkloadViews

#: Labels a workload's replica rows are grouped by; the replica id is unique, cluster and node ride along.
_REPLICA_KEY = ("namespace", "workload", "replica", "cluster", "node")
_WORKLOAD_KEY = ("namespace", "workload")
_NODE_KEY = ("cluster", "node")
LATENCY_QUANTILE = 0.99


class ReplicaUsage(Model):
    """What one replica used over the window (``None``: no samples of that series in the window)."""

    replica: str
    cluster: str | None = None
    node: str | None = None
    phase: ReplicaPhase | None = Field(default=None, description="as stored; None for a replica no longer desired")
    cpu_cores: float | None = Field(default=None, description="CPU cores used (rate of CPU seconds)")
    memory_bytes: float | None = Field(default=None, description="resident memory, latest sample")
    power_watts: float | None = Field(default=None, description="its share of its node's power, average")
    energy_joules: float | None = Field(default=None, description="energy used in the window")
    co2_grams: float | None = Field(default=None, description="CO2 of that energy")


class WorkloadUsage(Model):
    """A workload's replicas summed, and its traffic through the gateway, over the window."""

    namespace: str
    workload: str
    replicas: int = Field(description="replicas with samples in the window")
    cpu_cores: float | None = None
    memory_bytes: float | None = None
    power_watts: float | None = None
    energy_joules: float | None = None
    co2_grams: float | None = None
    requests_per_second: float | None = Field(default=None, description="through the gateway")
    error_ratio: float | None = Field(default=None, description="errors / requests; None without requests")
    latency_p99_seconds: float | None = Field(default=None, description="99th percentile through the gateway")


class WorkloadMetrics(WorkloadUsage):
    """``GET /workloads/{name}/metrics``: the workload's summary and each replica's share."""

    window_seconds: float
    source: str = Field(description="the backend that answered: embedded or prometheus")
    replica_usage: list[ReplicaUsage]


class NodeUsage(Model):
    """What a node used over the window, against its capacity."""

    cluster: str
    node: str
    cpu_cores: float | None = None
    cpu_capacity: float | None = None
    cpu_ratio: float | None = Field(default=None, description="cpu_cores / cpu_capacity")
    memory_bytes: float | None = None
    memory_capacity_bytes: float | None = None
    memory_ratio: float | None = None
    power_watts: float | None = None


class ClusterUsage(Model):
    """A cluster's nodes summed, and the round trip of its heartbeat."""

    cluster: str
    nodes: int = Field(description="nodes with samples in the window")
    cpu_cores: float | None = None
    cpu_capacity: float | None = None
    cpu_ratio: float | None = None
    memory_bytes: float | None = None
    memory_capacity_bytes: float | None = None
    memory_ratio: float | None = None
    power_watts: float | None = None
    heartbeat_rtt_seconds: float | None = None


class _Top(Model):
    window_seconds: float
    source: str = Field(description="the backend that answered: embedded or prometheus")


class WorkloadTop(_Top):
    """``nemo top workloads``: one row per workload with samples in the window, busiest CPU first."""

    rows: list[WorkloadUsage]


class NodeTop(_Top):
    """``nemo top nodes``: one row per node with samples in the window, busiest CPU first."""

    rows: list[NodeUsage]


class ClusterTop(_Top):
    """``nemo top clusters``: one row per cluster with samples in the window, busiest CPU first."""

    rows: list[ClusterUsage]


@dataclass(frozen=True, slots=True)
class _Column:
    """One number of a table: the series it comes from, how it is aggregated over the window, and a factor (the
    window, to turn a rate into what was used in the window)."""

    series: n.SeriesName
    aggregation: Aggregation
    per_window: bool = False
    quantile: float | None = None


Values = dict[tuple[str, ...], float]

_REPLICA_COLUMNS = {
    "cpu_cores": _Column(n.REPLICA_CPU, Aggregation.RATE),
    "memory_bytes": _Column(n.REPLICA_MEMORY, Aggregation.LAST),
    "power_watts": _Column(n.REPLICA_POWER, Aggregation.AVG),
    "energy_joules": _Column(n.REPLICA_ENERGY, Aggregation.RATE, per_window=True),
    "co2_grams": _Column(n.REPLICA_CO2, Aggregation.RATE, per_window=True),
}
_TRAFFIC_COLUMNS = {
    "requests": _Column(n.WORKLOAD_REQUESTS, Aggregation.RATE),
    "errors": _Column(n.WORKLOAD_ERRORS, Aggregation.RATE),
    "latency": _Column(n.WORKLOAD_LATENCY, Aggregation.HISTOGRAM_QUANTILE, quantile=LATENCY_QUANTILE),
}
_NODE_COLUMNS = {
    "cpu_cores": _Column(n.NODE_CPU, Aggregation.RATE),
    "cpu_capacity": _Column(n.NODE_CPU_CORES, Aggregation.LAST),
    "memory_bytes": _Column(n.NODE_MEMORY, Aggregation.LAST),
    "memory_capacity_bytes": _Column(n.NODE_MEMORY_CAPACITY, Aggregation.LAST),
    "power_watts": _Column(n.NODE_POWER, Aggregation.AVG),
}


class MetricsViews:
    """Reads of the analytics engine: raw queries, and the summaries ``nemo top`` and the workload page show."""

    def __init__(self, reader: Callable[[], MetricsReader], workloads: WorkloadViews) -> None:
        """``reader`` returns the control plane's current reader; ``workloads`` tells which workloads exist."""
        self._reader = reader
        self._workloads = workloads

    async def query(self, query: MetricsQuery) -> QueryResult:
        """The series answering ``query``, from whichever backend the control plane reads."""
        return await self._reader().query(query)

    async def workload(self, namespace: str, name: str, window: float) -> WorkloadMetrics:
        """A workload's usage and traffic over the last ``window`` seconds, per replica and summed.

        ``NotFound`` for a workload the control plane does not know (one deleted since has no summary here; its
        series stay queryable through :meth:`query`).
        """
        status = await asyncio.to_thread(self._workloads.status, namespace, name)
        scope = (Matcher("namespace", MatchOp.EQ, namespace), Matcher("workload", MatchOp.EQ, name))
        source, replicas, traffic = await self._workload_tables(scope, window)
        desired = {r.id: r for r in status.replicas}
        rows = {key[2]: _replica_usage(key, values) for key, values in replicas.items()}
        for replica_id, replica in desired.items():
            row = rows.setdefault(replica_id, ReplicaUsage(replica=replica_id))
            row.cluster, row.node, row.phase = replica.cluster, replica.node, replica.phase
        usage = _workload_usage((namespace, name), list(replicas.values()), traffic.get((namespace, name)))
        return WorkloadMetrics(
            **usage.model_dump(),
            window_seconds=window,
            source=source,
            replica_usage=sorted(rows.values(), key=lambda r: r.replica),
        )

    async def top_workloads(self, window: float, namespace: str | None = None) -> WorkloadTop:
        """Every workload with samples in the window (of ``namespace`` if given), busiest CPU first."""
        scope = () if namespace is None else (Matcher("namespace", MatchOp.EQ, namespace),)
        source, replicas, traffic = await self._workload_tables(scope, window)
        grouped: dict[tuple[str, ...], list[dict[str, float]]] = defaultdict(list)
        for key, values in replicas.items():
            grouped[key[:2]].append(values)
        rows = [_workload_usage(key, grouped.get(key, []), traffic.get(key)) for key in {*grouped, *traffic}]
        return WorkloadTop(window_seconds=window, source=source, rows=sorted(rows, key=_busiest))

    async def top_nodes(self, window: float, cluster: str | None = None) -> NodeTop:
        """Every node with samples in the window (of ``cluster`` if given), busiest CPU first."""
        scope = () if cluster is None else (Matcher("cluster", MatchOp.EQ, cluster),)
        source, nodes = await self._table(_NODE_COLUMNS, scope, _NODE_KEY, window)
        rows = [_node_usage(key, values) for key, values in nodes.items()]
        return NodeTop(window_seconds=window, source=source, rows=sorted(rows, key=_busiest))

    async def top_clusters(self, window: float) -> ClusterTop:
        """Every cluster with samples in the window: its nodes summed, busiest CPU first."""
        rtt_column = {"rtt": _Column(n.CLUSTER_HEARTBEAT_RTT, Aggregation.LAST)}
        (source, nodes), (_, rtts) = await asyncio.gather(
            self._table(_NODE_COLUMNS, (), _NODE_KEY, window), self._table(rtt_column, (), ("cluster",), window)
        )
        grouped: dict[str, list[dict[str, float]]] = defaultdict(list)
        for key, values in nodes.items():
            grouped[key[0]].append(values)
        rows = []
        for name in {*grouped, *(key[0] for key in rtts)}:
            members = grouped.get(name, [])
            total = {field: _sum(members, field) for field in _NODE_COLUMNS}
            rows.append(
                ClusterUsage(
                    cluster=name,
                    nodes=len(members),
                    **total,
                    cpu_ratio=_ratio(total["cpu_cores"], total["cpu_capacity"]),
                    memory_ratio=_ratio(total["memory_bytes"], total["memory_capacity_bytes"]),
                    heartbeat_rtt_seconds=rtts.get((name,), {}).get("rtt"),
                )
            )
        return ClusterTop(window_seconds=window, source=source, rows=sorted(rows, key=_busiest))

    async def _workload_tables(
        self, scope: tuple[Matcher, ...], window: float
    ) -> tuple[str, dict[tuple[str, ...], dict[str, float]], dict[tuple[str, ...], dict[str, float]]]:
        (source, replicas), (_, traffic) = await asyncio.gather(
            self._table(_REPLICA_COLUMNS, scope, _REPLICA_KEY, window),
            self._table(_TRAFFIC_COLUMNS, scope, _WORKLOAD_KEY, window),
        )
        return source, replicas, traffic

    async def _table(
        self, columns: Mapping[str, _Column], scope: tuple[Matcher, ...], key: tuple[str, ...], window: float
    ) -> tuple[str, dict[tuple[str, ...], dict[str, float]]]:
        """One query per column, grouped by ``key``, run concurrently and joined on the key's label values."""
        names = list(columns)
        results = await asyncio.gather(*(self._column(columns[c], scope, key, window) for c in names))
        table: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
        for column, (_, values) in zip(names, results, strict=True):
            for group, value in values.items():
                table[group][column] = value
        return results[0][0], dict(table)

    async def _column(
        self, column: _Column, scope: tuple[Matcher, ...], key: tuple[str, ...], window: float
    ) -> tuple[str, Values]:
        query = MetricsQuery(
            Selector(column.series.name, scope),
            window,
            column.aggregation,
            quantile=column.quantile,
            by=key,
        )
        result = await self._reader().query(query)
        values: Values = {}
        for series in result.series:
            if not series.points:
                continue
            value = series.points[-1][1] * (window if column.per_window else 1.0)
            if math.isfinite(value):  # NaN: no data to compute from (a quantile of no requests); not a number to show
                values[tuple(series.labels.get(label, "") for label in key)] = value
        return result.source, values


def _replica_usage(key: tuple[str, ...], values: Mapping[str, float]) -> ReplicaUsage:
    _, _, replica, cluster, node = key
    return ReplicaUsage(replica=replica, cluster=cluster or None, node=node or None, **values)


def _workload_usage(
    key: tuple[str, ...], replicas: Sequence[Mapping[str, float]], traffic: Mapping[str, float] | None
) -> WorkloadUsage:
    traffic = traffic or {}
    requests = traffic.get("requests")
    errors = traffic.get("errors")
    return WorkloadUsage(
        namespace=key[0],
        workload=key[1],
        replicas=len(replicas),
        **{field: _sum(replicas, field) for field in _REPLICA_COLUMNS},
        requests_per_second=requests,
        error_ratio=_ratio(errors or 0.0, requests) if requests else None,
        latency_p99_seconds=traffic.get("latency"),
    )


def _node_usage(key: tuple[str, ...], values: Mapping[str, float]) -> NodeUsage:
    return NodeUsage(
        cluster=key[0],
        node=key[1],
        **values,
        cpu_ratio=_ratio(values.get("cpu_cores"), values.get("cpu_capacity")),
        memory_ratio=_ratio(values.get("memory_bytes"), values.get("memory_capacity_bytes")),
    )


def _sum(rows: Sequence[Mapping[str, float]], field: str) -> float | None:
    present = [row[field] for row in rows if field in row]
    return math.fsum(present) if present else None


def _ratio(part: float | None, whole: float | None) -> float | None:
    return part / whole if part is not None and whole else None


def _busiest(row: WorkloadUsage | NodeUsage | ClusterUsage) -> tuple[float, str]:
    """Sort key: most CPU first, then by name (a stable order for rows without samples of CPU)."""
    if isinstance(row, WorkloadUsage):
        name = f"{row.namespace}/{row.workload}"
    else:
        name = f"{row.cluster}/{row.node}" if isinstance(row, NodeUsage) else row.cluster
    return (-(row.cpu_cores or 0.0), name)
