"""The reconcile steps in-process: an engine on SQLite with in-memory clusters (real ``ClusterDriver`` objects,
``driver: sim`` clusters opened by :class:`~tests.orchestrator.fakes.MemoryProvider` through the providers seam).

Each scenario asserts what a user relies on: moves are make-before-break, a refused replica is reported once and
never resent (not even after a restart), a new version replaces the old one without a gap, a deletion leaves nothing
behind, not even in the engine's memory. They run at 10 clusters; the drain also runs at 1,000, where every pass
considers the whole fleet as a target (a silent cluster at 1,000 is test_sim_fleet's down fault; how a pass's time
grows with the fleet is in benchmarks/).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from tests.orchestrator.fakes import MemoryDriver, MemoryProvider

from nemo_kernel.clusters import DriverProviders
from nemo_kernel.config import Settings
from nemo_kernel.domain import (
    ClusterSpec,
    DriverKind,
    EventKind,
    MigrationPhase,
    ReplicaPhase,
    WorkloadDescriptor,
    WorkloadPhase,
)
from nemo_kernel.migration import MigrationRunner, MigrationTimings
from nemo_kernel.orchestrator.reconcile import OrchestrationEngine
from nemo_kernel.orchestrator.resources import ResourceManager
from nemo_kernel.store import Database, clusters, events, workloads
from nemo_kernel.store.events import workload_subject
from nemo_kernel.store.migration_records import EVACUATION_ATTEMPTS
from nemo_kernel.store.tables import ClusterRow, MigrationRow, NodeRow, ReplicaRow, WorkloadRow

SIZES = [pytest.param(10, id="10-clusters"), pytest.param(1000, id="1000-clusters")]
MAX_PASSES = 12  # every scenario settles in a handful of passes; more means it does not converge


def _cluster(i: int) -> ClusterSpec:
    return ClusterSpec.model_validate(
        {
            "name": f"c{i:04d}",
            "driver": DriverKind.SIM,  # not local: the resource manager never tries to start an agent for it
            "tier": "cloud" if i % 2 else "edge",
            "region": "eu-south",
            "country": "ES",
            "nodes": [{"name": f"c{i:04d}-n{j}", "cpu": 4, "memory_mib": 4096} for j in range(2)],
        }
    )


def _workload(name: str, replicas: int = 3, **deployment: Any) -> WorkloadDescriptor:
    spec = {"command": ["serve"], "replicas": replicas, "resources": {"cpu": 0.5, "memory_mib": 64}} | deployment
    return WorkloadDescriptor.model_validate({"name": name, "deployment": spec})


@dataclass(frozen=True)
class Replica:
    """A replica row as read in one transaction."""

    id: str
    index: int
    version: int
    cluster: str
    node: str
    desired: bool
    phase: str
    message: str


class Plane:
    """The engine, its resource manager and its memory clusters, on one SQLite database."""

    def __init__(self, db: Database, settings: Settings, memory: MemoryProvider | None = None) -> None:
        self.db = db
        self.settings = settings
        # A restart is handed the same provider: the clusters (and what they run) outlive the engine.
        self.memory = memory if memory is not None else MemoryProvider()
        providers = DriverProviders(settings, {DriverKind.SIM: self.memory})
        self.resources = ResourceManager(db, settings, providers=providers)
        self.engine = OrchestrationEngine(db, self.resources, settings)
        # The control plane's migration loop, which carries out the moves a drain starts; no drain delay, as no
        # gateway has to follow the switch here.
        self.migrations = MigrationRunner(db, self.resources.driver, lambda: None, MigrationTimings(drain=0.0))

    def restarted(self) -> Plane:
        """A new engine and resource manager on the same store and the same clusters."""
        return Plane(self.db, self.settings, self.memory)

    async def settle(self, done: Callable[[], bool], *, check: Callable[[], None] | None = None) -> None:
        """Run passes until ``done()``; ``check()`` after every pass asserts what must hold throughout."""
        for _ in range(MAX_PASSES):
            await self.engine.reconcile_once()
            await self.migrations.advance()
            if check is not None:
                check()
            if done():
                return
        raise AssertionError(f"not settled after {MAX_PASSES} passes")

    def cluster(self, name: str) -> MemoryDriver:
        return self.memory.clusters[name]

    def apply(self, descriptor: WorkloadDescriptor) -> None:
        with self.db.transaction() as s:
            workloads.apply_workload(s, descriptor)

    def workload(self, name: str) -> tuple[str, list[Replica]] | None:
        """The workload's phase and replicas, or None once it is gone."""
        with self.db.transaction() as s:
            row = s.scalar(select(WorkloadRow).where(WorkloadRow.namespace == "default", WorkloadRow.name == name))
            if row is None:
                return None
            rows = workloads.replicas_by_workload(s, [row.id]).get(row.id, [])
            return row.phase, [
                Replica(r.id, r.index, r.version, r.cluster, r.node, r.desired, r.phase, r.message) for r in rows
            ]

    def phase(self, name: str) -> str:
        found = self.workload(name)
        assert found is not None
        return found[0]

    def replicas(self, name: str) -> list[Replica]:
        found = self.workload(name)
        return [] if found is None else found[1]

    def running(self, name: str) -> bool:
        found = self.workload(name)
        return found is not None and found[0] == WorkloadPhase.RUNNING.value

    def kinds(self, name: str) -> list[str]:
        with self.db.transaction() as s:
            return [e.kind for e in events.history(s, workload_subject("default", name), limit=10_000)]

    def hosted(self, prefix: str) -> dict[str, list[str]]:
        """What the clusters run of a workload (replica ids start with its name), by cluster."""
        found = {
            name: [rid for rid in c.replicas if rid.startswith(f"{prefix}-v")]
            for name, c in self.memory.clusters.items()
        }
        return {name: ids for name, ids in found.items() if ids}


