"""The findings loop of a real control plane: a replica burning its whole CPU request for longer than
NEMO_BOTTLENECK_FOR is one analytics.bottleneck event, then one analytics.bottleneck_cleared; the jump is one
analytics.anomaly; a steady node next to it is no finding at all.

In-process: a :class:`ControlPlane` on SQLite in ``tmp_path`` with a memory cluster, the workload applied through
its command, samples written into its embedded store, and cycles evaluated at chosen times with ``run_once(at=)``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from tests.orchestrator.fakes import MemoryProvider

from nemo_kernel.config import Settings
from nemo_kernel.domain import ClusterSpec, DriverKind, EventKind, WorkloadDescriptor
from nemo_kernel.metrics import Sample
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.orchestrator.findings import FindingsWatch

CLUSTER = {
    "name": "edge-a",
    "driver": "sim",
    "tier": "edge",
    "region": "eu-south",
    "country": "ES",
    "nodes": [{"name": "ea-1", "cpu": 4, "memory_mib": 4096}],
}
BURNER = {
    "name": "burner",
    "deployment": {"command": ["app"], "replicas": 1, "ports": [], "resources": {"cpu": 0.5, "memory_mib": 256}},
}
STEP = 5.0  # seconds between samples, as the collector's default


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    settings = Settings(data_dir=tmp_path / "data", clusters_file=clusters, bottleneck_for=60, findings_interval=15)
    cp = ControlPlane(settings, providers={DriverKind.SIM: MemoryProvider()})
    await asyncio.to_thread(cp.db.migrate)
    try:
        yield cp
    finally:
        await cp.resources.close()
        cp.db.dispose()


async def _running_replica(plane: ControlPlane) -> str:
    await asyncio.to_thread(plane.commands.clusters.add, ClusterSpec.model_validate(CLUSTER))
    await asyncio.to_thread(plane.commands.workloads.apply, WorkloadDescriptor.model_validate(BURNER))
    for _ in range(10):
        await plane.engine.reconcile_once()
        replicas = plane.views.workloads.status("default", "burner").replicas
        if replicas and replicas[0].phase == "Running":
            return replicas[0].id
    raise AssertionError("the replica never ran")


def _cpu(seconds: float) -> float:
    """Cores the replica burns ``seconds`` after the start: 0.05, then its whole request (0.5) for 5 minutes from
    20 minutes in, then 0.05 again."""
    return 0.5 if 1200 <= seconds < 1500 else 0.05


def _history(replica: str, start: float, end: float) -> list[Sample]:
    labels = {"namespace": "default", "workload": "burner", "replica": replica, "cluster": "edge-a", "node": "ea-1"}
    node = {"cluster": "edge-a", "node": "ea-1"}
    out: list[Sample] = []
    used = 0.0
    t = start
    while t <= end:
        out += [
            Sample("nemo_replica_cpu_seconds_total", labels, used, t),
            Sample("nemo_replica_memory_bytes", labels, 50 * 2**20, t),
            Sample("nemo_node_cpu_seconds_total", node, 0.8 * (t - start), t),  # a steady 20 % of 4 cores
            Sample("nemo_node_cpu_cores", node, 4.0, t),
            Sample("nemo_node_memory_bytes", node, 1024 * 2**20, t),
            Sample("nemo_node_memory_capacity_bytes", node, 4096 * 2**20, t),
        ]
        used += _cpu(t - start) * STEP
        t += STEP
    return out


async def test_a_saturated_replica_is_one_bottleneck_and_one_clear(plane: ControlPlane) -> None:
    replica = await _running_replica(plane)
    start = time.time() - 1800  # within the embedded store's raw retention
    plane.metrics_store.ingest(_history(replica, start, start + 1800))
    found = []
    for k in range(40, 120):  # every 15 s from 10 minutes in to 30 minutes in, as the loop would
        found += [(k * 15.0, f) for f in await plane.findings.run_once(at=start + k * 15.0)]
    kinds = [(at, f.kind, f.data["signal"]) for at, f in found]
    bottlenecks = [(at, signal) for at, kind, signal in kinds if kind is EventKind.ANALYTICS_BOTTLENECK]
    cleared = [(at, signal) for at, kind, signal in kinds if kind is EventKind.ANALYTICS_BOTTLENECK_CLEARED]
    anomalies = [(at, signal) for at, kind, signal in kinds if kind is EventKind.ANALYTICS_ANOMALY]
    # Saturated from 1200 s: the rate over each 15 s step reaches 100 % at 1215 s, held 60 s at 1275 s.
    assert [signal for _, signal in bottlenecks] == ["replica.cpu"]
    assert 1260 <= bottlenecks[0][0] <= 1290
    assert [signal for _, signal in cleared] == ["replica.cpu"] and 1500 <= cleared[0][0] <= 1515
    # The jump from 0.05 to 0.5 cores is far out of its band, once; the way back is to the band's median.
    [(at, signal)] = anomalies
    assert signal == "replica.cpu" and 1200 < at <= 1230
    # Recorded as events on the workload, with what a reader of the event needs.
    history = plane.views.workloads.history("default", "burner")
    [event] = [e for e in history if e.kind == EventKind.ANALYTICS_BOTTLENECK]
    assert event.data["labels"]["replica"] == replica and event.data["ratio"] >= 0.9
    assert event.data["capacity"] == 0.5 and event.data["for_seconds"] == 60
    assert f"replica {replica} of default/burner used" in event.message
    assert [e.kind for e in history].count(EventKind.ANALYTICS_BOTTLENECK_CLEARED) == 1


async def test_a_replica_that_goes_away_ends_its_episode(plane: ControlPlane) -> None:
    replica = await _running_replica(plane)
    start = time.time() - 1800
    plane.metrics_store.ingest(_history(replica, start, start + 1800))
    await plane.findings.run_once(at=start + 1350)
    assert len(plane.findings.bottlenecks) == 1
    # Long after the last sample (an hour later: out of the window), the series is gone: its episode ends.
    [finding] = await plane.findings.run_once(at=start + 1800 + 3700)
    assert finding.kind is EventKind.ANALYTICS_BOTTLENECK_CLEARED and "gone" in finding.message
    assert len(plane.findings.bottlenecks) == 0


async def test_a_restart_does_not_report_an_ongoing_bottleneck_again(plane: ControlPlane) -> None:
    replica = await _running_replica(plane)
    start = time.time() - 1800
    plane.metrics_store.ingest(_history(replica, start, start + 1800))
    found = await plane.findings.run_once(at=start + 1290)
    assert EventKind.ANALYTICS_BOTTLENECK in {f.kind for f in found}
    # A restarted control plane: a new findings loop on the same store, the same samples still burning.
    restarted = FindingsWatch(plane.db, lambda: plane.metrics, plane.settings)
    found = await restarted.run_once(at=start + 1305)
    assert EventKind.ANALYTICS_BOTTLENECK not in {f.kind for f in found}
    [cleared] = await restarted.run_once(at=start + 1515)
    assert cleared.kind is EventKind.ANALYTICS_BOTTLENECK_CLEARED and "back under" in cleared.message


async def test_a_cycle_that_reads_only_the_new_steps_sees_what_reading_the_whole_window_sees(
    plane: ControlPlane,
) -> None:
    # The loop reads the steps since its last cycle and keeps the rest of the window; a new watch reads it whole.
    # Samples arrive as the collector writes them, those of a cycle's last 5 s only after the cycle ran (late):
    # the next cycle still counts them, so both see the same points but the newest one at every cycle.
    replica = await _running_replica(plane)
    start = time.time() - 1800
    samples = sorted(_history(replica, start, start + 1800), key=lambda s: s.timestamp)
    ingested = 0

    def ingest_until(t: float) -> None:
        nonlocal ingested
        arrived = [s for s in samples[ingested:] if s.timestamp <= t]
        plane.metrics_store.ingest(arrived)
        ingested += len(arrived)

    for k in range(40, 100):
        at = start + k * 15.0
        ingest_until(at - STEP)
        incremental, _ = await plane.findings._observe(at)
        ingest_until(at)
        whole, _ = await FindingsWatch(plane.db, lambda: plane.metrics, plane.settings)._observe(at)
        assert len(incremental) == len(whole) == 4  # replica and node, CPU and memory
        for mine, theirs in zip(incremental, whole, strict=True):
            assert (mine.key, mine.capacity) == (theirs.key, theirs.capacity)
            assert mine.points[:-1] == theirs.points[:-1] and mine.points[-1][0] == theirs.points[-1][0]


async def test_the_loop_evaluates_each_cycle_when_it_runs(plane: ControlPlane) -> None:
    # Cycles are on one grid (each reads only the new step) and the loop wakes at its points: a cycle's time is
    # the time it ran, not up to a step before, so nothing is found later than the interval says.
    watch = FindingsWatch(plane.db, lambda: plane.metrics, plane.settings.model_copy(update={"findings_interval": 1}))
    loop = asyncio.create_task(watch.run())
    cycles: list[tuple[float, float]] = []  # (evaluated at, seen at)
    try:
        deadline = time.monotonic() + 30
        while len(cycles) < 4:
            assert time.monotonic() < deadline, "the loop stopped"
            if watch.evaluated_at is not None and (not cycles or watch.evaluated_at != cycles[-1][0]):
                cycles.append((watch.evaluated_at, time.time()))
            await asyncio.sleep(0.005)  # yields to the loop between looks at its last cycle
    finally:
        loop.cancel()
    for (before, _), (at, seen) in itertools.pairwise(cycles):
        assert at - before == pytest.approx(watch.step)
        assert 0 <= seen - at < watch.step
