"""A cluster's links reach its driver, level-based, through the reconcile pass; changing them is a command with its
event; and the link probes measure every link of real local clusters into the metrics sink.

In-process: a :class:`ControlPlane` on SQLite in ``tmp_path``; ``driver: sim`` clusters are memory clusters
(``tests/orchestrator/fakes.py``), ``driver: local`` clusters run real agents.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from tests.orchestrator.fakes import MemoryProvider

from nemo_kernel.config import Settings
from nemo_kernel.domain import ClusterSpec, DriverKind, EventKind, Link
from nemo_kernel.domain.errors import ApiError
from nemo_kernel.metrics import Aggregation, MetricsQuery, Sample, Selector, names
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.orchestrator.resources import ResourceManager
from nemo_kernel.store import NotFound

SLOW = Link(latency_ms=50, jitter_ms=10, loss=0.05)


class ListSink:
    """Keeps what the probes hand over."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def ingest(self, samples: Sequence[Sample]) -> None:
        self.samples.extend(samples)


def _settings(tmp_path: Path) -> Settings:
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    return Settings(data_dir=tmp_path / "data", clusters_file=clusters)


def _cluster(name: str, driver: str, links: dict[str, Any] | None = None) -> ClusterSpec:
    return ClusterSpec.model_validate(
        {
            "name": name,
            "driver": driver,
            "tier": "edge",
            "region": "eu-south",
            "country": "ES",
            "nodes": [{"name": "n1", "cpu": 2.0, "memory_mib": 2048}],
            "links": links or {},
        }
    )


@pytest.fixture
def memory() -> MemoryProvider:
    return MemoryProvider()


@pytest.fixture
async def plane(tmp_path: Path, memory: MemoryProvider) -> AsyncIterator[ControlPlane]:
    """A control plane whose ``sim`` clusters are memory clusters and whose probes go to a list; loops not started."""
    cp = ControlPlane(_settings(tmp_path), providers={DriverKind.SIM: memory}, link_sink=ListSink())
    await asyncio.to_thread(cp.db.migrate)
    try:
        yield cp
    finally:
        await cp.resources.close()
        cp.db.dispose()


def _link_events(plane: ControlPlane, name: str) -> list[dict[str, Any]]:
    found = plane.views.clusters.history(name)
    return [e.data for e in found if e.kind == EventKind.CLUSTER_LINKS_CHANGED.value]


async def test_links_reach_the_driver_level_based(plane: ControlPlane, memory: MemoryProvider) -> None:
    plane.commands.clusters.add(_cluster("sim-b", "sim"))  # the peer of sim-a's link below
    plane.commands.clusters.add(_cluster("sim-a", "sim", {"controlplane": SLOW.model_dump()}))
    await plane.engine.reconcile_once()
    driver = memory.clusters["sim-a"]
    assert driver.links == {"controlplane": SLOW}

    await plane.engine.reconcile_once()
    assert len(driver.link_calls) == 1  # the same links again: nothing sent

    faster = {"controlplane": {"latency_ms": 5}, "sim-b": {"bandwidth_mbps": 10}}
    status = plane.commands.clusters.set_links("sim-a", faster)
    assert status.spec.links["sim-b"] == Link(bandwidth_mbps=10)
    assert plane.commands.clusters.set_links("sim-a", faster).spec.links == status.spec.links  # no event
    await plane.engine.reconcile_once()
    assert driver.links == {"controlplane": Link(latency_ms=5), "sim-b": Link(bandwidth_mbps=10)}

    driver.reachable = False  # an outage: tried again on the next pass
    plane.commands.clusters.set_links("sim-a", {"sim-b": {"bandwidth_mbps": 10}})
    await plane.engine.reconcile_once()
    driver.reachable = True
    await plane.engine.reconcile_once()
    assert driver.links == {"sim-b": Link(bandwidth_mbps=10)}
    assert driver.link_calls[-1] == ("controlplane", None)

    assert [sorted(e["links"]) for e in _link_events(plane, "sim-a")] == [["controlplane", "sim-b"], ["sim-b"]]

    # a restarted control plane (a new resource manager, the same clusters) sends what it cannot know was sent
    calls = len(driver.link_calls)
    restarted = ResourceManager(plane.db, plane.settings, plane.resources._providers)
    try:
        await restarted.sync_drivers()
    finally:
        await restarted.close()
    assert driver.link_calls[calls:] == [("sim-b", Link(bandwidth_mbps=10))]


