"""Wake-ups instead of polls: the store's event wake-up and commit watch, on real databases."""

from __future__ import annotations

import asyncio
import threading

import pytest

from nemo_kernel.domain import EventKind
from nemo_kernel.store import Database, events
from nemo_kernel.store.signals import Wakeup

HOUR = 3600.0  # a wait this long only ends early through the signal under test


async def test_a_set_from_another_thread_wakes_the_waiting_loop() -> None:
    wakeup = Wakeup()
    waiting = asyncio.create_task(wakeup.wait(HOUR))
    await asyncio.sleep(0)  # let the task start waiting (the loop is captured by its first wait)
    thread = threading.Thread(target=wakeup.set)
    thread.start()
    assert await waiting is True
    thread.join()


async def test_a_set_before_the_wait_is_kept_once() -> None:
    wakeup = Wakeup()
    wakeup.set()
    assert await wakeup.wait(HOUR) is True
    assert await wakeup.wait(0.01) is False  # consumed: the next wait runs to its end


async def test_a_commit_that_records_an_event_sets_the_wakeup(database: Database) -> None:
    wakeup = database.event_wakeup()

    def record() -> None:
        with database.transaction() as s:
            events.record_event(s, EventKind.WORKLOAD_UPDATED, "workload/default/a")

    await asyncio.to_thread(record)
    assert await wakeup.wait(HOUR) is True


async def test_commits_without_events_and_rolled_back_events_set_nothing(database: Database) -> None:
    wakeup = database.event_wakeup()

    def no_event() -> None:
        with database.transaction() as s:
            events.mark_published(s, [1])

    def rolled_back() -> None:
        with database.transaction() as s:
            events.record_event(s, EventKind.WORKLOAD_UPDATED, "workload/default/a")
            s.flush()
            raise RuntimeError("refused")

    await asyncio.to_thread(no_event)
    with pytest.raises(RuntimeError):
        await asyncio.to_thread(rolled_back)
    assert await wakeup.wait(0.01) is False
    with database.transaction() as s:
        assert events.history(s, "workload/default/a") == []


def test_the_commit_watch_changes_with_each_commit_and_only_then(tmp_path: object) -> None:
    db = Database(f"sqlite:///{tmp_path}/nemo.db")
    db.migrate()
    watch = db.commit_watch()
    try:
        first = watch.look()
        assert first is not None
        assert watch.look() == first  # nobody committed
        with db.transaction() as s:
            events.record_event(s, EventKind.WORKLOAD_UPDATED, "workload/default/a")
        second = watch.look()
        assert second is not None and second != first
        with db.snapshot() as s:
            events.history(s, "workload/default/a")
        assert watch.look() == second  # reads are not commits
    finally:
        watch.close()
        db.dispose()


def test_the_commit_watch_cannot_tell_on_postgresql(postgres_url: str) -> None:
    db = Database(postgres_url)
    watch = db.commit_watch()
    try:
        assert watch.look() is None  # the gateway then reads on every poll, as before
    finally:
        watch.close()
        db.dispose()
