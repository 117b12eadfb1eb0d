"""A local cluster's series: real replicas, real CPU time, energy from the power model, the workloads' own series."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import psutil
import pytest
from local_support import PYTHON, LocalHarness, eventually

from nemo_kernel.clusters import ClusterUnreachable, ReplicaSpec
from nemo_kernel.clusters.capabilities import SupportsMetrics
from nemo_kernel.clusters.local import LocalClusterDriver
from nemo_kernel.clusters.local.state import AGENT_FILE, read_agent_endpoint
from nemo_kernel.domain import ClusterSpec, MetricsEndpoint, NodeSpec, PowerModel, Tier
from nemo_kernel.metrics import Sample

SERVICE = Path(__file__).with_name("metrics_service.py")
IDLE, MAX = 40.0, 140.0


def _cluster(name: str) -> ClusterSpec:
    power = PowerModel(idle_watts=IDLE, max_watts=MAX)
    return ClusterSpec(
        name=name,
        tier=Tier.EDGE,
        region="madrid",
        country="ES",
        nodes=[
            NodeSpec(name="n1", cpu=2, memory_mib=2048, power=power),
            NodeSpec(name="n2", cpu=2, memory_mib=2048, power=power),
        ],
    )


def _replica(
    local: LocalHarness, replica_id: str, mode: str = "good", burn: bool = False, node: str = "n1"
) -> ReplicaSpec:
    return local.replica(
        replica_id,
        node=node,
        command=[PYTHON, "-u", str(SERVICE)],
        env={"METRICS_MODE": mode, "BURN": "1" if burn else "0"},
        metrics=MetricsEndpoint(path="/metrics", port="http"),
    )


def _one(samples: Sequence[Sample], name: str, **labels: str) -> float | None:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, f"{name}{labels} appears {len(found)} times"
    return found[0] if found else None


async def test_cpu_energy_and_power_grow_while_a_replica_burns_cpu(local: LocalHarness) -> None:
    driver = await local.driver(_cluster("edge-burn"))
    assert isinstance(driver, SupportsMetrics)
    await driver.ensure_replica(_replica(local, "burner-0", burn=True))
    await driver.ensure_replica(_replica(local, "idler-0", node="n1"))

    async def running() -> Sequence[Sample] | None:
        samples = await driver.scrape()
        up = [_one(samples, "nemo_replica_up", replica=r) for r in ("burner-0", "idler-0")]
        return samples if up == [1.0, 1.0] else None

    await eventually(running)
    before = time.monotonic()
    first = await driver.scrape()
    cpu0 = _one(first, "nemo_replica_cpu_seconds_total", replica="burner-0")
    node_cpu0 = _one(first, "nemo_node_cpu_seconds_total", node="n1")
    node_energy0 = _one(first, "nemo_node_energy_joules_total", node="n1")
    assert cpu0 is not None and node_cpu0 is not None and node_energy0 is not None
    assert _one(first, "nemo_node_cpu_cores", node="n1") == 2.0
    assert _one(first, "nemo_node_memory_capacity_bytes", node="n1") == 2048 * 1024 * 1024
    labels = next(s.labels for s in first if s.name == "nemo_replica_cpu_seconds_total")
    assert set(labels) == {"replica", "workload", "namespace", "node"}

    async def burnt() -> Sequence[Sample] | None:
        samples = await driver.scrape()
        cpu = _one(samples, "nemo_replica_cpu_seconds_total", replica="burner-0")
        return samples if cpu is not None and cpu >= cpu0 + 1.0 else None

    # readings half a second apart: each interval sees the burner run, however loaded the machine is
    later = await eventually(burnt, within=60, interval=0.5)
    before_later = time.monotonic()  # eventually() returned right after the scrape that satisfied it: an upper bound
    node_cpu = _one(later, "nemo_node_cpu_seconds_total", node="n1")
    node_energy = _one(later, "nemo_node_energy_joules_total", node="n1")
    assert node_cpu is not None and node_energy is not None
    assert node_cpu >= node_cpu0 + 1.0
    # the linear model, integrated: idle draw all along plus the dynamic range per core-second used
    dynamic = (MAX - IDLE) * (node_cpu - node_cpu0) / 2
    idle_seconds = (node_energy - node_energy0 - dynamic) / IDLE
    # ... over the agent's time between the two readings: no shorter than 2 cores need for that CPU, no longer
    # than the test waited
    assert (node_cpu - node_cpu0) / 2 - 1e-6 <= idle_seconds <= before_later - before + 1e-6
    watts = _one(later, "nemo_node_power_watts", node="n1")
    assert watts is not None and IDLE < watts <= MAX
    # the replica that burns takes nearly all of it; shares add up to the node's energy
    burner = _one(later, "nemo_replica_energy_joules_total", replica="burner-0")
    idler = _one(later, "nemo_replica_energy_joules_total", replica="idler-0")
    assert burner is not None and idler is not None
    assert burner > idler
    assert abs(burner + idler - node_energy) < 1e-6 * node_energy + 1e-9
    node2 = _one(later, "nemo_node_power_watts", node="n2")
    assert node2 == IDLE  # nothing runs there
    memory = _one(later, "nemo_replica_memory_bytes", replica="burner-0")
    assert memory is not None and memory > 1024 * 1024


async def test_a_replicas_cpu_is_that_of_its_whole_process_tree(local: LocalHarness) -> None:
    driver = await local.driver(_cluster("edge-tree"))
    spec = local.replica("parent-0", command=[PYTHON, "-u", str(SERVICE)], env={"BURN_CHILD": "1"})
    await driver.ensure_replica(spec)

    async def running() -> int | None:
        report = await driver.status()
        return next((r.pid for r in report.replicas if r.phase.value == "Running" and r.pid), None)

    pid = await eventually(running)
    first = _one(await driver.scrape(), "nemo_replica_cpu_seconds_total", replica="parent-0")
    assert first is not None

    async def grown() -> float | None:
        cpu = _one(await driver.scrape(), "nemo_replica_cpu_seconds_total", replica="parent-0")
        return cpu if cpu is not None and cpu >= first + 1.0 else None

    await eventually(grown, within=60, interval=0.5)
    # the process the agent started is idle: the CPU time is its child's
    times = psutil.Process(pid).cpu_times()
    assert times.user + times.system < 0.5 * (first + 1.0)


async def test_workload_series_are_collected_with_labels_and_bad_pages_fail_alone(local: LocalHarness) -> None:
    driver = await local.driver(_cluster("edge-own"))
    modes = {"good-0": "good", "garbage-0": "garbage", "slow-0": "slow", "huge-0": "huge"}
    for replica_id, mode in modes.items():
        await driver.ensure_replica(_replica(local, replica_id, mode=mode))

    async def collected() -> Sequence[Sample] | None:
        samples = await driver.scrape()
        errors = [_one(samples, "nemo_scrape_errors_total", replica=r) for r in ("garbage-0", "slow-0", "huge-0")]
        good = _one(samples, "app_jobs_total", queue="fast")
        return samples if good is not None and all(e is not None and e >= 1 for e in errors) else None

    started = time.monotonic()
    samples = await eventually(collected, within=40)
    # a slow replica holds the page back by its scrape deadline (1 s), not by its 30 s
    took = time.monotonic() - started
    assert took < 30, took

    fast = [s for s in samples if s.name == "app_jobs_total" and s.labels.get("queue") == "fast"]
    assert [dict(s.labels) for s in fast] == [
        {"queue": "fast", "replica": "good-0", "workload": "demo", "namespace": "default", "node": "n1"}
    ]
    assert fast[0].value == 42
    # a series claiming another replica and cluster is the good replica's own, under its labels only
    slow_queue = [s for s in samples if s.name == "app_jobs_total" and s.labels.get("queue") == "slow"]
    assert len(slow_queue) == 1 and slow_queue[0].labels["replica"] == "good-0"
    assert "cluster" not in slow_queue[0].labels
    # forged nemo_ series are refused: the replica's CPU is the agent's reading, the invented one is absent
    cpu = _one(samples, "nemo_replica_cpu_seconds_total", replica="good-0")
    assert cpu is not None and cpu < 1000
    assert not [s for s in samples if s.name == "nemo_slo_latency"]
    # counted: two families refused per read
    dropped = _one(samples, "nemo_samples_dropped_total", replica="good-0", reason="reserved_name")
    again = _one(await driver.scrape(), "nemo_samples_dropped_total", replica="good-0", reason="reserved_name")
    assert dropped is not None and again == dropped + 2
    assert _one(samples, "nemo_scrape_errors_total", replica="good-0") == 0
    assert not [s for s in samples if s.name == "app_filler"]  # the huge page is refused whole


async def test_metrics_need_the_agents_token(local: LocalHarness) -> None:
    await local.driver(_cluster("edge-auth"))
    endpoint = read_agent_endpoint(local.launcher.state_dir("edge-auth") / AGENT_FILE)
    assert endpoint is not None
    async with httpx.AsyncClient(base_url=endpoint.url, trust_env=False) as client:
        assert (await client.get("/metrics")).status_code == 401
        ok = await client.get("/metrics", headers={"Authorization": f"Bearer {endpoint.token}"})
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE nemo_node_energy_joules_total counter" in ok.text
    wrong = LocalClusterDriver(endpoint.url, "wrong", timeout=2.0)
    try:
        with pytest.raises(ClusterUnreachable):
            await wrong.scrape()
    finally:
        await wrong.close()