async def test_bad_links_change_nothing(plane: ControlPlane) -> None:
    plane.commands.clusters.add(_cluster("sim-a", "sim", {"controlplane": SLOW.model_dump()}))
    bad: list[tuple[Any, tuple[str | int, ...]]] = [
        ({"controlplane": {"latency_ms": 1e9}}, ("controlplane", "latency_ms")),
        ({"controlplane": {"loss": 101}}, ("controlplane", "loss")),
        ({"controlplane": {"jitter_ms": float("nan")}}, ("controlplane", "jitter_ms")),
        ({"peer": {"bandwidth_mbps": 0}}, ("peer", "bandwidth_mbps")),
        ({f"p{i}": {} for i in range(1000)}, ()),
    ]
    for links, loc in bad:
        with pytest.raises(ValidationError) as refused:
            plane.commands.clusters.set_links("sim-a", links)
        assert [e["loc"] for e in refused.value.errors()] == [loc]
    with pytest.raises(ApiError) as itself:
        plane.commands.clusters.set_links("sim-a", {"sim-a": {}})
    assert itself.value.status == 422
    assert [d["field"] for d in itself.value.details] == ["sim-a"]
    with pytest.raises(ApiError) as unknown:  # a peer nobody registered: a typo, most likely
        plane.commands.clusters.set_links("sim-a", {"controlplane": {}, "sim-typo": {}})
    assert (unknown.value.status, [d["field"] for d in unknown.value.details]) == (422, ["sim-typo"])
    with pytest.raises(NotFound):
        plane.commands.clusters.set_links("nowhere", {})
    assert plane.views.clusters.get("sim-a").spec.links == {"controlplane": SLOW}
    assert _link_events(plane, "sim-a") == []


async def test_probes_measure_every_link_of_local_clusters(tmp_path: Path) -> None:
    plane = ControlPlane(_settings(tmp_path))  # the probes' series go to its embedded metrics store
    await asyncio.to_thread(plane.db.migrate)
    try:
        a = {"controlplane": SLOW.model_dump(), "edge-b": {"latency_ms": 20}, "edge-gone": {"latency_ms": 1}}
        plane.commands.clusters.add(_cluster("edge-a", "local", a))
        plane.commands.clusters.add(_cluster("edge-b", "local"))
        for _ in range(50):
            await plane.engine.reconcile_once()
            if set(plane.resources.managed()) == {"edge-a", "edge-b"}:
                break
        assert set(plane.resources.managed()) == {"edge-a", "edge-b"}

        plane.link_probes.count = 400
        samples = await plane.link_probes.probe_once()
        got = {(s.name, s.labels["cluster"], s.labels["peer"]): s.value for s in samples}
        stored = await plane.metrics.query(MetricsQuery(Selector(names.LINK_RTT.name), 300, Aggregation.LAST))
        assert {(r.labels["cluster"], r.labels["peer"]): r.points[-1][1] for r in stored.series} == {
            (c, p): v for (n, c, p), v in got.items() if n == names.LINK_RTT.name
        }
        # every link of a managed cluster, the peer not registered left out
        assert {(c, p) for _, c, p in got} == {
            ("edge-a", "controlplane"),
            ("edge-a", "edge-b"),
            ("edge-b", "controlplane"),
        }
        assert all(set(s.labels) == {"cluster", "peer"} for s in samples)

        rtt, loss, jitter = names.LINK_RTT.name, names.LINK_LOSS.name, names.LINK_JITTER.name
        assert 0.090 <= got[(rtt, "edge-a", "controlplane")] <= 0.120, got
        assert 0.015 <= got[(loss, "edge-a", "controlplane")] <= 0.095, got
        assert 0.003 <= got[(jitter, "edge-a", "controlplane")] <= 0.030, got
        assert 0.038 <= got[(rtt, "edge-a", "edge-b")] <= 0.060, got
        assert got[(loss, "edge-a", "edge-b")] == 0
        assert got[(rtt, "edge-b", "controlplane")] < 0.020, got
    finally:
        await plane.resources.close()
        plane.db.dispose()
