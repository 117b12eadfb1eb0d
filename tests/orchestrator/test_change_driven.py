"""Change-driven passes over ``sim`` clusters (the real engine and resource manager, SQLite in ``tmp_path``): an
idle pass costs a constant number of reads and no write, a change on one cluster is still seen within one pass, a
workload applied while idle is placed and sent at once, and what changed behind the engine's back is picked up at
the resync."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
import pytest_asyncio
from sqlalchemy import event as sql_events
from sqlalchemy import select, text
from tests.clock import Clock
from tests.orchestrator.conftest import STEP_S, SimEngine, generated_fleet_store, sim_workload

from nemo_kernel.clusters import SupportsFaultInjection
from nemo_kernel.config import Settings
from nemo_kernel.domain import EventKind, FaultSpec, WorkloadPhase
from nemo_kernel.orchestrator.reconcile import OrchestrationEngine
from nemo_kernel.store import Database, events, workloads
from nemo_kernel.store.events import workload_subject
from nemo_kernel.store.tables import ReplicaRow, WorkloadRow

FLEET = 40


class Plane(SimEngine):
    """The engine and its resource manager over one simulation of a generated fleet."""

    def __init__(self, db: Database, settings: Settings) -> None:
        super().__init__(db, settings, Clock())

    def rows(self, name: str) -> list[ReplicaRow]:
        with self.db.snapshot() as s:
            wid = s.scalar(select(WorkloadRow.id).where(WorkloadRow.name == name))
            found = list(s.scalars(select(ReplicaRow).where(ReplicaRow.workload_id == wid, ReplicaRow.desired)))
            s.expunge_all()
            return sorted(found, key=lambda r: r.index)

    def kinds(self, name: str) -> list[str]:
        with self.db.snapshot() as s:
            return [e.kind for e in events.history(s, workload_subject("default", name))]


async def _plane(tmp_path_factory: pytest.TempPathFactory) -> Plane:
    root = tmp_path_factory.mktemp("change")
    db = generated_fleet_store(root, FLEET, seed=5)
    # a long heartbeat timeout: the batched last_heartbeat stamp is due once in the test, on the first pass; every
    # pass asks every cluster (the test drives passes, not time: test_heartbeat_interval.py holds the interval)
    settings = Settings(
        data_dir=root / "data",
        heartbeat_timeout=3600,
        heartbeat_interval=0,
        driver_timeout=5.0,
        resync_interval=3600,
    )
    return Plane(db, settings)


@pytest_asyncio.fixture
async def plane(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Plane]:
    """A fleet whose resync is far away: every pass after the first is change-driven."""
    p = await _plane(tmp_path_factory)
    yield p
    await p.resources.close()
    p.db.dispose()


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """Every SQL statement run on ``db`` inside the block."""
    seen: list[str] = []

    def count(*args: object) -> None:
        seen.append(str(args[2]))

    sql_events.listen(db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sql_events.remove(db.engine, "before_cursor_execute", count)


async def _running_fleet(plane: Plane) -> None:
    for w in range(4):
        plane.apply(f"w{w}", 10)
    await plane.settle(lambda: all(plane.phase(f"w{w}") == WorkloadPhase.RUNNING.value for w in range(4)))
    # the engine's own writes moved the store's revision: one quiet pass sees that nothing is left to do
    await plane.engine.reconcile_once()


async def test_an_idle_pass_reads_and_writes_nothing(plane: Plane) -> None:
    await _running_fleet(plane)
    with statements(plane.db) as seen:
        await plane.engine.reconcile_once()
    # not one statement: nothing was committed since the last pass, so neither the store's revision nor the
    # clusters' is read again (SQLite's commit counter, outside the engine's connections), and nothing is written
    assert seen == [], seen
    # a commit by anyone (an event recorded behind the engine's back) is seen by the next pass, which reads the
    # store's revision again
    with plane.db.transaction() as s:
        events.record_event(s, EventKind.WORKLOAD_UPDATED, workload_subject("default", "w0"), "touched")
    with statements(plane.db) as seen:
        await plane.engine.reconcile_once()
    reads = [q for q in seen if q.split()[0].upper() != "BEGIN"]
    assert any("max(events.id)" in q.lower() for q in reads), seen
    assert not [q for q in seen if q.split()[0].upper() in {"INSERT", "UPDATE", "DELETE"}], seen


async def test_a_crash_on_an_idle_cluster_is_observed_within_one_pass(plane: Plane) -> None:
    await _running_fleet(plane)
    victim = plane.rows("w0")[0]
    driver = plane.resources.driver(victim.cluster)
    assert isinstance(driver, SupportsFaultInjection)
    await driver.inject_fault(FaultSpec(kind="node_down", node=victim.node, for_s=STEP_S))

    await plane.engine.reconcile_once()
    crashed = next(r for r in plane.rows("w0") if r.id == victim.id)
    assert crashed.phase == "Crashed"
    assert EventKind.REPLICA_CRASHED in plane.kinds("w0")

    plane.clock.now += STEP_S + 1  # the node is back: the simulation starts the replica again
    await plane.engine.reconcile_once()
    back = next(r for r in plane.rows("w0") if r.id == victim.id)
    assert back.restarts == 1 and back.phase in {"Starting", "Running"}


async def test_a_workload_applied_while_idle_is_placed_and_sent_in_one_pass(plane: Plane) -> None:
    await _running_fleet(plane)
    plane.apply("late", 3)
    await plane.engine.reconcile_once()
    rows = plane.rows("late")
    assert len(rows) == 3 and all(r.phase == "Starting" for r in rows)
    assert {r.id for r in rows} <= {rid for c in plane.sim.simulation.clusters.values() for rid in c.replicas}
    await plane.settle(lambda: plane.phase("late") == WorkloadPhase.RUNNING.value)


async def test_a_row_changed_behind_the_engines_back_is_picked_up_at_the_resync(plane: Plane) -> None:
    await _running_fleet(plane)
    victim = plane.rows("w1")[0].id

    def crash_behind_its_back() -> None:
        with plane.db.transaction() as s:  # no event, no cluster change: nothing a change-driven pass looks at
            s.execute(text("UPDATE replicas SET phase = 'Crashed' WHERE id = :id"), {"id": victim})

    def phase() -> str:
        return next(r.phase for r in plane.rows("w1") if r.id == victim)

    crash_behind_its_back()
    for _ in range(2):
        await plane.engine.reconcile_once()
    assert phase() == "Crashed"  # change-driven passes did not look

    # a new engine (a restart) starts with a full pass, then resyncs every NEMO_RESYNC_INTERVAL
    engine = OrchestrationEngine(plane.db, plane.resources, plane.settings.model_copy(update={"resync_interval": 1.0}))
    await engine.reconcile_once()
    assert phase() == "Running"
    crash_behind_its_back()
    deadline = time.monotonic() + 30
    while phase() != "Running":
        assert time.monotonic() < deadline, "the resync never ran"
        await engine.reconcile_once()  # passes until the resync reads every cluster's whole report


async def test_the_fleets_whole_reports_are_spread_over_the_resync_interval(plane: Plane) -> None:
    # Every cluster sends its whole report once per interval, the safety net; all of them in one round (as a full
    # pass asked them) would stall the pass that holds it, at 1,000 clusters for seconds.
    resync = 4.0
    await plane.resources.sync_drivers()
    first = await plane.resources.heartbeat(resync=resync)
    assert len(first.full) == FLEET  # first answers are whole
    again: Counter[str] = Counter()  # cluster -> whole reports since the first
    largest = 0
    deadline = time.monotonic() + 120
    while len(again) < FLEET:
        assert time.monotonic() < deadline, f"only {len(again)} clusters resynced"
        await asyncio.sleep(0.05)  # the pace of the rounds, not a wait for a condition
        beat = await plane.resources.heartbeat(resync=resync)
        assert beat.asked == set(plane.resources.managed())  # heartbeat interval 0: everyone, every round
        largest = max(largest, len(beat.full))
        again.update(beat.full)
    assert largest <= FLEET // 2, f"{largest} of {FLEET} whole reports in one round"
    # not one on every round: the second comes one to two intervals after the first, the third one interval later
    assert max(again.values()) <= 2, again


async def test_a_replica_added_to_a_cluster_rewrites_none_of_its_other_replicas_usage(plane: Plane) -> None:
    await _running_fleet(plane)
    held = Counter(r.cluster for w in range(4) for r in plane.rows(f"w{w}"))
    host = held.most_common(1)[0][0]
    others = {r.id for w in range(4) for r in plane.rows(f"w{w}") if r.cluster == host}
    with plane.db.transaction() as s:
        s.execute(text("CREATE TABLE usage_writes (id TEXT)"))
        s.execute(
            text(
                "CREATE TRIGGER usage_written AFTER UPDATE OF cpu_percent ON replicas "
                "BEGIN INSERT INTO usage_writes VALUES (NEW.id); END"
            )
        )

    def written() -> set[str]:
        with plane.db.snapshot() as s:
            return set(s.scalars(text("SELECT id FROM usage_writes")))

    plane.engine.observe.usage_written.clear()  # every replica is due for a usage sample
    with plane.db.transaction() as s:
        workloads.apply_workload(s, sim_workload("late", 1, clusters=[host]))
    await plane.settle(lambda: plane.phase("late") == WorkloadPhase.RUNNING.value)
    # The host's report changed (a new replica), but what it says of the others is their earlier report's: their
    # stored samples stay, rather than one write per replica the cluster holds.
    assert not written() & others
    # A whole report carries every replica's usage as of now: stored.
    beat = await plane.resources.heartbeat(full=True)
    plane.engine.observe({host: beat.reports[host]}, beat.full)
    assert others <= written()
