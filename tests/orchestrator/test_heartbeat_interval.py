"""NEMO_HEARTBEAT_INTERVAL: a quiet cluster is asked for its report once per interval, not on every reconcile pass,
while what a user waits for (a replica sent to a cluster becoming Running, a silent cluster becoming NotReady) is
still seen at once.

In-process: a :class:`ControlPlane` on SQLite in ``tmp_path``, passes driven with ``engine.reconcile_once()``, its
``driver: sim`` clusters held in memory (:class:`~tests.orchestrator.fakes.MemoryProvider`), which count the reports
they were asked for. The interval is an hour, so every ask the tests see comes from a rule other than the interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.orchestrator.fakes import MemoryProvider

from nemo_kernel.config import Settings
from nemo_kernel.domain import ClusterPhase, ClusterSpec, DriverKind, WorkloadDescriptor, WorkloadPhase
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.store import clusters, workloads

HOUR = 3600.0


def _cluster(name: str) -> ClusterSpec:
    return ClusterSpec.model_validate(
        {
            "name": name,
            "driver": "sim",
            "tier": "edge",
            "region": "eu-south",
            "country": "ES",
            "nodes": [{"name": "n1", "cpu": 4.0, "memory_mib": 4096}],
        }
    )


def _workload(name: str) -> WorkloadDescriptor:
    return WorkloadDescriptor.model_validate(
        {"name": name, "deployment": {"command": ["app"], "replicas": 1, "ports": []}}
    )


async def _plane(tmp_path: Path, memory: MemoryProvider, heartbeat_timeout: float) -> ControlPlane:
    listed = tmp_path / "clusters.yaml"
    listed.write_text(yaml.safe_dump({"clusters": []}))
    settings = Settings(
        data_dir=tmp_path / "data",
        clusters_file=listed,
        heartbeat_interval=HOUR,
        heartbeat_timeout=heartbeat_timeout,
        resync_interval=HOUR,  # only the first pass is full
    )
    plane = ControlPlane(settings, providers={DriverKind.SIM: memory})
    await asyncio.to_thread(plane.db.migrate)
    with plane.db.transaction() as s:
        for name in ("a", "b", "c"):
            clusters.add_cluster(s, _cluster(name))
    return plane


@pytest.fixture
def memory() -> MemoryProvider:
    return MemoryProvider()


@pytest.fixture
async def plane(tmp_path: Path, memory: MemoryProvider) -> AsyncIterator[ControlPlane]:
    """Three memory clusters; a heartbeat interval of an hour and a timeout of an hour."""
    cp = await _plane(tmp_path, memory, heartbeat_timeout=2 * HOUR)
    try:
        yield cp
    finally:
        await cp.resources.close()
        cp.db.dispose()


def _asked(memory: MemoryProvider) -> dict[str, int]:
    return {name: driver.asked for name, driver in memory.clusters.items()}


async def _passes_until(plane: ControlPlane, condition: Callable[[], Any], most: int, what: str) -> int:
    """Reconcile pass after pass until ``condition()`` holds; how many passes it took (at most ``most``)."""
    for n in range(1, most + 1):
        await plane.engine.reconcile_once()
        if await asyncio.to_thread(condition):
            return n
    raise AssertionError(f"not within {most} passes: {what}")


def _workload_phase(plane: ControlPlane, name: str) -> str:
    with plane.db.snapshot() as s:
        return workloads.get_workload(s, "default", name).phase


def _cluster_phase(plane: ControlPlane, name: str) -> str:
    with plane.db.snapshot() as s:
        return clusters.get_cluster(s, name).phase


async def test_a_quiet_cluster_is_not_asked_before_its_interval(plane: ControlPlane, memory: MemoryProvider) -> None:
    plane.intake.apply(_workload("web"))
    await _passes_until(plane, lambda: _workload_phase(plane, "web") == WorkloadPhase.RUNNING.value, 10, "web Running")
    # the rollout's cluster is asked once more after the replica was sent; then every cluster is quiet
    await plane.engine.reconcile_once()
    before = _asked(memory)
    ensured = {name: list(d.ensured) for name, d in memory.clusters.items()}

    for _ in range(5):
        await plane.engine.reconcile_once()

    assert _asked(memory) == before
    # the passes worked from the last reports: nothing was sent again, and the workload is still Running
    assert {name: d.ensured for name, d in memory.clusters.items()} == ensured
    assert _workload_phase(plane, "web") == WorkloadPhase.RUNNING.value


async def test_a_replica_sent_to_a_cluster_is_seen_running_within_passes(
    plane: ControlPlane, memory: MemoryProvider
) -> None:
    await plane.engine.reconcile_once()  # the first, full pass: every cluster answered once
    for driver in memory.clusters.values():
        driver.starting_for = 2  # a replica reports Starting to two heartbeats before it is Running
    before = _asked(memory)

    plane.intake.apply(_workload("web"))
    await _passes_until(plane, lambda: _workload_phase(plane, "web") == WorkloadPhase.RUNNING.value, 8, "web Running")

    asked = {name: n - before[name] for name, n in _asked(memory).items()}
    (target,) = [name for name, d in memory.clusters.items() if d.replicas]
    # the cluster the replica was sent to was asked on every pass until it ran (not once an hour); the others never
    assert asked[target] >= 3
    assert {name: n for name, n in asked.items() if name != target} == dict.fromkeys({"a", "b", "c"} - {target}, 0)


async def test_a_silent_cluster_is_not_ready_after_the_timeout_despite_a_long_interval(
    tmp_path: Path, memory: MemoryProvider
) -> None:
    plane = await _plane(tmp_path, memory, heartbeat_timeout=1.0)
    try:
        await plane.engine.reconcile_once()
        assert _cluster_phase(plane, "b") == ClusterPhase.READY.value
        memory.clusters["b"].reachable = False

        # an hour's interval would leave it Ready for an hour: the timeout bounds how long a quiet cluster goes
        # unasked, so it is NotReady about a second after it last answered
        deadline = time.monotonic() + 30
        while _cluster_phase(plane, "b") != ClusterPhase.NOT_READY.value:
            assert time.monotonic() < deadline, "cluster b still not NotReady after 30 s"
            await plane.engine.reconcile_once()
            await asyncio.sleep(0.05)  # passes a little apart, as the reconcile loop runs them; not a sync
        assert {_cluster_phase(plane, n) for n in ("a", "c")} == {ClusterPhase.READY.value}
    finally:
        await plane.resources.close()
        plane.db.dispose()


def _stored_heartbeat(plane: ControlPlane, name: str) -> datetime | None:
    with plane.db.snapshot() as s:
        return clusters.get_cluster(s, name).last_heartbeat


async def test_answered_heartbeats_commit_nothing_and_the_view_shows_the_last_one(
    tmp_path: Path, memory: MemoryProvider
) -> None:
    # a timeout of a second: each cluster is asked every half second, as a quiet cluster is every few seconds
    plane = await _plane(tmp_path, memory, heartbeat_timeout=1.0)
    try:
        await plane.engine.reconcile_once()
        first = _stored_heartbeat(plane, "a")
        assert first is not None  # its first answer to this control plane is stored at once
        commits = plane.db.commit_watch()
        try:
            before = commits.look()
            asked = memory.clusters["a"].asked
            deadline = time.monotonic() + 30
            while memory.clusters["a"].asked < asked + 2:
                assert time.monotonic() < deadline, "cluster a not asked again within 30 s"
                await plane.engine.reconcile_once()
                await asyncio.sleep(0.05)  # passes a little apart, as the reconcile loop runs them; not a sync
            # answered heartbeats of Ready clusters wrote nothing: no commit woke the gateway or any other watcher
            assert commits.look() == before
        finally:
            commits.close()
        # the view shows when the cluster last answered, though the stored stamp is a minute apart
        shown = plane.views.clusters.get("a").last_heartbeat
        assert shown is not None and shown > first
        assert _stored_heartbeat(plane, "a") == first

        # a transition is stored at once: NotReady, then Ready again with a fresh stamp
        memory.clusters["b"].reachable = False
        await _passes_until_phase(plane, "b", ClusterPhase.NOT_READY)
        silent_since = _stored_heartbeat(plane, "b")
        memory.clusters["b"].reachable = True
        await _passes_until_phase(plane, "b", ClusterPhase.READY)
        back = _stored_heartbeat(plane, "b")
        assert silent_since is not None and back is not None and back > silent_since
    finally:
        await plane.resources.close()
        plane.db.dispose()


async def _passes_until_phase(plane: ControlPlane, name: str, phase: ClusterPhase) -> None:
    deadline = time.monotonic() + 30
    while _cluster_phase(plane, name) != phase.value:
        assert time.monotonic() < deadline, f"cluster {name} still not {phase.value} after 30 s"
        await plane.engine.reconcile_once()
        await asyncio.sleep(0.05)  # passes a little apart, as the reconcile loop runs them; not a sync
