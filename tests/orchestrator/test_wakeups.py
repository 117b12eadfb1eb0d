"""The control plane's loops wake on this process's commits: with their fallback poll at an hour, an event is still
published, reacted to, and an injected fault's end is recorded (the poll would not have run in the test's time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session
from tests.orchestrator.test_reactions import CRASHED, crash, until

from nemo_kernel.config import Settings
from nemo_kernel.domain import Event, EventKind, FaultSpec
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.orchestrator.reactions import Reactions
from nemo_kernel.store import Database, events
from nemo_kernel.store.tables import EventRow

HOUR = 3600.0


def _sim(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "driver": "sim",
        "tier": "edge",
        "region": "eu-south",
        "country": "ES",
        "sim": {"start_delay_s": 0.2, "seed": 1},
        "nodes": [{"name": f"{name}-n0", "cpu": 4, "memory_mib": 4096}],
    }


def _settings(tmp_path: Path, clusters: list[dict[str, Any]]) -> Settings:
    path = tmp_path / "clusters.yaml"
    path.write_text(yaml.safe_dump({"clusters": clusters}))
    # Every fallback poll an hour away: only the wake-ups can make these tests pass.
    return Settings(
        data_dir=tmp_path / "data",
        clusters_file=path,
        store_poll_interval=HOUR,
        metrics_interval=0,
        gateway_enabled=False,
    )


def _published(plane: ControlPlane, event_id: int) -> bool:
    with plane.db.snapshot() as s:
        return bool(s.scalar(select(EventRow.published).where(EventRow.id == event_id)))


async def test_an_event_is_published_and_reacted_to_without_a_poll(tmp_path: Path) -> None:
    calls: list[int] = []

    def restart(s: Session, event: Event) -> None:
        calls.append(event.id)

    registry = Reactions()
    registry.on(CRASHED, name="restart")(restart)
    plane = ControlPlane(_settings(tmp_path, []), reactions=registry)
    await plane.start()
    try:
        first = crash(plane.db, "a-0")  # may be found by the loops' first passes
        await until(lambda: calls == [first] and _published(plane, first), "the first event handled")
        second = crash(plane.db, "b-0")  # the loops now wait an hour, unless woken
        await until(lambda: calls == [first, second], "the reaction to the second event")
        await until(lambda: _published(plane, second), "the second event published")
    finally:
        await plane.stop()


async def test_an_injected_fault_ends_on_time_without_a_poll(tmp_path: Path) -> None:
    plane = ControlPlane(_settings(tmp_path, [_sim("sim-a")]))
    await plane.start()
    try:
        await until(lambda: plane.resources.driver("sim-a") is not None, "the sim cluster managed")
        fault = await plane.commands.faults.inject("sim-a", FaultSpec(kind="partition", for_s=1))

        def ended() -> bool:
            with plane.db.snapshot() as s:
                kinds = [e.kind for e in events.history(s, events.cluster_subject("sim-a"))]
            return EventKind.CLUSTER_FAULT_ENDED in kinds

        await until(ended, f"the end of fault {fault.id} recorded")
        assert plane.commands.faults.seconds_to_next_end() == float("inf")
    finally:
        await plane.stop()


async def test_an_event_another_process_commits_is_published_on_the_poll(tmp_path: Path) -> None:
    # The loops skip a poll while nothing was committed since their last idle pass (SQLite's commit counter): a
    # commit through another connection, with no wake-up of this process, must still be seen on the next poll.
    settings = _settings(tmp_path, []).model_copy(update={"store_poll_interval": 0.2})
    plane = ControlPlane(settings)
    await plane.start()
    other = Database(settings.resolved_database_url())  # another process's store: it wakes none of our loops
    try:
        first = crash(plane.db, "a-0")
        await until(lambda: _published(plane, first), "the first event published")
        second = crash(other, "b-0")
        await until(lambda: _published(plane, second), "the other process's event published on a poll")
    finally:
        other.dispose()
        await plane.stop()