@pytest.fixture
async def make_plane(tmp_path: Path) -> AsyncIterator[Callable[[int], Plane]]:
    made: list[Plane] = []
    db = Database(f"sqlite:///{tmp_path / 'nemo.db'}")
    db.migrate()

    def make(size: int) -> Plane:
        # A silent cluster is NotReady at its first missed heartbeat, and every pass asks every cluster: the test
        # decides when a cluster is silent or changes, and drives passes, not time.
        settings = Settings(
            data_dir=tmp_path / "data", heartbeat_timeout=0.001, heartbeat_interval=0, driver_timeout=5.0
        )
        with db.transaction() as s:
            for i in range(size):
                clusters.add_cluster(s, _cluster(i))
        plane = Plane(db, settings)
        made.append(plane)
        return plane

    yield make
    for plane in made:
        await plane.resources.close()
    db.dispose()


@pytest.mark.parametrize("size", SIZES)
async def test_a_drained_cluster_is_emptied_make_before_break(make_plane: Callable[[int], Plane], size: int) -> None:
    plane = make_plane(size)
    plane.apply(_workload("web"))
    await plane.settle(lambda: plane.running("web"))
    drained = plane.replicas("web")[0].cluster
    with plane.db.transaction() as s:
        clusters.set_schedulable(s, drained, cordoned=True, draining=True)

    def serving() -> None:  # no gap: every index keeps a running replica while it moves
        assert plane.phase("web") == WorkloadPhase.RUNNING.value

    await plane.settle(lambda: drained not in plane.hosted("web") and len(plane.replicas("web")) == 3, check=serving)
    assert all(r.cluster != drained and r.desired for r in plane.replicas("web"))
    kinds = plane.kinds("web")
    for kind in (EventKind.REPLICA_RESCHEDULED, EventKind.REPLICA_REPLACED, EventKind.REPLICA_REMOVED):
        assert kind in kinds


def _migrations(plane: Plane) -> list[MigrationRow]:
    with plane.db.transaction() as s:
        rows = list(s.scalars(select(MigrationRow).order_by(MigrationRow.id)))
        s.expunge_all()
        return rows


