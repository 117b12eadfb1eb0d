"""A cluster driver held in memory, and its provider: the engine's tests plug them in as ``driver: sim`` clusters.

They are real implementations of :class:`~nemo_kernel.clusters.ClusterDriver` and
:class:`~nemo_kernel.clusters.DriverProvider`, not mocks, and they reach the engine only through the providers
seam. A replica runs as soon as it is ensured on a node of its cluster; a test changes the cluster through the
driver's attributes: an outage (``reachable``), a NotReady node (``not_ready``), a refused workload (``refused``).

    provider = MemoryProvider()
    plane = ControlPlane(settings, providers={DriverKind.SIM: provider})
    resources = ResourceManager(db, settings, providers=DriverProviders(settings, {DriverKind.SIM: provider}))
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nemo_kernel.clusters import (
    ClusterDriver,
    ClusterReport,
    ClusterUnreachable,
    DriverProvider,
    NodeReport,
    ReplicaRejected,
    ReplicaReport,
    ReplicaSpec,
    SupportsLinkEmulation,
)
from nemo_kernel.domain import ClusterSpec, Link, ReplicaPhase, utcnow


@dataclass
class MemoryDriver:
    """One cluster in memory. ``reachable=False`` makes every call raise :class:`ClusterUnreachable` (an outage),
    a node in ``not_ready`` is reported NotReady, replicas of a workload in ``refused`` are rejected, and sending one of
    a workload in ``failing`` raises an unexpected error (a driver bug).

    ``ensured`` lists every replica id sent with ``ensure_replica``, in order, refused ones included.
    ``links`` holds the links it emulates (``SupportsLinkEmulation``); ``link_calls`` every ``set_link`` call.
    ``asked`` counts the ``status`` calls answered. ``starting_for`` makes a new replica report ``Starting`` to that
    many ``status`` calls before it is ``Running`` (0: Running at once), as a real cluster takes a moment to start it.
    """

    spec: ClusterSpec
    replicas: dict[str, ReplicaReport] = field(default_factory=dict)
    reachable: bool = True
    not_ready: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)  # workloads as '<namespace>/<name>'
    failing: set[str] = field(default_factory=set)  # workloads as '<namespace>/<name>'
    ensured: list[str] = field(default_factory=list)
    links: dict[str, Link] = field(default_factory=dict)
    link_calls: list[tuple[str, Link | None]] = field(default_factory=list)
    asked: int = 0
    starting_for: int = 0
    _starting: dict[str, int] = field(default_factory=dict)  # replica id -> status calls left before Running

    async def status(self) -> ClusterReport:
        """Every node and replica of the cluster."""
        self._answer()
        self.asked += 1
        for rid, left in list(self._starting.items()):
            if left > 0:
                self._starting[rid] = left - 1
                continue
            del self._starting[rid]
            if rid in self.replicas:
                self.replicas[rid] = self.replicas[rid].model_copy(update={"phase": ReplicaPhase.RUNNING})
        nodes = [NodeReport(name=n.name, ready=n.name not in self.not_ready) for n in self.spec.nodes]
        return ClusterReport(
            cluster=self.spec.name, nodes=nodes, replicas=list(self.replicas.values()), sandbox="memory"
        )

    async def ensure_replica(self, spec: ReplicaSpec) -> None:
        """Run the replica (it is Running at once); a replica already there is left as it is."""
        self._answer()
        self.ensured.append(spec.id)
        if spec.workload in self.refused:
            raise ReplicaRejected("refused", f"cluster {self.spec.name} refuses replicas of {spec.workload}")
        if spec.workload in self.failing:
            raise RuntimeError(f"cluster {self.spec.name} failed on a replica of {spec.workload}")
        if spec.node not in {n.name for n in self.spec.nodes}:
            raise ReplicaRejected("unknown_node", f"cluster {self.spec.name} has no node {spec.node!r}")
        if spec.id not in self.replicas:
            phase = ReplicaPhase.STARTING if self.starting_for else ReplicaPhase.RUNNING
            self.replicas[spec.id] = ReplicaReport(
                id=spec.id, node=spec.node, phase=phase, url=f"memory://{spec.id}", started_at=utcnow()
            )
            if self.starting_for:
                self._starting[spec.id] = self.starting_for

    async def set_link(self, peer: str, link: Link | None) -> None:
        """Emulate ``link`` to ``peer`` (None: stop)."""
        self._answer()
        self.link_calls.append((peer, link))
        if link is None:
            self.links.pop(peer, None)
        else:
            self.links[peer] = link

    async def remove_replica(self, replica_id: str) -> None:
        """Stop and forget the replica (unknown ids are fine)."""
        self._answer()
        self.replicas.pop(replica_id, None)

    async def close(self) -> None:
        """Nothing to release: the cluster and its replicas stay as they are."""

    def _answer(self) -> None:
        if not self.reachable:
            raise ClusterUnreachable(f"cluster {self.spec.name} is unreachable")


@dataclass
class MemoryProvider:
    """Opens :class:`MemoryDriver` clusters; a cluster opened again (a control-plane restart: a new engine given
    the same provider) keeps its replicas.

    ``forgotten`` lists the clusters removed, in order; ``closed`` tells whether the control plane closed it.
    """

    clusters: dict[str, MemoryDriver] = field(default_factory=dict)
    opened: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    closed: bool = False

    async def open(self, spec: ClusterSpec) -> MemoryDriver:
        """The cluster's driver, created on first open."""
        self.opened.append(spec.name)
        return self.clusters.setdefault(spec.name, MemoryDriver(spec))

    async def revive(self, spec: ClusterSpec) -> MemoryDriver | None:
        """Nothing runs a memory cluster that could be restarted: an unreachable one stays so."""
        return None

    async def forget(self, name: str) -> None:
        """The cluster is removed, and its replicas with it."""
        self.clusters.pop(name, None)
        self.forgotten.append(name)

    async def close(self) -> None:
        """The control plane stops; the clusters keep their replicas."""
        self.closed = True


# both keep the shape of their protocols: mypy says so when run on this file (the project run covers src only)
_driver: type[ClusterDriver] = MemoryDriver
_links: type[SupportsLinkEmulation] = MemoryDriver
_provider: type[DriverProvider] = MemoryProvider
