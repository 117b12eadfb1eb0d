"""The ``sim`` driver on its own: what an operator and the engine rely on from a simulated cluster.

The simulation is advanced by its clock, so the tests give it one they move forward (a replica's start delay, a
fault's end) instead of waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import ValidationError
from tests.clock import Clock

from nemo_kernel.clusters import (
    ClusterUnreachable,
    ReplicaRejected,
    ReplicaSpec,
    SupportsFaultInjection,
    SupportsMetrics,
)
from nemo_kernel.clusters.sim import SimDriver, SimProvider
from nemo_kernel.domain import ClusterSpec, FaultSpec, ReplicaPhase
from nemo_kernel.metrics import Aggregation, EmbeddedMetrics, MetricsQuery, Sample, Selector, names


def _spec(name: str = "edge-1", nodes: int = 2, **sim: Any) -> ClusterSpec:
    return ClusterSpec.model_validate(
        {
            "name": name,
            "driver": "sim",
            "tier": "edge",
            "region": "eu-south",
            "country": "ES",
            "carbon_intensity": 200,
            "sim": {"start_delay_s": 2.0, **sim},
            "nodes": [
                {"name": f"n{i}", "cpu": 4, "memory_mib": 4096, "power": {"idle_watts": 20, "max_watts": 100}}
                for i in range(nodes)
            ],
        }
    )


def _replica(i: int, node: str = "n0", cpu: float = 1.0) -> ReplicaSpec:
    return ReplicaSpec.model_validate(
        {"id": f"web-v1-{i}", "workload": "shop/web", "version": 1, "index": i, "node": node,
         "resources": {"cpu": cpu, "memory_mib": 256}}
    )  # fmt: skip


async def _opened(clock: Clock, spec: ClusterSpec | None = None) -> SimDriver:
    return await SimProvider(clock=clock).open(spec or _spec())


async def _phases(driver: SimDriver) -> dict[str, ReplicaPhase]:
    return {r.id: r.phase for r in (await driver.status()).replicas}


async def test_a_replica_is_starting_for_the_start_delay_then_running() -> None:
    clock = Clock()
    driver = await _opened(clock)
    await driver.ensure_replica(_replica(0))
    await driver.ensure_replica(_replica(0))  # idempotent
    assert await _phases(driver) == {"web-v1-0": ReplicaPhase.STARTING}
    clock.now += 1.9
    assert await _phases(driver) == {"web-v1-0": ReplicaPhase.STARTING}
    clock.now += 0.2
    (report,) = (await driver.status()).replicas
    assert report.phase is ReplicaPhase.RUNNING and report.url == "sim://edge-1/web-v1-0"
    # usage is shaped by the request: 20-80 % of the one core it asked for, 50-90 % of its memory
    assert report.cpu_percent is not None and 20 <= report.cpu_percent <= 80
    assert report.memory_mib is not None and 128 <= report.memory_mib <= 231
    await driver.remove_replica("web-v1-0")
    await driver.remove_replica("web-v1-0")
    assert await _phases(driver) == {}


async def test_a_replica_on_an_unknown_node_is_rejected() -> None:
    driver = await _opened(Clock())
    with pytest.raises(ReplicaRejected):
        await driver.ensure_replica(_replica(0, node="n9"))


async def test_failures_follow_the_seed_and_a_failed_start_is_retried_with_backoff() -> None:
    async def crashed(seed: int) -> set[str]:
        clock = Clock()
        driver = await _opened(clock, _spec(failure_rate=0.5, seed=seed))
        for i in range(40):
            await driver.ensure_replica(_replica(i, cpu=0.05))
        clock.now += 2.0
        return {rid for rid, phase in (await _phases(driver)).items() if phase is ReplicaPhase.CRASHED}

    first = await crashed(7)
    assert first == await crashed(7)  # the same seed fails the same starts
    assert first != await crashed(8)
    assert 5 <= len(first) <= 35

    clock = Clock()
    driver = await _opened(clock, _spec(failure_rate=1.0))
    await driver.ensure_replica(_replica(0))
    clock.now += 2.0
    (report,) = (await driver.status()).replicas
    assert (report.phase, report.exit_code, report.restarts) == (ReplicaPhase.CRASHED, 1, 0)
    clock.now += 1.0 + 2.0  # backoff of the first restart, then its start delay
    (report,) = (await driver.status()).replicas
    assert (report.phase, report.restarts) == (ReplicaPhase.CRASHED, 1)


async def test_scrape_reports_usage_power_energy_and_co2_of_replicas_and_nodes() -> None:
    clock = Clock()
    driver = await _opened(clock)
    assert isinstance(driver, SupportsMetrics)
    await driver.ensure_replica(_replica(0, cpu=2.0))
    clock.now += 2.0
    first = {(s.name, s.labels.get("replica") or s.labels.get("node")): s for s in await driver.scrape()}
    clock.now += 60.0
    later = {(s.name, s.labels.get("replica") or s.labels.get("node")): s for s in await driver.scrape()}

    replica = later[(names.REPLICA_CPU.name, "web-v1-0")]
    assert dict(replica.labels) == {"replica": "web-v1-0", "workload": "web", "namespace": "shop", "node": "n0"}
    assert replica.timestamp == clock.now
    used = replica.value - first[(names.REPLICA_CPU.name, "web-v1-0")].value
    assert 0.2 * 2 * 60 <= used <= 0.8 * 2 * 60  # 20-80 % of two cores for a minute
    assert later[(names.REPLICA_UP.name, "web-v1-0")].value == 1.0
    busy, idle = later[(names.NODE_POWER.name, "n0")].value, later[(names.NODE_POWER.name, "n1")].value
    assert idle == 20.0 and 20.0 < busy <= 100.0  # the power model: idle plus the share of cores used
    # the only replica on n0 draws all of n0's power
    assert later[(names.REPLICA_POWER.name, "web-v1-0")].value == pytest.approx(busy)
    joules = later[(names.NODE_ENERGY.name, "n1")].value - first[(names.NODE_ENERGY.name, "n1")].value
    assert joules == pytest.approx(20.0 * 60)
    co2 = later[(names.NODE_CO2.name, "n1")].value - first[(names.NODE_CO2.name, "n1")].value
    assert co2 == pytest.approx(joules / 3.6e6 * 200)  # kWh x the grid's gCO2/kWh
    assert later[(names.NODE_CPU_CORES.name, "n0")].value == 4.0


async def test_node_down_fails_its_replicas_and_they_restart_when_it_ends() -> None:
    clock = Clock()
    driver = await _opened(clock)
    assert isinstance(driver, SupportsFaultInjection)
    await driver.ensure_replica(_replica(0, node="n0"))
    await driver.ensure_replica(_replica(1, node="n1"))
    clock.now += 2.0
    await driver.inject_fault(FaultSpec(kind="node_down", node="n0", for_s=30))
    report = await driver.status()
    assert {n.name: n.ready for n in report.nodes} == {"n0": False, "n1": True}
    phases = {r.id: (r.phase, r.message) for r in report.replicas}
    assert phases == {
        "web-v1-0": (ReplicaPhase.CRASHED, "node n0 is down"),
        "web-v1-1": (ReplicaPhase.RUNNING, ""),
    }
    power = {s.labels["node"]: s.value for s in await driver.scrape() if s.name == names.NODE_POWER.name}
    assert power["n0"] == 0.0

    def energy(samples: Sequence[Sample]) -> float:
        return next(s.value for s in samples if s.name == names.NODE_ENERGY.name and s.labels["node"] == "n0")

    at_fault = energy(await driver.scrape())
    clock.now += 30.0
    assert energy(await driver.scrape()) == at_fault  # a node that is down draws nothing
    report = await driver.status()
    assert all(n.ready for n in report.nodes)
    restarted = next(r for r in report.replicas if r.id == "web-v1-0")
    assert (restarted.phase, restarted.restarts) == (ReplicaPhase.STARTING, 1)
    clock.now += 2.0
    assert set((await _phases(driver)).values()) == {ReplicaPhase.RUNNING}


async def test_partition_is_unreachable_but_replicas_keep_running() -> None:
    clock = Clock()
    driver = await _opened(clock)
    await driver.ensure_replica(_replica(0))
    clock.now += 2.0
    before = next(s for s in await driver.scrape() if s.name == names.REPLICA_CPU.name).value
    await driver.inject_fault(FaultSpec(kind="partition", for_s=60))
    for call in (driver.status(), driver.ensure_replica(_replica(1)), driver.remove_replica("web-v1-0")):
        with pytest.raises(ClusterUnreachable):
            await call
    clock.now += 60.0
    report = await driver.status()
    assert [(r.id, r.phase, r.restarts) for r in report.replicas] == [("web-v1-0", ReplicaPhase.RUNNING, 0)]
    after = next(s for s in await driver.scrape() if s.name == names.REPLICA_CPU.name).value
    assert after > before  # it kept working while nobody could reach it


async def test_down_loses_the_replicas_and_the_cluster_comes_back_empty() -> None:
    clock = Clock()
    driver = await _opened(clock)
    await driver.ensure_replica(_replica(0))
    await driver.inject_fault(FaultSpec(kind="down", for_s=10))
    with pytest.raises(ClusterUnreachable):
        await driver.status()
    with pytest.raises(ClusterUnreachable):
        await driver.scrape()
    clock.now += 10.0
    assert (await driver.status()).replicas == []


async def test_slow_delays_every_call_past_a_heartbeat_timeout() -> None:
    driver = await _opened(Clock())
    await driver.inject_fault(FaultSpec(kind="slow", slow_ms=60_000, for_s=60))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(driver.status(), 0.05)


async def test_a_fault_on_an_unknown_node_is_refused() -> None:
    driver = await _opened(Clock())
    with pytest.raises(ReplicaRejected):
        await driver.inject_fault(FaultSpec(kind="node_down", node="n7", for_s=5))


async def test_a_provider_opened_again_keeps_what_its_clusters_run_and_forgets_removed_ones() -> None:
    clock = Clock()
    provider = SimProvider(clock=clock)
    await (await provider.open(_spec())).ensure_replica(_replica(0))
    assert await provider.revive(_spec()) is None
    assert [r.id for r in (await (await provider.open(_spec())).status()).replicas] == ["web-v1-0"]
    await provider.forget("edge-1")
    assert (await (await provider.open(_spec())).status()).replicas == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"driver": "local"}, "sim"),  # a sim section on a real cluster would be ignored silently
        ({"sim": {"failure_rate": 1.5}}, "sim.failure_rate"),
        ({"sim": {"start_delay_s": 1e9}}, "sim.start_delay_s"),
        ({"sim": {"seed": -1}}, "sim.seed"),
        ({"sim": {"start_delay_s": float("nan")}}, "sim.start_delay_s"),
        ({"sim": {"warp": 9}}, "sim.warp"),
    ],
)
def test_the_sim_section_is_bounded_and_only_for_sim_clusters(change: dict[str, Any], field: str) -> None:
    body = _spec().model_dump(mode="json") | change
    with pytest.raises(ValidationError) as caught:
        ClusterSpec.model_validate(body)
    located = {".".join(map(str, e["loc"])) for e in caught.value.errors()}
    assert field in located or any(field in e["msg"] for e in caught.value.errors()), caught.value


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "down"},  # no for_s
        {"kind": "down", "for_s": 0},
        {"kind": "down", "for_s": 1e-300},  # ends before anything could see it
        {"kind": "down", "for_s": 1e9},
        {"kind": "down", "for_s": float("inf")},
        {"kind": "meltdown", "for_s": 5},
        {"kind": "down", "node": "n0", "for_s": 5},  # node only for node_down
        {"kind": "node_down", "for_s": 5},  # node_down needs its node
        {"kind": "slow", "for_s": 5},  # slow needs slow_ms
        {"kind": "slow", "slow_ms": 10**9, "for_s": 5},
        {"kind": "node_down", "node": "N0\n", "for_s": 5},
    ],
)
def test_fault_parameters_are_bounded(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FaultSpec.model_validate(body)


async def test_the_samples_are_what_the_analytics_engine_keeps_and_queries() -> None:
    clock = Clock()
    driver = await _opened(clock)
    store = EmbeddedMetrics(clock=clock)
    await driver.ensure_replica(_replica(0, cpu=2.0))
    clock.now += 2.0
    for _ in range(7):  # a scrape every 10 s for a minute, labelled as the collector does
        scraped = await driver.scrape()
        store.ingest([Sample(s.name, {**s.labels, "cluster": "edge-1"}, s.value, s.timestamp) for s in scraped])
        clock.now += 10.0
    clock.now -= 10.0
    assert store.dropped() == {}
    query = MetricsQuery(Selector(names.REPLICA_CPU.name), window=60.0, aggregation=Aggregation.RATE)
    (series,) = (await store.query(query)).series
    assert series.labels["replica"] == "web-v1-0" and series.labels["cluster"] == "edge-1"
    assert 0.2 * 2 <= series.points[-1][1] <= 0.8 * 2  # cores used: 20-80 % of the two requested