@pytest.mark.parametrize("size", SIZES)
async def test_a_drain_moves_replicas_through_migrations_at_most_the_concurrency_at_once(
    make_plane: Callable[[int], Plane], size: int
) -> None:
    first = make_plane(size)
    plane = Plane(first.db, first.settings.model_copy(update={"evacuation_concurrency": 2}), first.memory)
    try:
        names = [f"w{i}" for i in range(5)]
        with plane.db.transaction() as s:  # everything starts on c0000: the others take nothing new
            for i in range(1, size):
                clusters.set_schedulable(s, f"c{i:04d}", cordoned=True)
        for name in names:
            plane.apply(_workload(name, replicas=2))
        await plane.settle(lambda: all(plane.running(n) for n in names))
        with plane.db.transaction() as s:
            for i in range(1, size):
                clusters.set_schedulable(s, f"c{i:04d}", cordoned=False)
            clusters.set_schedulable(s, "c0000", cordoned=True, draining=True)

        most = 0
        for _ in range(80):  # 10 moves, 2 at a time, a few passes each
            await plane.engine.reconcile_once()
            await plane.migrations.advance()
            moving = [m for m in _migrations(plane) if not MigrationPhase(m.phase).final]
            most = max(most, len(moving))
            assert len({m.workload for m in moving}) == len(moving)  # one move per workload at a time
            assert all(plane.phase(n) == WorkloadPhase.RUNNING.value for n in names)  # make-before-break
            if all("c0000" not in plane.hosted(n) and len(plane.replicas(n)) == 2 for n in names) and not moving:
                break
        else:
            raise AssertionError(f"c0000 not emptied: {plane.memory.clusters['c0000'].replicas}")
        assert most == 2
        moves = _migrations(plane)
        assert len(moves) == 10 and {(m.phase, m.reason, m.mode) for m in moves} == {
            ("Completed", "drained", "stateless")
        }
        for name in names:
            kinds = plane.kinds(name)
            assert kinds.count(EventKind.REPLICA_RESCHEDULED) == 2 == kinds.count(EventKind.REPLICA_REPLACED)
    finally:
        await plane.resources.close()


async def _drain_the_one_replica(plane: Plane, name: str) -> Replica:
    """A running workload of one replica whose cluster is then drained (its move starts at the next pass)."""
    plane.apply(_workload(name, replicas=1))
    await plane.settle(lambda: plane.running(name))
    source = plane.replicas(name)[0]
    with plane.db.transaction() as s:
        clusters.set_schedulable(s, source.cluster, cordoned=True, draining=True)
    return source


