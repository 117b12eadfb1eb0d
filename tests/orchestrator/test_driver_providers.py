"""The control plane runs workloads on clusters of any driver kind whose provider is plugged in, and tells which
clusters it cannot manage instead of failing.

In-process: a :class:`ControlPlane` on SQLite in ``tmp_path``, passes driven with ``engine.reconcile_once()``,
``driver: sim`` clusters opened by :class:`~tests.orchestrator.fakes.MemoryProvider`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from tests.orchestrator.fakes import MemoryProvider

from nemo_kernel.config import Settings
from nemo_kernel.domain import (
    ClusterPhase,
    ClusterSpec,
    DriverKind,
    EventKind,
    ReplicaPhase,
    WorkloadDescriptor,
    WorkloadPhase,
)
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.orchestrator.decision import ClusterCandidate, NodeCandidate
from nemo_kernel.orchestrator.decision.filters import Requirements
from nemo_kernel.store import clusters, events, workloads
from nemo_kernel.store.events import cluster_subject


def _settings(tmp_path: Path) -> Settings:
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    return Settings(data_dir=tmp_path / "data", clusters_file=clusters)


def _cluster(name: str, driver: str, *nodes: str) -> ClusterSpec:
    return ClusterSpec.model_validate(
        {
            "name": name,
            "driver": driver,
            "tier": "edge",
            "region": "eu-south",
            "country": "ES",
            "nodes": [{"name": n, "cpu": 2.0, "memory_mib": 2048} for n in nodes],
        }
    )


def _workload(name: str, replicas: int) -> WorkloadDescriptor:
    return WorkloadDescriptor.model_validate(
        {"name": name, "deployment": {"command": ["app"], "replicas": replicas, "ports": []}}
    )


@pytest.fixture
def memory() -> MemoryProvider:
    """The provider of the control plane's ``sim`` clusters: the tests look at the clusters through it."""
    return MemoryProvider()


@pytest.fixture
async def plane(tmp_path: Path, memory: MemoryProvider) -> AsyncIterator[ControlPlane]:
    """A control plane whose ``sim`` clusters are memory clusters; its store is migrated, its loops not started."""
    cp = ControlPlane(_settings(tmp_path), providers={DriverKind.SIM: memory})
    await asyncio.to_thread(cp.db.migrate)
    try:
        yield cp
    finally:
        await cp.resources.close()
        cp.db.dispose()


def _add(plane: ControlPlane, *specs: ClusterSpec) -> None:
    with plane.db.transaction() as s:
        for spec in specs:
            clusters.add_cluster(s, spec)


