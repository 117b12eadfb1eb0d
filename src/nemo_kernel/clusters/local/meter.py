"""The counters of one local cluster: CPU time, energy and power per node and per replica, between readings.

An agent keeps one :class:`ClusterMeter`; each scrape hands it the replicas' current usage and gets the cluster's
``nemo_replica_*`` and ``nemo_node_*`` samples back. Counters count from the agent's start (a new agent is a
counter reset, which ``rate()`` handles); a replica's own counters carry on across restarts of its process.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from nemo_kernel.clusters.local.usage import ReplicaUsage
from nemo_kernel.domain import ClusterSpec
from nemo_kernel.metrics import Sample, names
from nemo_kernel.metrics.energy import joules_between, power_at, replica_share, utilisation

_MIB = 1024 * 1024


@dataclass
class _ReplicaCounters:
    pid: int | None
    last_raw: float  # the process tree's CPU seconds at the last reading
    cpu_seconds: float  # the exposed counter
    joules: float = 0.0
    watts: float = 0.0


@dataclass
class _NodeCounters:
    cpu_seconds: float = 0.0
    joules: float = 0.0
    watts: float = 0.0


class ClusterMeter:
    """Turns successive :class:`ReplicaUsage` readings of one cluster into counters and gauges."""

    def __init__(self, cluster: ClusterSpec) -> None:
        self.cluster = cluster
        self._replicas: dict[str, _ReplicaCounters] = {}
        self._nodes = {node.name: _NodeCounters() for node in cluster.nodes}
        self._last_reading: float | None = None  # monotonic

    def observe(self, usages: Sequence[ReplicaUsage], monotonic_now: float, wall_now: float) -> list[Sample]:
        """Account the CPU used since the last reading, integrate power into energy, and return every sample.

        The first reading of a replica only sets its baseline: the CPU it used before is not charged as energy
        spent in this interval (an agent adopting a replica that ran for days would otherwise see a spike).
        """
        elapsed = None if self._last_reading is None else monotonic_now - self._last_reading
        self._last_reading = monotonic_now
        used: dict[str, float] = {}  # replica -> CPU seconds in this interval
        for usage in usages:
            used[usage.replica] = self._account_cpu(usage)
        for gone in set(self._replicas) - {u.replica for u in usages}:
            del self._replicas[gone]  # bounded: only replicas the agent still supervises are remembered

        node_used: dict[str, float] = defaultdict(float)
        running: dict[str, list[str]] = defaultdict(list)
        for usage in usages:
            node_used[usage.node] += used[usage.replica]
            if usage.cpu_seconds is not None:
                running[usage.node].append(usage.replica)
        for node in self.cluster.nodes:
            counters = self._nodes[node.name]
            busy = node_used.get(node.name, 0.0)
            counters.cpu_seconds += busy
            if elapsed is None or elapsed <= 0:
                counters.watts = power_at(node.power, 0.0)
                joules = 0.0
            else:
                counters.watts = power_at(node.power, utilisation(busy, elapsed, node.cpu))
                joules = joules_between(node.power, busy, elapsed, node.cpu)
            counters.joules += joules
            mine = running.get(node.name, [])
            for replica_id in mine:
                replica = self._replicas[replica_id]
                replica.watts = replica_share(counters.watts, used[replica_id], busy, len(mine))
                replica.joules += replica_share(joules, used[replica_id], busy, len(mine))
        return self._samples(usages, wall_now)

    def _account_cpu(self, usage: ReplicaUsage) -> float:
        """CPU seconds the replica used since its last reading (0 for a first reading or a replica that is down)."""
        counters = self._replicas.get(usage.replica)
        raw = usage.cpu_seconds
        if counters is None:
            start = raw if raw is not None else 0.0
            self._replicas[usage.replica] = _ReplicaCounters(pid=usage.pid, last_raw=start, cpu_seconds=start)
            return 0.0
        if raw is None:
            counters.watts = 0.0
            return 0.0
        # A new process (restart) starts its own CPU time from zero: all of it was used since the last reading.
        delta = raw if usage.pid != counters.pid or raw < counters.last_raw else raw - counters.last_raw
        counters.pid, counters.last_raw = usage.pid, raw
        counters.cpu_seconds += delta
        return delta

    def _samples(self, usages: Sequence[ReplicaUsage], ts: float) -> list[Sample]:
        out: list[Sample] = []
        for usage in usages:
            labels = usage.labels()
            counters = self._replicas[usage.replica]
            out.append(Sample(names.REPLICA_UP.name, labels, 1.0 if usage.up else 0.0, ts))
            out.append(Sample(names.REPLICA_RESTARTS.name, labels, float(usage.restarts), ts))
            out.append(Sample(names.REPLICA_CPU.name, labels, counters.cpu_seconds, ts))
            out.append(Sample(names.REPLICA_POWER.name, labels, counters.watts, ts))
            out.append(Sample(names.REPLICA_ENERGY.name, labels, counters.joules, ts))
            if usage.memory_bytes is not None:
                out.append(Sample(names.REPLICA_MEMORY.name, labels, usage.memory_bytes, ts))
        memory: dict[str, float] = defaultdict(float)
        for usage in usages:
            memory[usage.node] += usage.memory_bytes or 0.0
        for node in self.cluster.nodes:
            labels = {"node": node.name}
            totals = self._nodes[node.name]
            out.append(Sample(names.NODE_CPU.name, labels, totals.cpu_seconds, ts))
            out.append(Sample(names.NODE_CPU_CORES.name, labels, float(node.cpu), ts))
            out.append(Sample(names.NODE_MEMORY.name, labels, memory.get(node.name, 0.0), ts))
            out.append(Sample(names.NODE_MEMORY_CAPACITY.name, labels, float(node.memory_mib * _MIB), ts))
            out.append(Sample(names.NODE_POWER.name, labels, totals.watts, ts))
            out.append(Sample(names.NODE_ENERGY.name, labels, totals.joules, ts))
        return out