async def test_a_move_waits_out_a_busy_store_and_never_leaves_its_source_running(
    make_plane: Callable[[int], Plane], tmp_path: Path
) -> None:
    # Seen in a move-back storm on SQLite: a step whose transaction found the write lock held past the busy
    # timeout was failed "after the switch", and the source kept running beside its replacement for good.
    plane = make_plane(10)
    source = await _drain_the_one_replica(plane, "web")
    for _ in range(MAX_PASSES):  # until the move is past the switch: the target serves, the source is left
        await plane.engine.reconcile_once()
        await plane.migrations.advance()
        if _migrations(plane) and _migrations(plane)[0].phase == MigrationPhase.CLEANING.value:
            break
    busy = Plane(Database(f"sqlite:///{tmp_path / 'nemo.db'}?timeout=0.05"), plane.settings, plane.memory)
    holder = sqlite3.connect(tmp_path / "nemo.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the busy timeout
        await busy.migrations.advance()
        holder.execute("ROLLBACK")
        assert _migrations(plane)[0].phase == MigrationPhase.CLEANING.value

        await busy.settle(lambda: not any(r.id == source.id for r in busy.replicas("web")))
    finally:
        holder.close()
        await busy.resources.close()
        busy.db.dispose()
    assert [m.phase for m in _migrations(plane)] == [MigrationPhase.COMPLETED.value]
    assert [r.cluster != source.cluster and r.desired for r in plane.replicas("web")] == [True]
    assert list(plane.hosted("web")) == [plane.replicas("web")[0].cluster]


async def test_a_move_failed_after_the_switch_leaves_exactly_one_replica_running(
    make_plane: Callable[[int], Plane], tmp_path: Path
) -> None:
    # A step past the switch that fails for a real reason (here the store refuses the cleaning's event) used to
    # mark the move Failed with the source still desired: it ran beside its replacement for good.
    plane = make_plane(10)
    source = await _drain_the_one_replica(plane, "web")
    store = sqlite3.connect(tmp_path / "nemo.db", isolation_level=None)
    try:
        store.execute(
            "CREATE TRIGGER refuse_cleaning BEFORE INSERT ON events WHEN NEW.kind = 'replica.replaced' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the store'); END"
        )
        await plane.settle(lambda: bool(_migrations(plane)) and MigrationPhase(_migrations(plane)[0].phase).final)
        [failed] = _migrations(plane)
        assert failed.phase == MigrationPhase.FAILED.value
        assert "refused by the store" in failed.message
        assert failed.source_replica in failed.message and failed.target_replica in failed.message

        await plane.settle(lambda: source.cluster not in plane.hosted("web"))
        [serving] = plane.replicas("web")
        assert (serving.id, serving.desired) == (failed.target_replica, True)
        assert list(plane.hosted("web")) == [serving.cluster]
    finally:
        store.close()


async def test_a_replica_on_a_not_ready_node_moves_through_a_migration(make_plane: Callable[[int], Plane]) -> None:
    plane = make_plane(10)
    plane.apply(_workload("web"))
    await plane.settle(lambda: plane.running("web"))
    source = plane.replicas("web")[0]
    plane.cluster(source.cluster).not_ready.add(source.node)

    def moved() -> bool:
        now = plane.replicas("web")
        return len(now) == 3 and all((r.cluster, r.node) != (source.cluster, source.node) for r in now)

    await plane.settle(moved)
    [move] = _migrations(plane)
    assert (move.source_replica, move.reason, move.phase) == (source.id, "not ready", "Completed")
    assert move.target_node != source.node


async def test_a_stateful_replica_whose_state_cannot_be_handed_over_is_replaced_without_it(
    make_plane: Callable[[int], Plane],
) -> None:
    # The in-memory clusters have no state hand-off: the drain's migrations roll back, and once the attempts are
    # spent the reschedule path replaces the replica with a fresh one (saying so) rather than leaving it there.
    plane = make_plane(10)
    plane.apply(_workload("db", replicas=1, stateful=True))
    await plane.settle(lambda: plane.running("db"))
    [source] = plane.replicas("db")
    with plane.db.transaction() as s:
        clusters.set_schedulable(s, source.cluster, cordoned=True, draining=True)

    for attempt in range(1, EVACUATION_ATTEMPTS + 1):  # a settle per attempt: it plans, fails the hand-off, rolls back
        await plane.settle(lambda n=attempt: len(_migrations(plane)) == n)
    await plane.settle(lambda: [r.cluster != source.cluster for r in plane.replicas("db")] == [True])
    moves = _migrations(plane)
    assert len(moves) == EVACUATION_ATTEMPTS
    assert {(m.reason, m.phase) for m in moves} == {("drained", MigrationPhase.ROLLED_BACK.value)}
    assert all("cannot hand application state over" in m.message for m in moves)
    with plane.db.transaction() as s:
        found = events.history(s, workload_subject("default", "db"), limit=100)
        rescheduled = [e.message for e in found if e.kind == EventKind.REPLICA_RESCHEDULED]
    assert len(rescheduled) == EVACUATION_ATTEMPTS + 1 and "no state hand-off" in rescheduled[-1]  # one per move
    assert plane.phase("db") == WorkloadPhase.RUNNING.value


async def test_replicas_of_a_silent_cluster_are_replaced_and_removed_when_it_answers(
    make_plane: Callable[[int], Plane],
) -> None:
    plane = make_plane(10)
    plane.apply(_workload("web"))
    await plane.settle(lambda: plane.running("web"))
    silent = plane.replicas("web")[0].cluster
    plane.cluster(silent).reachable = False

    await plane.engine.reconcile_once()
    with plane.db.transaction() as s:
        assert clusters.get_cluster(s, silent).phase == "NotReady"
    # A replica on a cluster that does not answer may be dead: the workload does not count it as serving.
    assert plane.phase("web") == WorkloadPhase.DEGRADED.value

    await plane.settle(lambda: plane.running("web"))
    current = [r for r in plane.replicas("web") if r.desired]
    assert len(current) == 3 and all(r.cluster != silent for r in current)
    assert silent in plane.hosted("web")  # it could not be told yet

    plane.cluster(silent).reachable = True
    await plane.settle(lambda: silent not in plane.hosted("web") and len(plane.replicas("web")) == 3)
    assert plane.phase("web") == WorkloadPhase.RUNNING.value


async def test_a_refused_replica_is_stored_rejected_reported_once_and_never_resent(
    make_plane: Callable[[int], Plane],
) -> None:
    plane = make_plane(10)
    await plane.engine.reconcile_once()  # opens the clusters
    for cluster in plane.memory.clusters.values():
        cluster.refused.add("default/imaged")
    plane.apply(_workload("imaged", replicas=1))

    def rejected() -> bool:
        return [r.phase for r in plane.replicas("imaged")] == [ReplicaPhase.REJECTED.value]

    await plane.settle(rejected)
    (replica,) = plane.replicas("imaged")
    assert "refused the replica" in replica.message and replica.desired
    assert plane.phase("imaged") == WorkloadPhase.DEPLOYING.value
    with plane.db.transaction() as s:  # what the API and `nemo workload get` show
        row = workloads.get_workload(s, "default", "imaged")
        shown = workloads.to_workload_status(row, workloads.replicas_by_workload(s, [row.id])[row.id])
    assert [(r.phase, r.message) for r in shown.replicas] == [(ReplicaPhase.REJECTED, replica.message)]

    def sends() -> int:
        return sum(c.ensured.count(replica.id) for c in plane.memory.clusters.values())

    for _ in range(3):
        await plane.engine.reconcile_once()
    assert sends() == 1
    # The state is in the store: a restarted control plane neither resends it nor reports it again.
    restarted = plane.restarted()
    for _ in range(3):
        await restarted.engine.reconcile_once()
    assert sends() == 1
    assert plane.kinds("imaged").count(EventKind.REPLICA_REJECTED) == 1
    assert [r.phase for r in plane.replicas("imaged")] == [ReplicaPhase.REJECTED.value]
    assert plane.phase("imaged") == WorkloadPhase.DEPLOYING.value


async def test_one_replica_failing_unexpectedly_holds_back_no_other_replica_of_its_cluster(
    make_plane: Callable[[int], Plane],
) -> None:
    plane = make_plane(1)
    await plane.engine.reconcile_once()  # opens the cluster
    cluster = plane.cluster("c0000")
    cluster.failing.add("default/broken")
    plane.apply(_workload("broken", replicas=1))
    await plane.engine.reconcile_once()
    (broken,) = plane.replicas("broken")
    plane.apply(_workload("web", replicas=2))  # an unrelated workload on the same cluster, sent after the broken one

    await plane.settle(lambda: plane.running("web"))
    assert len(plane.hosted("web")["c0000"]) == 2
    # the failure is kept to its replica, said once, and the replica is retried (not stored as refused)
    for _ in range(3):
        await plane.engine.reconcile_once()
    (replica,) = plane.replicas("broken")
    assert "cluster c0000 failed on a replica of default/broken" in replica.message
    assert replica.phase == ReplicaPhase.SCHEDULED.value
    assert plane.kinds("broken").count(EventKind.WORKLOAD_FAILED) == 1
    assert cluster.ensured.count(broken.id) >= 5
    cluster.failing.clear()  # once the driver copes, the replica runs
    await plane.settle(lambda: plane.running("broken"))


async def test_a_new_version_replaces_the_old_one_without_a_gap(make_plane: Callable[[int], Plane]) -> None:
    plane = make_plane(10)
    plane.apply(_workload("web"))
    await plane.settle(lambda: plane.running("web"))
    plane.apply(_workload("web", env={"COLOUR": "blue"}))

    def serving() -> None:  # no gap: the old version runs until the new one does (the phase says Degraded meanwhile)
        assert sum(len(ids) for ids in plane.hosted("web").values()) >= 3

    def rolled_out() -> bool:
        ids = [rid for ids in plane.hosted("web").values() for rid in ids]
        return len(ids) == 3 and all(rid.startswith("web-v2-") for rid in ids) and len(plane.replicas("web")) == 3

    await plane.settle(rolled_out, check=serving)
    assert {(r.version, r.desired) for r in plane.replicas("web")} == {(2, True)}
    assert EventKind.DEPLOYMENT_ROLLED_OUT in plane.kinds("web")


async def test_a_deleted_workload_leaves_nothing_behind(make_plane: Callable[[int], Plane]) -> None:
    plane = make_plane(10)
    plane.apply(_workload("web"))
    plane.apply(_workload("huge", replicas=1, resources={"cpu": 64, "memory_mib": 64}))  # fits nowhere
    await plane.settle(lambda: plane.running("web") and plane.phase("huge") == WorkloadPhase.PENDING.value)
    with plane.db.transaction() as s:
        ids = {row.name: row.id for row in workloads.list_workloads(s)}
        for name in ("web", "huge"):
            workloads.mark_deleting(s, workloads.get_workload(s, "default", name))

    await plane.settle(lambda: plane.workload("web") is None and plane.workload("huge") is None)
    assert plane.hosted("web") == {}
    assert EventKind.WORKLOAD_DELETED in plane.kinds("web")
    # The engine's memory of them goes too.
    await plane.engine.reconcile_once()
    assert not set(ids.values()) & set(plane.engine.schedule.tried)
    assert not [rid for rid in plane.engine.observe.usage_written if rid.startswith(("web-", "huge-"))]


async def test_a_replica_bound_after_its_workload_was_deleted_is_released_and_the_deletion_ends(
    make_plane: Callable[[int], Plane],
) -> None:
    """On PostgreSQL a placement that read the queue before a deletion committed binds its replica after it: the
    deletion released nothing of it. The engine releases it too, so the deletion ends instead of waiting forever."""
    plane = make_plane(2)
    plane.apply(_workload("late", replicas=1))
    with plane.db.transaction() as s:  # the interleaving, in one transaction: deletion first, then the bind
        row = workloads.get_workload(s, "default", "late")
        workloads.mark_deleting(s, row)
        workloads.bind_replicas(s, row, [workloads.Binding(0, "c0000", "c0000-n0")], cpu=0.5, memory_mib=64)
    await plane.settle(lambda: plane.workload("late") is None)
    assert plane.hosted("late") == {}
    assert EventKind.WORKLOAD_DELETED in plane.kinds("late")
    with plane.db.transaction() as s:  # the node's accounting is given back once, not twice
        node = s.scalar(select(NodeRow).where(NodeRow.name == "c0000-n0"))
        assert node is not None and node.allocated_cpu == 0.0 and node.allocated_memory_mib == 0


async def test_a_node_reported_not_ready_takes_no_new_replica(make_plane: Callable[[int], Plane]) -> None:
    plane = make_plane(10)
    await plane.engine.reconcile_once()  # opens the clusters
    for cluster in plane.memory.clusters.values():
        cluster.not_ready.add(f"{cluster.spec.name}-n0")
    await plane.engine.reconcile_once()  # the heartbeat stores it
    plane.apply(_workload("web"))

    await plane.settle(lambda: plane.running("web"))
    assert {r.node.endswith("-n1") for r in plane.replicas("web")} == {True}
    with plane.db.transaction() as s:
        nodes = {n.name: n.ready for n in clusters.get_cluster(s, "c0000").nodes}
    assert nodes == {"c0000-n0": False, "c0000-n1": True}


async def test_a_workload_that_fits_nowhere_is_remembered_only_while_queued(
    make_plane: Callable[[int], Plane],
) -> None:
    plane = make_plane(10)
    plane.apply(_workload("huge", replicas=1, resources={"cpu": 64, "memory_mib": 64}))
    await plane.settle(lambda: plane.phase("huge") == WorkloadPhase.PENDING.value)
    await plane.engine.reconcile_once()
    assert len(plane.engine.schedule.tried) == 1  # not tried again until the inventory changes
    kinds = plane.kinds("huge")
    await plane.engine.reconcile_once()
    assert plane.kinds("huge") == kinds
    plane.apply(_workload("huge", replicas=1))  # a version that fits
    await plane.settle(lambda: plane.running("huge"))
    assert plane.engine.schedule.tried == {}


async def test_a_placement_that_failed_is_tried_again_though_nothing_changed(
    make_plane: Callable[[int], Plane],
) -> None:
    # The database refuses the decision once (a trigger, as a busy or failing database would): the workload
    # must not wait for an inventory change that may never come (a drain would leave its replicas in place).
    plane = make_plane(10)
    with plane.db.transaction() as s:
        s.execute(
            text(
                "CREATE TRIGGER refuse_decisions BEFORE INSERT ON placement_decisions "
                "BEGIN SELECT RAISE(ABORT, 'decisions refused'); END"
            )
        )
    plane.apply(_workload("web"))
    await plane.engine.reconcile_once()
    with plane.db.transaction() as s:
        row = s.scalar(select(WorkloadRow).where(WorkloadRow.name == "web"))
        assert row is not None and "decisions refused" in row.message
    assert plane.replicas("web") == []
    with plane.db.transaction() as s:
        s.execute(text("DROP TRIGGER refuse_decisions"))
    await plane.settle(lambda: plane.running("web"))
    assert EventKind.WORKLOAD_FAILED in plane.kinds("web")


async def test_one_workload_failing_its_placement_holds_back_none_placed_in_the_same_pass(
    make_plane: Callable[[int], Plane],
) -> None:
    # The pass places its queue together while none fails; this one's decision is refused (a trigger), after the
    # first workload's writes and before the last's: both are placed in this very pass, each decided once, and the
    # nodes account exactly the replicas bound to them.
    plane = make_plane(10)
    for name in ("first", "bad", "last"):
        plane.apply(_workload(name))
    with plane.db.transaction() as s:
        bad = s.scalar(select(WorkloadRow.id).where(WorkloadRow.name == "bad"))
        s.execute(
            text(
                "CREATE TRIGGER refuse_bad BEFORE INSERT ON placement_decisions "
                f"WHEN NEW.workload_id = {int(bad or 0)} BEGIN SELECT RAISE(ABORT, 'decisions refused'); END"
            )
        )
    await plane.engine.reconcile_once()
    assert [len(plane.replicas(name)) for name in ("first", "bad", "last")] == [3, 0, 3]
    assert EventKind.WORKLOAD_FAILED in plane.kinds("bad")
    assert [plane.kinds(name).count(EventKind.PLACEMENT_DECIDED) for name in ("first", "last")] == [1, 1]
    with plane.db.transaction() as s:
        bound: dict[tuple[str, str], float] = {}
        for r in s.scalars(select(ReplicaRow).where(ReplicaRow.desired.is_(True))):
            bound[(r.cluster, r.node)] = bound.get((r.cluster, r.node), 0.0) + r.cpu_request
        held = s.execute(select(ClusterRow.name, NodeRow.name, NodeRow.allocated_cpu).join(NodeRow)).all()
        assert {(c, n): cpu for c, n, cpu in held if cpu} == bound


async def test_removing_a_cluster_forgets_its_replicas_in_the_engine_too(make_plane: Callable[[int], Plane]) -> None:
    plane = make_plane(10)
    plane.apply(_workload("web"))
    await plane.settle(lambda: plane.running("web"))
    gone = plane.replicas("web")[0]
    assert gone.id in plane.engine.observe.usage_written
    with plane.db.transaction() as s:
        clusters.remove_cluster(s, gone.cluster)

    await plane.settle(lambda: plane.running("web") and gone.id not in {r.id for r in plane.replicas("web")})
    assert all(r.cluster != gone.cluster for r in plane.replicas("web"))
    assert gone.id not in plane.engine.observe.usage_written
