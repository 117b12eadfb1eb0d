"""Reactions to stored events: exactly once per (reaction, event), in the reaction's own transaction, with retries,
an audit record per run, across restarts, and for events that commit out of id order (PostgreSQL)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import yaml
from sqlalchemy import event as sql_events
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from tests.conftest import migrated_database

from nemo_kernel.config import Settings
from nemo_kernel.domain import Event, EventKind, utcnow
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.orchestrator.reactions import Reactions, load_reactions, reactions
from nemo_kernel.orchestrator.reactions_dispatcher import ReactionDispatcher
from nemo_kernel.store import Database, events
from nemo_kernel.store.tables import EventRow, ReactionRunRow, ReactionWatermarkRow

CRASHED = EventKind.REPLICA_CRASHED


def crash(db: Database, replica: str) -> int:
    """Record a crash in its own transaction, as the engine does; returns the event id."""
    with db.transaction() as s:
        row = events.record_event(s, CRASHED, f"workload/default/{replica}", f"replica {replica} crashed")
        s.flush()
        return row.id


def reacting(name: str, calls: list[int], *, fail: bool = False) -> Callable[[Session, Event], None]:
    """A reaction that writes an event ``reacted/<name>/<event id>`` and records the call; raises after writing if
    ``fail``, so that the write is seen to roll back."""

    def react(s: Session, event: Event) -> None:
        calls.append(event.id)
        events.record_event(s, EventKind.WORKLOAD_UPDATED, f"reacted/{name}/{event.id}")
        if fail:
            raise RuntimeError(f"{name} cannot handle event {event.id}")

    return react


def written(db: Database, name: str, event_id: int) -> int:
    """How many writes reaction ``name`` committed for event ``event_id``."""
    with db.transaction() as s:
        return len(events.history(s, f"reacted/{name}/{event_id}"))


def run_of(db: Database, name: str, event_id: int) -> ReactionRunRow | None:
    with db.transaction() as s:
        return s.get(ReactionRunRow, (name, event_id))


async def drive(dispatcher: ReactionDispatcher, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Run passes until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await dispatcher.run_once()


async def until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Wait for ``condition``, checked between short pauses of the event loop (the plane's loops run meanwhile)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)  # yields to the plane's loops between checks of the condition


def test_the_registry_keys_frozen_reactions_by_kind() -> None:
    registry = Reactions()

    @registry.on(CRASHED, EventKind.REPLICA_REJECTED, retries=1)
    def restart(s: Session, event: Event) -> None: ...

    @registry.on(CRASHED, name="notify")
    def notify(s: Session, event: Event) -> None: ...

    first, second = registry.for_kind("replica.crashed")
    assert first.name == f"{__name__}.test_the_registry_keys_frozen_reactions_by_kind.<locals>.restart"
    assert (first.fn, first.retries, second.name, second.retries) == (restart, 1, "notify", 3)
    assert [r.name for r in registry.for_kind(EventKind.REPLICA_REJECTED)] == [first.name]
    assert registry.for_kind(EventKind.WORKLOAD_RUNNING) == ()
    with pytest.raises(ValueError, match="already registered"):
        registry.on(EventKind.CLUSTER_READY, name="notify")(notify)
    with pytest.raises(ValueError, match="at least one event kind"):
        registry.on()
    with pytest.raises(AttributeError):
        first.retries = 5  # type: ignore[misc]
    assert load_reactions() is reactions  # the default registry: the modules of REACTION_MODULES register on it


async def test_a_reaction_runs_once_per_event_and_writes_in_its_transaction(database: Database) -> None:
    registry = Reactions()
    calls: list[int] = []
    registry.on(CRASHED, name="restart")(reacting("restart", calls))
    dispatcher = ReactionDispatcher(database, registry)
    first, second = crash(database, "a-0"), crash(database, "b-0")
    with database.transaction() as s:
        events.record_event(s, EventKind.REPLICA_STARTED, "workload/default/a-0")  # not a subscribed kind

    assert await dispatcher.run_once() == 2
    assert await dispatcher.run_once() == 0
    third = crash(database, "a-0")
    assert await dispatcher.run_once() == 1

    assert calls == [first, second, third]
    for event_id in (first, second, third):
        assert written(database, "restart", event_id) == 1
        run = run_of(database, "restart", event_id)
        assert run is not None
        assert (run.status, run.attempts, run.error) == ("done", 1, "")
        assert run.started_at <= run.finished_at


async def test_an_idle_pass_reads_only_the_newest_event_id(database: Database) -> None:
    # An idle control plane polls the event log five times a second: when nothing was recorded since a pass that
    # handled everything, a pass is one statement, whatever the number of reactions; a new event is seen at once.
    registry = Reactions()
    calls: list[int] = []
    for name in ("restart", "audit", "notify"):
        registry.on(CRASHED, name=name)(reacting(name, calls))
    dispatcher = ReactionDispatcher(database, registry, full_pass=3600)
    crash(database, "a-0")
    assert await dispatcher.run_once() == 3
    await dispatcher.run_once()  # the reactions' own writes are events too: one more pass settles them

    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    sql_events.listen(database.engine, "before_cursor_execute", count)
    try:
        assert await dispatcher.run_once() == 0
        reads = [q for q in statements if q.lstrip().upper().startswith("SELECT")]
        assert len(reads) == 1 and "max(events.id)" in reads[0].lower(), statements
        newest = crash(database, "b-0")
        assert await dispatcher.run_once() == 3
    finally:
        sql_events.remove(database.engine, "before_cursor_execute", count)
    assert calls[-3:] == [newest] * 3


async def test_a_full_pass_writes_nothing_until_an_event_can_leave_the_window(database: Database) -> None:
    # Full passes (every 30 s when idle) move the watermarks past settled events older than the window: while the
    # events above a watermark are all younger than that, there is nothing to move and nothing to write.
    registry = Reactions()
    calls: list[int] = []
    for name in ("restart", "audit"):
        registry.on(CRASHED, name=name)(reacting(name, calls))
    dispatcher = ReactionDispatcher(database, registry, window=300, full_pass=0)
    crash(database, "a-0")
    await drive(dispatcher, lambda: len(calls) == 2, "both reactions")
    await dispatcher.run_once(full=True)  # the reactions' own writes are events too: one more pass settles them

    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    sql_events.listen(database.engine, "before_cursor_execute", count)
    try:
        for _ in range(3):
            assert await dispatcher.run_once(full=True) == 0
    finally:
        sql_events.remove(database.engine, "before_cursor_execute", count)
    writes = [q for q in statements if q.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE", "BEGIN IMM"))]
    assert writes == [] and not any("reaction_watermarks" in q for q in statements), statements
    # The same events with a window of zero: they are out of it at once, and the watermarks pass them.
    passing = ReactionDispatcher(database, registry, window=0, full_pass=0)
    await passing.run_once(full=True)
    with database.snapshot() as s:
        newest = s.scalar(select(func.max(EventRow.id)))
        marks = s.scalars(select(ReactionWatermarkRow.settled_through)).all()
    assert sorted(marks) == [newest, newest]


async def test_two_dispatchers_on_one_store_run_each_event_once(database: Database) -> None:
    registry = Reactions()
    calls: list[int] = []
    registry.on(CRASHED, name="restart")(reacting("restart", calls))
    crashed = [crash(database, f"r-{i}") for i in range(20)]
    first, second = ReactionDispatcher(database, registry), ReactionDispatcher(database, registry)
    done = await asyncio.gather(first.run_once(), second.run_once())
    assert sum(done) == 20  # the loser of a claim neither runs the handler nor counts it
    assert sorted(calls) == crashed
    assert [written(database, "restart", event_id) for event_id in crashed] == [1] * 20


async def test_a_second_claim_waits_for_the_running_one_then_leaves_the_event(postgres_url: str) -> None:
    registry = Reactions()
    calls: list[int] = []
    entered, release = threading.Event(), threading.Event()
    write = reacting("restart", calls)

    def slow(s: Session, event: Event) -> None:
        write(s, event)
        entered.set()
        assert release.wait(30)

    registry.on(CRASHED, name="restart")(slow)

    def waiting_on_locks() -> int:
        with psycopg.connect(postgres_url.replace("+psycopg", "")) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            return int(row[0]) if row else 0

    with migrated_database(postgres_url) as db:
        event_id = crash(db, "a-0")
        first = asyncio.create_task(ReactionDispatcher(db, registry).run_once())
        await until(entered.is_set, "the first dispatcher to run the reaction")
        second = asyncio.create_task(ReactionDispatcher(db, registry).run_once())
        await until(lambda: waiting_on_locks() == 1, "the second dispatcher's claim to wait for the first")
        release.set()
        assert (await first, await second) == (1, 0)
        assert calls == [event_id]
        assert written(db, "restart", event_id) == 1


async def test_a_failing_reaction_is_retried_then_recorded_failed_and_others_go_on(database: Database) -> None:
    registry = Reactions()
    flaky_calls: list[int] = []
    steady_calls: list[int] = []
    registry.on(CRASHED, name="flaky", retries=2)(reacting("flaky", flaky_calls, fail=True))
    registry.on(CRASHED, name="steady")(reacting("steady", steady_calls))
    dispatcher = ReactionDispatcher(database, registry, backoff=0.0)
    first = crash(database, "a-0")

    def failed(event_id: int) -> bool:
        run = run_of(database, "flaky", event_id)
        return run is not None and run.status == "failed"

    await dispatcher.run_once()
    second = crash(database, "b-0")  # recorded while the first is still being retried
    await drive(dispatcher, lambda: failed(first) and failed(second), "flaky to give up on both events")
    await dispatcher.run_once()

    assert flaky_calls.count(first) == flaky_calls.count(second) == 3  # 1 attempt + 2 retries, then never again
    assert steady_calls == [first, second]
    for event_id, replica in ((first, "a-0"), (second, "b-0")):
        assert written(database, "flaky", event_id) == 0  # rolled back with each attempt
        assert written(database, "steady", event_id) == 1
        run = run_of(database, "flaky", event_id)
        assert run is not None
        assert run.attempts == 3
        assert run.error == f"RuntimeError: flaky cannot handle event {event_id}"
        with database.transaction() as s:
            recorded = [e for e in events.history(s, f"workload/default/{replica}") if e.kind == "reaction.failed"]
        assert [e.data for e in recorded if e.data["event_id"] == event_id] == [
            {
                "reaction": "flaky",
                "event_id": event_id,
                "event_kind": "replica.crashed",
                "attempts": 3,
                "error": run.error,
            }
        ]


async def test_a_failure_on_a_failure_event_records_no_further_failure(database: Database) -> None:
    registry = Reactions()
    calls: list[int] = []
    registry.on(CRASHED, EventKind.REACTION_FAILED, name="broken", retries=0)(reacting("broken", calls, fail=True))
    dispatcher = ReactionDispatcher(database, registry, backoff=0.0)
    crash(database, "a-0")
    await drive(dispatcher, lambda: len(calls) == 2, "the reaction to its own failure event")
    for _ in range(3):
        await dispatcher.run_once()
    assert len(calls) == 2
    with database.transaction() as s:
        kinds = [e.kind for e in events.history(s, "workload/default/a-0")]
    assert kinds == ["replica.crashed", "reaction.failed"]


@pytest.mark.parametrize("window", [300.0, 0.0], ids=["inside-window", "watermark-moved"])
async def test_a_restarted_dispatcher_does_not_rerun_handled_events(database_url: str, window: float) -> None:
    calls: list[int] = []
    registry = Reactions()
    registry.on(CRASHED, name="restart")(reacting("restart", calls))
    with migrated_database(database_url) as db:
        dispatcher = ReactionDispatcher(db, registry, window=window)
        await dispatcher.run_once()  # the reaction's first sight: it starts at the events of the last window
        handled = [crash(db, "a-0"), crash(db, "b-0")]
        await dispatcher.run_once()
        assert calls == handled
        with db.transaction() as s:
            stored = s.get(ReactionWatermarkRow, "restart")
            newest = s.scalar(select(func.max(EventRow.id)))  # the reaction's own writes are events too
            assert stored is not None
            assert stored.settled_through == (newest if window == 0 else 0)  # it passes only events out of the window
        later = crash(db, "c-0")  # recorded while the control plane is down
    with migrated_database(database_url) as db:
        restarted = ReactionDispatcher(db, registry, window=window)
        assert await restarted.run_once() == 1
        assert await restarted.run_once() == 0
        assert calls == [*handled, later]
        assert [written(db, "restart", event_id) for event_id in calls] == [1, 1, 1]


async def test_a_new_reaction_starts_at_the_recent_events_not_the_whole_history(database: Database) -> None:
    with database.transaction() as s:
        old = events.record_event(s, CRASHED, "workload/default/a-0")
        old.created_at = utcnow() - timedelta(hours=1)
    recent = crash(database, "b-0")
    calls: list[int] = []
    registry = Reactions()
    registry.on(CRASHED, name="restart")(reacting("restart", calls))
    await ReactionDispatcher(database, registry).run_once()
    assert calls == [recent]


async def test_an_event_committed_late_with_a_lower_id_is_still_handled(postgres_url: str) -> None:
    calls: list[int] = []
    registry = Reactions()
    registry.on(CRASHED, name="restart")(reacting("restart", calls))
    with migrated_database(postgres_url) as db:
        dispatcher = ReactionDispatcher(db, registry)
        with db.transaction() as slow:
            late = events.record_event(slow, CRASHED, "workload/default/a-0")
            slow.flush()  # takes its id now, commits after the next event
            early = crash(db, "b-0")
            assert late.id < early
            assert await dispatcher.run_once() == 1
            assert calls == [early]
        await drive(dispatcher, lambda: calls == [early, late.id], "the late event")
        assert written(db, "restart", late.id) == 1


async def test_the_control_plane_runs_reactions_then_wakes_the_reconcile_loop(tmp_path: Path) -> None:
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    # Passes run at start and when woken: an hour between them leaves only the reaction's wake.
    settings = Settings(data_dir=tmp_path / "data", clusters_file=clusters, reconcile_interval=3600)
    reacted_at: list[float] = []
    calls: list[int] = []
    write = reacting("restart", calls)

    def restart(s: Session, event: Event) -> None:
        write(s, event)
        reacted_at.append(time.monotonic())

    registry = Reactions()
    registry.on(CRASHED, name="restart")(restart)
    plane = ControlPlane(settings, reactions=registry)
    await plane.start()
    try:
        await until(lambda: plane.last_pass is not None, "the first reconcile pass")
        event_id = crash(plane.db, "a-0")
        await until(lambda: bool(reacted_at) and (plane.last_pass or 0) > reacted_at[0], "a pass after the reaction")
        with plane.db.transaction() as s:
            run = s.scalars(select(ReactionRunRow)).one()
        assert (run.reaction, run.event_id, run.status) == ("restart", event_id, "done")
        assert written(plane.db, "restart", event_id) == 1
    finally:
        await plane.stop()
    assert calls == [event_id]
