"""A generated fleet of 1,000 ``sim`` clusters driven by the real engine in-process (SQLite in ``tmp_path``).

The simulation runs on a clock the test moves forward by a few seconds per pass, so replicas get through their
start delay without the test waiting; the resource manager's heartbeat timeout is tiny, so a silent cluster is
NotReady at its first missed heartbeat.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import func, select
from tests.clock import Clock
from tests.orchestrator.conftest import STEP_S, SimEngine, generated_fleet_store

from nemo_kernel.clusters import ReplicaSpec
from nemo_kernel.clusters.sim import SimDriver, SimProvider
from nemo_kernel.clusters.sim.world import SimCluster
from nemo_kernel.config import Settings
from nemo_kernel.domain import (
    ClusterPhase,
    ClusterSpec,
    EventKind,
    FaultSpec,
    WorkloadPhase,
)
from nemo_kernel.orchestrator.commands import FaultCommands
from nemo_kernel.store import Database, clusters, events
from nemo_kernel.store.events import cluster_subject
from nemo_kernel.store.tables import EventRow, ReplicaRow, WorkloadRow

FLEET = 1000


class RecordingDriver(SimDriver):
    """A sim driver that also keeps the id of every replica the engine asked it to run."""

    def __init__(self, cluster: SimCluster, sent: list[str]) -> None:
        super().__init__(cluster)
        self._sent = sent

    async def ensure_replica(self, spec: ReplicaSpec) -> None:
        self._sent.append(spec.id)
        await super().ensure_replica(spec)


class RecordingProvider(SimProvider):
    """The sim provider of a given simulation (the world that keeps running across a control plane's restart),
    recording what its drivers are sent."""

    def __init__(self, world: SimProvider) -> None:
        self.simulation = world.simulation
        self.sent: list[str] = []

    async def open(self, spec: ClusterSpec) -> SimDriver:
        return RecordingDriver(self.simulation.open(spec), self.sent)


class Fleet(SimEngine):
    """An engine, its resource manager and fault commands over one simulation."""

    def __init__(self, db: Database, settings: Settings, clock: Clock, sim: SimProvider | None = None) -> None:
        """``sim``: the simulation to drive (a control plane restarted over running clusters); a new one if None."""
        super().__init__(db, settings, clock, sim)
        self.faults = FaultCommands(db, lambda: None, self.resources)

    def placed(self, name: str) -> list[tuple[int, str, bool, str]]:
        """(index, cluster, desired, phase) of the workload's replica rows."""
        with self.db.transaction() as s:
            wid = s.scalar(select(WorkloadRow.id).where(WorkloadRow.name == name))
            rows = s.scalars(select(ReplicaRow).where(ReplicaRow.workload_id == wid))
            return sorted((r.index, r.cluster, r.desired, r.phase) for r in rows)

    def cluster_phase(self, name: str) -> str:
        with self.db.transaction() as s:
            return clusters.get_cluster(s, name).phase

    def kinds(self, cluster: str) -> list[str]:
        with self.db.transaction() as s:
            return [e.kind for e in events.history(s, cluster_subject(cluster))]

    def simulated(self, name: str) -> dict[str, list[str]]:
        """What the simulation runs of a workload, by cluster."""
        found = {
            c: [r.id for r in sim.replicas.values() if r.workload == name]
            for c, sim in self.sim.simulation.clusters.items()
        }
        return {c: ids for c, ids in found.items() if ids}


pytestmark = pytest.mark.asyncio(loop_scope="module")  # the fleet and its drivers are shared by the module


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    """1,000 generated clusters, registered and opened once for the module (each test adds its own workloads)."""
    root = tmp_path_factory.mktemp("fleet")
    db = generated_fleet_store(root, FLEET, seed=3)
    settings = Settings(data_dir=root / "data", heartbeat_timeout=0.001, driver_timeout=5.0)
    shared = Fleet(db, settings, Clock())
    yield shared
    await shared.resources.close()
    db.dispose()


async def test_a_workload_on_a_thousand_sim_clusters_runs_after_the_start_delay(
    fleet: Fleet,
) -> None:
    fleet.apply("web", 3)
    await fleet.engine.reconcile_once()
    assert fleet.phase("web") != WorkloadPhase.RUNNING.value  # sent, still starting in the simulation
    await fleet.settle(lambda: fleet.phase("web") == WorkloadPhase.RUNNING.value)
    rows = fleet.placed("web")
    assert [(i, desired, phase) for i, _, desired, phase in rows] == [(i, True, "Running") for i in range(3)]
    assert sorted(c for c in fleet.simulated("web")) == sorted({c for _, c, _, _ in rows})


async def test_a_down_fault_drives_not_ready_rescheduling_and_recovery(fleet: Fleet) -> None:
    fleet.apply("api", 3)
    await fleet.settle(lambda: fleet.phase("api") == WorkloadPhase.RUNNING.value)
    victim = fleet.placed("api")[0][1]

    fault = await fleet.faults.inject(victim, FaultSpec(kind="down", for_s=60))
    assert EventKind.CLUSTER_FAULT_STARTED in fleet.kinds(victim)
    await fleet.engine.reconcile_once()
    assert fleet.cluster_phase(victim) == ClusterPhase.NOT_READY.value
    assert fleet.phase("api") == WorkloadPhase.DEGRADED.value

    def moved() -> bool:
        current = [(c, p) for _, c, desired, p in fleet.placed("api") if desired]
        return len(current) == 3 and all(c != victim and p == "Running" for c, p in current)

    await fleet.settle(moved)
    assert fleet.phase("api") == WorkloadPhase.RUNNING.value

    fleet.clock.now += fault.spec.for_s  # the simulation ends the fault by its clock
    await fleet.settle(lambda: fleet.cluster_phase(victim) == ClusterPhase.READY.value)
    await fleet.settle(lambda: victim not in fleet.simulated("api") and len(fleet.placed("api")) == 3)
    assert fleet.phase("api") == WorkloadPhase.RUNNING.value
    assert EventKind.CLUSTER_READY in fleet.kinds(victim)


async def test_the_end_of_a_fault_is_recorded_once_its_time_is_up(fleet: Fleet) -> None:
    await fleet.engine.reconcile_once()  # opens the drivers
    target = sorted(fleet.sim.simulation.clusters)[-1]
    fault = await fleet.faults.inject(target, FaultSpec(kind="partition", for_s=0.2))
    assert [f.id for f in fleet.faults.active(target)] == [fault.id]
    deadline = time.monotonic() + 10
    while EventKind.CLUSTER_FAULT_ENDED not in fleet.kinds(target):
        fleet.faults.expire()  # the control plane's fault loop calls this every half second
        assert time.monotonic() < deadline, "the fault's end was never recorded"
        time.sleep(0.05)  # poll interval of a condition with a deadline
    assert fleet.kinds(target).count(EventKind.CLUSTER_FAULT_ENDED) == 1
    assert fleet.faults.active(target) == []
    assert fleet.faults.expire() == 0


async def test_a_restarted_process_rebuilds_the_simulation_from_the_store(fleet: Fleet) -> None:
    fleet.apply("cache", 2)
    await fleet.settle(lambda: fleet.phase("cache") == WorkloadPhase.RUNNING.value)
    before = {(i, c) for i, c, _, _ in fleet.placed("cache")}

    # a new process: a new, empty simulation over the same store; faults it held are recorded as ended
    restarted = Fleet(fleet.db, fleet.settings, fleet.clock)
    try:
        assert restarted.simulated("cache") == {}
        await restarted.settle(lambda: len(restarted.simulated("cache")) == len({c for _, c in before}))
        await restarted.settle(lambda: restarted.phase("cache") == WorkloadPhase.RUNNING.value)
        assert {(i, c) for i, c, _, _ in restarted.placed("cache")} == before  # the same places, sent again
    finally:
        await restarted.resources.close()


async def test_a_restarted_plane_adopts_what_the_running_clusters_report_and_sends_nothing(fleet: Fleet) -> None:
    fleet.apply("adopted", 40)
    await fleet.settle(lambda: fleet.phase("adopted") == WorkloadPhase.RUNNING.value)
    before = fleet.placed("adopted")
    with fleet.db.snapshot() as s:
        newest = s.scalar(select(func.max(EventRow.id))) or 0

    # a new control plane over the same, running clusters (only the engine restarts)
    world = RecordingProvider(fleet.sim)
    restarted = Fleet(fleet.db, fleet.settings, fleet.clock, sim=world)
    try:
        await restarted.engine.reconcile_once()  # a first pass is full: every cluster's whole report
        fleet.clock.now += STEP_S
        await restarted.engine.reconcile_once()
        assert world.sent == []  # nothing was sent again: every replica was adopted where it runs
        assert restarted.placed("adopted") == before
        assert restarted.phase("adopted") == WorkloadPhase.RUNNING.value
        with fleet.db.snapshot() as s:
            kinds = set(s.scalars(select(EventRow.kind).where(EventRow.id > newest)))
        assert EventKind.DEPLOYMENT_APPLIED not in kinds and EventKind.REPLICA_STARTED not in kinds

        # the adopting plane still acts on a change: a replica the cluster no longer runs is sent again
        cluster = before[0][1]
        lost = fleet.simulated("adopted")[cluster][0]
        driver = restarted.resources.driver(cluster)
        assert driver is not None
        await driver.remove_replica(lost)
        await restarted.settle(lambda: lost in world.sent and restarted.phase("adopted") == WorkloadPhase.RUNNING.value)
        assert world.sent == [lost]
    finally:
        await restarted.resources.close()


async def test_a_reschedule_places_every_replica_of_the_failed_cluster_elsewhere(fleet: Fleet) -> None:
    fleet.apply("spread", 60)
    await fleet.settle(lambda: fleet.phase("spread") == WorkloadPhase.RUNNING.value)
    by_cluster: dict[str, int] = {}
    for _, cluster, _, _ in fleet.placed("spread"):
        by_cluster[cluster] = by_cluster.get(cluster, 0) + 1
    victim = max(by_cluster, key=lambda c: (by_cluster[c], c))
    lost = {i for i, c, _, _ in fleet.placed("spread") if c == victim}

    fault = await fleet.faults.inject(victim, FaultSpec(kind="down", for_s=600))

    def moved() -> bool:
        current = [(i, c, p) for i, c, desired, p in fleet.placed("spread") if desired]
        return sorted(i for i, _, _ in current) == list(range(60)) and all(
            c != victim and p == "Running" for _, c, p in current
        )

    await fleet.settle(moved)
    assert lost  # the cluster held some, and each of their indices runs elsewhere now
    assert victim not in fleet.simulated("spread")
    assert fleet.phase("spread") == WorkloadPhase.RUNNING.value
    fleet.clock.now += fault.spec.for_s
    await fleet.settle(lambda: fleet.cluster_phase(victim) == ClusterPhase.READY.value)