async def _until(plane: ControlPlane, condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Reconcile pass after pass until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await plane.engine.reconcile_once()
        if value := await asyncio.to_thread(condition):
            return value
    raise AssertionError(f"not within {timeout:g} s: {what}")


def _phases(plane: ControlPlane, name: str) -> tuple[str, dict[str, tuple[str, str]]]:
    """The workload's phase, and each desired replica's (cluster, phase)."""
    with plane.db.transaction() as s:
        row = workloads.get_workload(s, "default", name)
        replicas = workloads.replicas_by_workload(s, [row.id]).get(row.id, [])
        return row.phase, {r.id: (r.cluster, r.phase) for r in replicas if r.desired}


async def test_a_workload_runs_on_a_cluster_of_a_plugged_in_driver(plane: ControlPlane, memory: MemoryProvider) -> None:
    _add(plane, _cluster("sim-a", "sim", "n1", "n2"))
    plane.intake.apply(_workload("web", 3))

    await _until(plane, lambda: _phases(plane, "web")[0] == WorkloadPhase.RUNNING.value, "web Running")

    _, replicas = _phases(plane, "web")
    assert len(replicas) == 3
    assert set(replicas.values()) == {("sim-a", ReplicaPhase.RUNNING.value)}
    # what the store says runs is what the cluster runs
    assert set(memory.clusters["sim-a"].replicas) == set(replicas)


async def test_removing_a_cluster_makes_its_provider_forget_it(plane: ControlPlane, memory: MemoryProvider) -> None:
    _add(plane, _cluster("sim-a", "sim", "n1"), _cluster("sim-b", "sim", "n1"))
    await _until(plane, lambda: set(memory.opened) == {"sim-a", "sim-b"}, "both clusters opened")

    with plane.db.transaction() as s:
        clusters.remove_cluster(s, "sim-a")
    await plane.engine.reconcile_once()

    assert memory.forgotten == ["sim-a"]
    assert set(memory.clusters) == {"sim-b"}


async def test_closing_the_control_plane_closes_providers_and_keeps_replicas(
    plane: ControlPlane, memory: MemoryProvider
) -> None:
    _add(plane, _cluster("sim-a", "sim", "n1"))
    plane.intake.apply(_workload("web", 1))
    await _until(plane, lambda: _phases(plane, "web")[0] == WorkloadPhase.RUNNING.value, "web Running")

    await plane.resources.close()

    assert memory.closed
    assert len(memory.clusters["sim-a"].replicas) == 1


class Nearness:
    """A criterion built with its data, as a latency criterion is: the distance of each cluster."""

    name: ClassVar[str] = "cost"  # weighs as cost: the weight names users may set are the domain's
    lower_is_better: ClassVar[bool] = True

    def __init__(self, distance: dict[str, float]) -> None:
        self._distance = distance

    def raw(self, cluster: ClusterCandidate, node: NodeCandidate, req: Requirements) -> float:
        return self._distance[cluster.name]


async def test_the_control_plane_places_by_the_criteria_it_is_given(tmp_path: Path, memory: MemoryProvider) -> None:
    cp = ControlPlane(
        _settings(tmp_path), providers={DriverKind.SIM: memory}, criteria=(Nearness({"sim-a": 9.0, "sim-b": 1.0}),)
    )
    await asyncio.to_thread(cp.db.migrate)
    try:
        _add(cp, _cluster("sim-a", "sim", "n1"), _cluster("sim-b", "sim", "n1"))
        cp.intake.apply(_workload("web", 1))
        await _until(cp, lambda: _phases(cp, "web")[0] == WorkloadPhase.RUNNING.value, "web Running")
        _, replicas = _phases(cp, "web")
        assert {cluster for cluster, _ in replicas.values()} == {"sim-b"}
    finally:
        await cp.resources.close()
        cp.db.dispose()


async def test_a_cluster_whose_stored_spec_no_longer_reads_keeps_what_it_runs(
    plane: ControlPlane, memory: MemoryProvider
) -> None:
    # A spec stored before validation was tightened is not a removal: its replicas must not be stopped.
    _add(plane, _cluster("sim-a", "sim", "n1"))
    plane.intake.apply(_workload("web", 2))
    await _until(plane, lambda: _phases(plane, "web")[0] == WorkloadPhase.RUNNING.value, "web Running")
    with plane.db.transaction() as s:
        row = clusters.get_cluster(s, "sim-a")
        row.spec = {**row.spec, "tier": "galaxy"}

    for _ in range(3):
        await plane.engine.reconcile_once()

    assert memory.forgotten == []
    assert len(memory.clusters["sim-a"].replicas) == 2
    assert "sim-a" not in plane.resources.managed()
    with plane.db.transaction() as s:
        row = clusters.get_cluster(s, "sim-a")
        failures = [e for e in events.history(s, cluster_subject("sim-a")) if e.kind == EventKind.CLUSTER_FAILED]
        message, phase = row.message, row.phase
    # shown as not managed (it was Ready, from a heartbeat nobody asks any more), said once, its replicas left be
    assert phase == ClusterPhase.UNMANAGED.value
    assert message.startswith("cluster sim-a: the stored spec no longer passes this version's checks (tier:"), message
    assert message.endswith("its replicas are left as they are"), message
    assert [e.message for e in failures] == [message]
    phase_now, replicas = _phases(plane, "web")
    assert phase_now == WorkloadPhase.RUNNING.value and {c for c, _ in replicas.values()} == {"sim-a"}


async def test_a_cluster_of_a_kind_without_provider_is_reported_and_the_others_run(plane: ControlPlane) -> None:
    _add(plane, _cluster("k8s-a", "kubernetes", "n1"), _cluster("sim-a", "sim", "n1"))
    plane.intake.apply(_workload("web", 2))

    await _until(plane, lambda: _phases(plane, "web")[0] == WorkloadPhase.RUNNING.value, "web Running")
    for _ in range(3):
        await plane.engine.reconcile_once()

    _, replicas = _phases(plane, "web")
    assert {cluster for cluster, _ in replicas.values()} == {"sim-a"}
    with plane.db.transaction() as s:
        row = clusters.get_cluster(s, "k8s-a")
        failures = [e for e in events.history(s, cluster_subject("k8s-a")) if e.kind == EventKind.CLUSTER_FAILED]
        message, phase = row.message, row.phase
    assert message == "driver kubernetes is not available: no provider is registered for it; the cluster is not managed"
    assert phase == ClusterPhase.PENDING.value
    # said once, not on every pass
    assert len(failures) == 1


class _StuckProvider(MemoryProvider):
    """A provider that cannot stop the clusters it opened."""

    async def forget(self, name: str) -> None:
        raise RuntimeError(f"cannot stop {name}")


async def test_a_provider_failing_to_forget_a_cluster_does_not_stop_the_pass(tmp_path: Path) -> None:
    stuck = _StuckProvider()
    plane = ControlPlane(_settings(tmp_path), providers={DriverKind.SIM: stuck})
    await asyncio.to_thread(plane.db.migrate)
    try:
        _add(plane, _cluster("sim-a", "sim", "n1"))
        await _until(plane, lambda: stuck.opened == ["sim-a"], "sim-a opened")
        with plane.db.transaction() as s:
            clusters.remove_cluster(s, "sim-a")
        _add(plane, _cluster("sim-b", "sim", "n1"))

        await plane.engine.reconcile_once()

        assert stuck.opened == ["sim-a", "sim-b"]
        assert plane.resources.driver("sim-a") is None
    finally:
        await plane.resources.close()
        plane.db.dispose()
