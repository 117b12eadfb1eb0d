"""The ``sim`` cluster driver: one simulated cluster, as the orchestration engine drives it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from nemo_kernel.clusters.base import (
    ClusterDriver,
    ClusterReport,
    ClusterUnreachable,
    NodeReport,
    ReplicaReport,
    ReplicaSpec,
)
from nemo_kernel.clusters.capabilities import SupportsFaultInjection, SupportsMetrics
from nemo_kernel.clusters.errors import ReplicaRejected
from nemo_kernel.clusters.revisions import ReportRevisions
from nemo_kernel.clusters.sim.series import cluster_samples
from nemo_kernel.clusters.sim.world import NOISE_PERIOD_S, SimCluster, SimReplica, utc
from nemo_kernel.domain import FaultKind, FaultSpec, ReplicaPhase
from nemo_kernel.metrics import Sample

SANDBOX = "simulated"
"""What a sim cluster's heartbeat says about sandboxing: its replicas are not processes, they read nothing."""


class SimDriver:
    """Drives one :class:`SimCluster`; every call first brings the cluster to the clock's time.

    Faults act here: ``down`` and ``partition`` make every call raise :class:`ClusterUnreachable`, ``slow`` delays
    every call (a heartbeat slower than the driver timeout is a missed one). Injecting a fault always works.
    """

    def __init__(self, cluster: SimCluster) -> None:
        self._cluster = cluster
        # The replicas and nodes are rebuilt only when the cluster changed (a delta report) or, for a full report,
        # also when its usage noise moved on: an idle fleet's heartbeats cost a comparison each, not a model per
        # replica. The log numbers the changes, for ``status(since)``; it lives with the cluster's driver, and a new
        # driver (a restarted control plane) starts a new log, whose revisions the old ones are not.
        self._revisions = ReportRevisions()
        self._view: tuple[list[ReplicaReport], list[NodeReport]] = ([], [])
        self._view_key: tuple[int, int] = (-1, -1)
        # Replica id -> (what its report was built from, the report): a view built again makes a report only for
        # the replicas that changed (a cluster given one new replica builds one, not one per replica it holds).
        self._reports: dict[str, tuple[tuple[object, ...], ReplicaReport]] = {}

    async def status(self, since: str | None = None) -> ClusterReport:
        """The cluster's nodes and replicas as they are now, or what changed since revision ``since``."""
        now = await self._answer()
        revision, period = self._cluster.revision, int(now // NOISE_PERIOD_S)
        if revision != self._view_key[0] or (since is None and period != self._view_key[1]):
            self._view, self._view_key = self._build_view(now), (revision, period)
            self._revisions.update(*self._view)
        replicas, nodes = self._view
        return self._revisions.report(self._cluster.spec.name, replicas, nodes, SANDBOX, since)

    async def ensure_replica(self, spec: ReplicaSpec) -> None:
        """Start the replica on its node (it is Running after the cluster's start delay); idempotent."""
        now = await self._answer()
        if spec.node not in self._cluster.nodes:
            raise ReplicaRejected("unknown_node", f"cluster {self._cluster.spec.name} has no node {spec.node!r}")
        namespace, _, workload = spec.workload.partition("/")
        replica = SimReplica(
            id=spec.id,
            namespace=namespace,
            workload=workload,
            node=spec.node,
            cpu=spec.resources.cpu,
            memory_mib=spec.resources.memory_mib,
        )
        self._cluster.add_replica(replica, now)

    async def remove_replica(self, replica_id: str) -> None:
        """Stop and forget the replica (unknown ids are fine)."""
        now = await self._answer()
        self._cluster.remove_replica(replica_id, now)

    async def scrape(self) -> Sequence[Sample]:
        """The ``nemo_replica_*`` and ``nemo_node_*`` series of the cluster (usage, power, energy, CO2)."""
        now = await self._answer()
        return cluster_samples(self._cluster, now)

    async def inject_fault(self, fault: FaultSpec) -> None:
        """Start ``fault``; the simulation ends it by its clock ``fault.for_s`` seconds later."""
        if fault.node is not None and fault.node not in self._cluster.nodes:
            raise ReplicaRejected("unknown_node", f"cluster {self._cluster.spec.name} has no node {fault.node!r}")
        self._cluster.inject(fault, self._cluster.clock())

    async def close(self) -> None:
        """Nothing to release: the simulated cluster keeps running in the provider."""

    async def _answer(self) -> float:
        """The time of this call, once the faults in progress let the cluster answer."""
        cluster = self._cluster
        now = cluster.clock()
        cluster.advance(now)
        slow = cluster.fault(FaultKind.SLOW)
        if slow is not None and slow.spec.slow_ms is not None:
            await asyncio.sleep(slow.spec.slow_ms / 1000)
            now = cluster.clock()
            cluster.advance(now)
        for kind in (FaultKind.DOWN, FaultKind.PARTITION):
            if cluster.fault(kind) is not None:
                raise ClusterUnreachable(f"cluster {cluster.spec.name} is unreachable (simulated {kind.value} fault)")
        return now

    def _build_view(self, now: float) -> tuple[list[ReplicaReport], list[NodeReport]]:
        cluster = self._cluster
        seed = cluster.settings.seed
        period = int(now // NOISE_PERIOD_S)
        cpu: dict[str, float] = dict.fromkeys(cluster.nodes, 0.0)
        memory: dict[str, float] = dict.fromkeys(cluster.nodes, 0.0)
        replicas = []
        built: dict[str, tuple[tuple[object, ...], ReplicaReport]] = {}
        for r in cluster.replicas.values():
            rate, resident = r.cpu_rate(seed, now), r.memory_bytes(seed, now) / 2**20
            cpu[r.node] += rate
            memory[r.node] += resident
            running = r.phase is ReplicaPhase.RUNNING
            # everything its report shows (its usage is the same for a whole noise period)
            key = (r.node, r.phase, r.restarts, r.exit_code, r.message, r.running_since, period if running else None)
            kept = self._reports.get(r.id)
            report = kept[1] if kept is not None and kept[0] == key else self._report(r, rate, resident, running)
            built[r.id] = (key, report)
            replicas.append(report)
        self._reports = built
        nodes = [
            NodeReport(
                name=name,
                ready=not node.down,
                cpu_percent=round(100 * cpu[name] / node.spec.cpu, 3),
                memory_mib=round(memory[name], 3),
            )
            for name, node in cluster.nodes.items()
        ]
        return replicas, nodes

    def _report(self, r: SimReplica, rate: float, resident: float, running: bool) -> ReplicaReport:
        # model_construct: the simulation's own values, already valid; validating 100,000 of them per pass would
        # cost more than the engine reading them
        return ReplicaReport.model_construct(
            id=r.id,
            node=r.node,
            phase=r.phase,
            url=f"sim://{self._cluster.spec.name}/{r.id}",
            pid=None,
            restarts=r.restarts,
            exit_code=r.exit_code,
            cpu_percent=round(rate * 100, 3) if running else None,
            memory_mib=round(resident, 3) if running else None,
            started_at=utc(r.running_since) if r.running_since is not None else None,
            message=r.message,
        )


# mypy checks here that the class keeps the protocols' shape
_driver: type[ClusterDriver] = SimDriver
_metrics: type[SupportsMetrics] = SimDriver
_faults: type[SupportsFaultInjection] = SimDriver
