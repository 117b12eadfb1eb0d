"""An in-test cluster driver: a real ``ClusterDriver`` that keeps its replicas in memory.

Its replicas run as soon as they are ensured; a test can make it refuse the replicas of a workload
(``ReplicaRejected``) or stop answering (``ClusterUnreachable``). ``MemoryResources`` hands these drivers to the
engine: a ``ResourceManager`` whose clusters are all memory clusters (until the provider registry lands, when
these tests pass ``providers={DriverKind.SIM: ...}`` instead).
"""

from __future__ import annotations

import asyncio
import time

from nemo_kernel.clusters import (
    ClusterDriver,
    ClusterReport,
    ClusterUnreachable,
    NodeReport,
    ReplicaRejected,
    ReplicaReport,
    ReplicaSpec,
)
from nemo_kernel.config import Settings
from nemo_kernel.domain import ClusterSpec, ReplicaPhase
from nemo_kernel.orchestrator.resources import ResourceManager, _Liveness
from nemo_kernel.store import Database


class MemoryCluster:
    """One cluster whose replicas are entries in a dict."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.name = spec.name
        self.nodes = [n.name for n in spec.nodes]
        self.replicas: dict[str, ReplicaReport] = {}
        self.ensured: list[str] = []  # every ensure_replica call, in order, refused ones included
        self.refused_workloads: set[str] = set()  # '<namespace>/<name>' whose replicas this cluster refuses
        self.answering = True

    def _answer(self) -> None:
        if not self.answering:
            raise ClusterUnreachable(f"{self.name} does not answer")

    async def status(self) -> ClusterReport:
        """The nodes, all ready, and every replica, all running."""
        self._answer()
        return ClusterReport(
            cluster=self.name,
            nodes=[NodeReport(name=n) for n in self.nodes],
            replicas=list(self.replicas.values()),
            sandbox="memory",
        )

    async def ensure_replica(self, spec: ReplicaSpec) -> None:
        """Run the replica (it is Running at once), unless its workload is refused here."""
        self._answer()
        self.ensured.append(spec.id)
        if spec.workload in self.refused_workloads:
            raise ReplicaRejected("refused", f"{self.name} runs nothing of {spec.workload}")
        if spec.node not in self.nodes:
            raise ReplicaRejected("unknown_node", f"no node {spec.node}")
        self.replicas.setdefault(
            spec.id,
            ReplicaReport(id=spec.id, node=spec.node, phase=ReplicaPhase.RUNNING, url=f"memory://{spec.id}"),
        )

    async def remove_replica(self, replica_id: str) -> None:
        """Forget the replica (unknown ids are fine)."""
        self._answer()
        self.replicas.pop(replica_id, None)

    async def close(self) -> None:
        """Nothing to release."""


_: type[ClusterDriver] = MemoryCluster  # the protocol is checked by mypy here, not hoped for


class MemoryResources(ResourceManager):
    """A Resource Manager whose every registered cluster is a :class:`MemoryCluster` of ``clusters``."""

    def __init__(self, db: Database, settings: Settings) -> None:
        super().__init__(db, settings)
        self.clusters: dict[str, MemoryCluster] = {}

    async def sync_drivers(self) -> None:
        """Open a memory cluster for every registered cluster; forget removed ones (what they ran goes too)."""
        specs = await asyncio.to_thread(self._load_specs)
        for name in set(self._drivers) - set(specs):
            self._drivers.pop(name)
            self._liveness.pop(name, None)
            self._specs.pop(name, None)
            self.clusters.pop(name, None)
        for name, spec in specs.items():
            if name in self._drivers:
                continue
            cluster = self.clusters.setdefault(name, MemoryCluster(spec))
            self._specs[name] = spec
            self._drivers[name] = cluster
            self._liveness.setdefault(name, _Liveness(last_ok=time.monotonic()))
