"""The simulation: every ``sim`` cluster of one provider, advanced lazily from a clock.

Nothing runs in the background (no task, no thread per cluster): each call first brings its cluster up to the
clock's time. A replica is Starting for the cluster's ``start_delay_s``, then Running, or Crashed when its start
fails (``failure_rate``, seeded: the same seed fails the same starts); a crashed replica is started again after a
backoff, as a kubelet does. Usage is shaped by the replica's requests with seeded noise, constant within a
:data:`NOISE_PERIOD_S`, and counters (CPU seconds, joules, grams of CO2) integrate it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nemo_kernel.domain import ClusterSpec, FaultKind, FaultSpec, NodeSpec, ReplicaPhase, SimSettings

Clock = Callable[[], float]
"""Unix seconds; the provider's clock (``time.time``, or a test's)."""

NOISE_PERIOD_S = 10.0
"""Usage changes once per period (the engine stores a replica's usage at most this often)."""

MAX_BACKOFF_S = 60.0
"""Longest wait before a crashed replica is started again."""

EXIT_FAILED = 1  # a start that failed
EXIT_KILLED = 137  # its node went down (SIGKILL, as a container runtime reports it)


def unit(*key: object) -> float:
    """A number in [0, 1) determined by ``key`` alone (seeded noise without a random generator's state)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(slots=True)
class SimReplica:
    """One replica a simulated cluster runs."""

    id: str
    namespace: str
    workload: str
    node: str
    cpu: float  # cores requested
    memory_mib: int  # requested
    phase: ReplicaPhase = ReplicaPhase.STARTING
    restarts: int = 0
    attempt_at: float = 0.0  # when the current start began
    running_since: float | None = None
    next_change: float | None = None  # when the phase changes by itself (a start ends, a crashed replica restarts)
    exit_code: int | None = None
    message: str = ""
    cpu_seconds: float = 0.0
    energy_j: float = 0.0
    co2_g: float = 0.0

    usage_period: int = -1  # the noise period ``usage`` was drawn for
    usage: tuple[float, float] = (0.0, 0.0)  # share of the CPU and of the memory requested, in that period

    def _shares(self, seed: int, now: float) -> tuple[float, float]:
        period = int(now // NOISE_PERIOD_S)
        if period != self.usage_period:  # drawn once per period: heartbeats of an idle fleet hash nothing
            self.usage_period = period
            self.usage = (
                0.2 + 0.6 * unit(seed, self.id, "cpu", period),
                0.5 + 0.4 * unit(seed, self.id, "mem", period),
            )
        return self.usage

    def cpu_rate(self, seed: int, now: float) -> float:
        """Cores used now: 20-80 % of the request, changing every noise period."""
        if self.phase is not ReplicaPhase.RUNNING:
            return 0.0
        return self.cpu * self._shares(seed, now)[0]

    def memory_bytes(self, seed: int, now: float) -> float:
        """Resident memory now: 50-90 % of the request."""
        if self.phase is not ReplicaPhase.RUNNING:
            return 0.0
        return self.memory_mib * 2**20 * self._shares(seed, now)[1]


@dataclass(slots=True)
class SimNode:
    """A node's counters and whether a fault keeps it down."""

    spec: NodeSpec
    down: bool = False
    cpu_seconds: float = 0.0
    energy_j: float = 0.0
    co2_g: float = 0.0


@dataclass(slots=True)
class ActiveFault:
    """A fault in progress and when it ends (the simulation's clock)."""

    spec: FaultSpec
    until: float


@dataclass
class SimCluster:
    """One simulated cluster: its nodes, replicas and faults, brought up to date by :meth:`advance`."""

    spec: ClusterSpec
    clock: Clock
    nodes: dict[str, SimNode] = field(init=False)
    replicas: dict[str, SimReplica] = field(default_factory=dict)
    faults: dict[tuple[FaultKind, str | None], ActiveFault] = field(default_factory=dict)
    revision: int = 0  # bumped on every change a report shows
    integrated_at: float = field(init=False)

    def __post_init__(self) -> None:
        self.nodes = {n.name: SimNode(n) for n in self.spec.nodes}
        self.integrated_at = self.clock()

    @property
    def settings(self) -> SimSettings:
        """The cluster's ``sim:`` section, or the defaults."""
        return self.spec.sim or SimSettings()

    def fault(self, kind: FaultKind) -> ActiveFault | None:
        """The fault of ``kind`` in progress (not ``node_down``, which is per node)."""
        return self.faults.get((kind, None))

    # -- changes -------------------------------------------------------------------------------------------------

    def add_replica(self, replica: SimReplica, now: float) -> None:
        """Start ``replica`` (unless one with its id is there: idempotent)."""
        if replica.id in self.replicas:
            return
        self.replicas[replica.id] = replica
        self._start(replica, now)
        self.revision += 1

    def remove_replica(self, replica_id: str, now: float) -> None:
        """Stop and forget a replica (unknown ids are fine)."""
        if replica_id in self.replicas:
            self.integrate(now)  # its node's energy up to now counts its share
            del self.replicas[replica_id]
            self.revision += 1

    def inject(self, fault: FaultSpec, now: float) -> None:
        """Start ``fault`` for ``fault.for_s`` seconds (replacing one of the same kind and node)."""
        self.advance(now)
        self.integrate(now)  # what ran until now counts, before the fault stops it
        self.faults[(fault.kind, fault.node)] = ActiveFault(fault, now + fault.for_s)
        if fault.kind is FaultKind.DOWN:
            self.replicas.clear()  # the cluster is gone and its replicas with it; it comes back empty
        elif fault.kind is FaultKind.NODE_DOWN and fault.node is not None:
            self.nodes[fault.node].down = True
            for replica in self.replicas.values():
                if replica.node == fault.node:
                    self._kill(replica, f"node {fault.node} is down")
        self.revision += 1

    # -- time ----------------------------------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Bring the cluster to time ``now``: faults that ended, starts that finished or failed. Counters are
        integrated when read (:meth:`integrate`), not on every heartbeat."""
        for key, active in list(self.faults.items()):
            if now >= active.until:
                self.integrate(active.until)  # a node that was down drew nothing until now
                del self.faults[key]
                self._end(active.spec, active.until)
        for replica in self.replicas.values():
            if replica.next_change is not None and now >= replica.next_change:
                self._step(replica, now)

    def _step(self, replica: SimReplica, now: float) -> None:
        """Play the replica's starts, failures and restarts that fell due by ``now`` (a loop: a cluster left alone
        for hours with failing starts has many)."""
        while replica.next_change is not None and now >= replica.next_change and not self.nodes[replica.node].down:
            due = replica.next_change
            if replica.phase is ReplicaPhase.CRASHED:  # its backoff is over: start it again
                replica.restarts += 1
                self._start(replica, due)
            elif unit(self.settings.seed, self.spec.name, replica.id, replica.restarts) < self.settings.failure_rate:
                replica.phase, replica.exit_code = ReplicaPhase.CRASHED, EXIT_FAILED
                replica.message = "simulated start failure"
                replica.next_change = due + min(MAX_BACKOFF_S, 2.0**replica.restarts)
            else:
                replica.phase, replica.exit_code, replica.message = ReplicaPhase.RUNNING, None, ""
                replica.running_since, replica.next_change = due, None
            self.revision += 1

    def _start(self, replica: SimReplica, at: float) -> None:
        replica.phase, replica.attempt_at, replica.running_since = ReplicaPhase.STARTING, at, None
        replica.exit_code, replica.message = None, ""
        replica.next_change = at + self.settings.start_delay_s
        if self.nodes[replica.node].down:
            self._kill(replica, f"node {replica.node} is down")

    def _kill(self, replica: SimReplica, message: str) -> None:
        replica.phase, replica.exit_code, replica.message = ReplicaPhase.CRASHED, EXIT_KILLED, message
        replica.running_since, replica.next_change = None, None

    def _end(self, fault: FaultSpec, now: float) -> None:
        if fault.kind is FaultKind.NODE_DOWN and fault.node is not None:
            self.nodes[fault.node].down = False
            for replica in self.replicas.values():
                if replica.node == fault.node:
                    replica.restarts += 1
                    self._start(replica, now)
        self.revision += 1

    def integrate(self, now: float) -> None:
        """Add the usage, energy and CO2 since the last integration to the counters (rates of ``now``'s period)."""
        since = self.integrated_at
        if now <= since:
            return
        self.integrated_at = now
        seed, intensity = self.settings.seed, self.spec.carbon_intensity
        used: dict[str, float] = dict.fromkeys(self.nodes, 0.0)
        rates: list[tuple[SimReplica, float, float]] = []
        for replica in self.replicas.values():
            if replica.running_since is None:
                continue
            rate = replica.cpu_rate(seed, now)
            used[replica.node] += rate
            rates.append((replica, rate, now - max(since, replica.running_since)))
        power = {name: self.node_power(node, used[name]) for name, node in self.nodes.items()}
        for name, node in self.nodes.items():
            node.cpu_seconds += used[name] * (now - since)
            joules = power[name] * (now - since)
            node.energy_j += joules
            node.co2_g += joules / 3.6e6 * intensity
        for replica, rate, seconds in rates:
            share = rate / used[replica.node] if used[replica.node] else 0.0
            joules = power[replica.node] * share * seconds
            replica.cpu_seconds += rate * seconds
            replica.energy_j += joules
            replica.co2_g += joules / 3.6e6 * intensity

    @staticmethod
    def node_power(node: SimNode, cores_used: float) -> float:
        """Watts the node draws using ``cores_used`` (its linear power model); a node that is down draws none."""
        if node.down:
            return 0.0
        model = node.spec.power
        return model.idle_watts + (model.max_watts - model.idle_watts) * min(1.0, cores_used / node.spec.cpu)


class Simulation:
    """Every simulated cluster of one provider (one process, one event loop)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.clusters: dict[str, SimCluster] = {}

    def open(self, spec: ClusterSpec) -> SimCluster:
        """The cluster ``spec`` names, created on first use; opened again, it keeps what it runs."""
        cluster = self.clusters.get(spec.name)
        if cluster is None:
            cluster = self.clusters[spec.name] = SimCluster(spec, self.clock)
        return cluster

    def forget(self, name: str) -> None:
        """The cluster is removed, and its replicas with it."""
        self.clusters.pop(name, None)


def utc(seconds: float) -> datetime:
    """Unix seconds as an aware datetime."""
    return datetime.fromtimestamp(seconds, UTC)
