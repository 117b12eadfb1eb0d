"""The collector: real local clusters running a real workload, their series into the metrics sink with where they
come from, CO2 from the cluster's carbon intensity (constant or an admin-allowed CSV), and a silent cluster that
delays no other."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.clusters.local_support import MARKER_ENV, PYTHON, kill_everything

from nemo_kernel.config import Settings
from nemo_kernel.domain import WorkloadDescriptor
from nemo_kernel.metrics import Aggregation, Matcher, MatchOp, MetricSink, MetricsQuery, Sample, Selector
from nemo_kernel.metrics.energy import JOULES_PER_KWH
from nemo_kernel.orchestrator import ControlPlane

SERVICE = Path(__file__).resolve().parents[1] / "clusters" / "metrics_service.py"


@dataclass
class ListSink:
    """A :class:`~nemo_kernel.metrics.MetricSink` that keeps every batch, and hands it on to ``forward``."""

    batches: list[list[Sample]] = field(default_factory=list)
    forward: MetricSink | None = None

    def ingest(self, samples: Sequence[Sample]) -> None:
        self.batches.append(list(samples))
        if self.forward is not None:
            self.forward.ingest(samples)


def _cluster(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "tier": "edge",
        "region": f"region-{name}",
        "country": "ES",
        "nodes": [{"name": f"{name}-n1", "cpu": 2, "memory_mib": 2048}],
        **extra,
    }


@dataclass
class Collecting:
    plane: ControlPlane
    sink: ListSink
    run_id: str
    csv: Path


@pytest.fixture
async def collecting(tmp_path: Path) -> AsyncIterator[Collecting]:
    """A started control plane with two local clusters (one on a CSV carbon source) and a list sink."""
    carbon = tmp_path / "carbon"
    carbon.mkdir()
    csv = carbon / "grid.csv"
    now = time.time()
    csv.write_text(f"timestamp,grams_per_kwh\n{now - 3600:.0f},500\n{now + 3600:.0f},900\n")
    clusters = tmp_path / "clusters.yaml"
    spec = {
        "clusters": [
            _cluster("const", carbon_intensity=250.0),
            _cluster("series", carbon_intensity=100.0, carbon_intensity_source={"csv": str(csv)}),
        ]
    }
    clusters.write_text(yaml.safe_dump(spec))
    settings = Settings(
        data_dir=tmp_path / "data",
        clusters_file=clusters,
        metrics_interval=3600,  # the loop's first pass only: the tests collect when they want to
        carbon_data_roots=[carbon],
        driver_timeout=1.5,
        reconcile_interval=0.2,
        heartbeat_interval=0.2,
    )
    sink = ListSink()
    plane = ControlPlane(settings, metrics_sink=sink)
    sink.forward = plane.metrics_store  # and on to the store that answers queries, as without a sink
    run_id = uuid.uuid4().hex
    await plane.start()
    try:
        yield Collecting(plane, sink, run_id, csv)
    finally:
        for cluster in ("const", "series"):
            pid = plane.resources.agent_pid(cluster)
            if pid is not None:
                os.kill(pid, signal.SIGCONT)
        await plane.stop()
        kill_everything(settings.data_dir / "clusters", run_id)


def _workload(name: str, cluster: str, run_id: str) -> WorkloadDescriptor:
    return WorkloadDescriptor.model_validate(
        {
            "name": name,
            "deployment": {
                "command": [PYTHON, "-u", str(SERVICE)],
                "env": {"BURN": "1", MARKER_ENV: run_id},
                "resources": {"cpu": 0.5, "memory_mib": 32},
                "ports": [{"name": "http", "port": 8080}],
                "health": {"http_path": "/healthz"},
                "metrics": {"path": "/metrics", "port": "http"},
                "placement": {"clusters": [cluster]},
            },
        }
    )


def _find(samples: Sequence[Sample], name: str, **labels: str) -> list[Sample]:
    return [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


async def _collect_until(c: Collecting, done: Any, within: float = 60.0) -> list[Sample]:
    deadline = time.monotonic() + within
    while True:
        assert c.plane.collector is not None
        await c.plane.collector.collect_once()
        samples = c.sink.batches[-1] if c.sink.batches else []
        if done(samples):
            return samples
        assert time.monotonic() < deadline, "condition not met; last samples: " + repr(samples[:20])
        await asyncio.sleep(0.2)


def _energy_and_co2(samples: Sequence[Sample], cluster: str) -> tuple[float, float] | None:
    energy = _find(samples, "nemo_replica_energy_joules_total", cluster=cluster)
    co2 = _find(samples, "nemo_replica_co2_grams_total", cluster=cluster)
    if len(energy) != 1 or len(co2) != 1 or energy[0].value <= 0:
        return None
    return energy[0].value, co2[0].value


async def test_series_carry_where_they_come_from_and_co2_follows_the_grid(collecting: Collecting) -> None:
    c = collecting
    c.plane.commands.workloads.apply(_workload("burn-const", "const", c.run_id))
    c.plane.commands.workloads.apply(_workload("burn-series", "series", c.run_id))

    def both_burning(samples: Sequence[Sample]) -> bool:
        return all(_energy_and_co2(samples, name) for name in ("const", "series")) and bool(
            _find(samples, "app_jobs_total", cluster="const", queue="fast")
        )

    samples = await _collect_until(c, both_burning)
    energy, co2_const = _energy_and_co2(samples, "const") or (0.0, 0.0)
    # a constant intensity: CO2 is exactly energy x intensity
    assert co2_const == pytest.approx(energy / JOULES_PER_KWH * 250.0, rel=1e-9)
    energy, co2 = _energy_and_co2(samples, "series") or (0.0, 0.0)
    assert co2 == pytest.approx(energy / JOULES_PER_KWH * 500.0, rel=1e-9)  # the CSV's reading now, not 100
    intensity = {s.labels["cluster"]: s.value for s in _find(samples, "nemo_cluster_carbon_intensity_grams_per_kwh")}
    assert intensity == {"const": 250.0, "series": 500.0}
    node_co2 = _find(samples, "nemo_node_co2_grams_total", cluster="const")
    assert len(node_co2) == 1 and node_co2[0].value > 0

    cpu = _find(samples, "nemo_replica_cpu_seconds_total", cluster="const")
    assert len(cpu) == 1
    labels = dict(cpu[0].labels)
    assert labels["workload"] == "burn-const" and labels["namespace"] == "default"
    assert {labels["cluster"], labels["tier"], labels["region"], labels["node"]} == {
        "const", "edge", "region-const", "const-n1"
    }  # fmt: skip
    # the workload's own series too, with the replica's labels and the cluster's, over the ones it claimed
    own = _find(samples, "app_jobs_total", cluster="const")
    assert {s.labels["queue"] for s in own} == {"fast", "slow"}
    assert all(s.labels["replica"] == labels["replica"] and s.labels["region"] == "region-const" for s in own)
    rtt = _find(samples, "nemo_cluster_heartbeat_rtt_seconds", cluster="const")
    assert len(rtt) == 1 and 0 < rtt[0].value < 1.5

    # and the analytics engine answers for them
    selector = Selector("nemo_replica_co2_grams_total", (Matcher("cluster", MatchOp.EQ, "const"),))
    answer = await c.plane.metrics.query(MetricsQuery(selector, window=60, aggregation=Aggregation.LAST))
    assert [s.points[-1][1] for s in answer.series] == [pytest.approx(co2_const)]


async def test_a_silent_cluster_delays_no_other(collecting: Collecting) -> None:
    c = collecting
    c.plane.commands.workloads.apply(_workload("burn-const", "const", c.run_id))
    await _collect_until(c, lambda s: bool(_find(s, "nemo_replica_up", cluster="const")))
    pid = c.plane.resources.agent_pid("series")
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # alive but silent: its scrape can only time out
    started = time.monotonic()
    assert c.plane.collector is not None
    await c.plane.collector.collect_once()
    took = time.monotonic() - started
    samples = c.sink.batches[-1]
    assert took < 1.5 + 1.0, took  # the driver timeout, not one per cluster in turn
    assert _find(samples, "nemo_replica_up", cluster="const")
    assert not _find(samples, "nemo_node_power_watts", cluster="series")
    errors = _find(samples, "nemo_scrape_errors_total", cluster="series")
    assert [s.value for s in errors if "replica" not in s.labels] == [1.0]


async def test_a_carbon_file_outside_the_allowed_roots_is_not_read(tmp_path: Path) -> None:
    from nemo_kernel.domain import ClusterSpec
    from nemo_kernel.metrics.carbon import CarbonIntensity

    secret = tmp_path / "secret.csv"
    secret.write_text("0,999\n")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "link.csv").symlink_to(secret)  # a symlink out of the root counts as outside it
    carbon = CarbonIntensity([allowed])
    for path in (secret, allowed / "link.csv"):
        spec = ClusterSpec.model_validate(
            _cluster("x", carbon_intensity=123.0, carbon_intensity_source={"csv": str(path)})
        )
        assert carbon.at(spec, time.time()) == 123.0
    assert CarbonIntensity([]).at(spec, time.time()) == 123.0


async def test_the_gateways_series_per_workload_are_collected(tmp_path: Path) -> None:
    from aiohttp import web
    from tests.access.conftest import serve_aiohttp

    from nemo_kernel.access.gateway import parse_gateway_config
    from nemo_kernel.access.gateway.app import Gateway

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    replica = web.Application()
    replica.router.add_get("/ok", ok)
    config = parse_gateway_config(
        {
            "services": [{"name": "shop", "workload": "default/shop"}],
            "routes": [{"name": "shop", "service": "shop", "paths": ["/shop"]}],
        }
    )
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    sink = ListSink()
    plane = ControlPlane(Settings(data_dir=tmp_path / "data", clusters_file=clusters), metrics_sink=sink)
    await asyncio.to_thread(plane.db.migrate)
    assert plane.collector is not None
    try:
        async with serve_aiohttp(replica) as shop:
            gateway = Gateway(config, replicas={"default/shop": [shop]})
            async with serve_aiohttp(gateway.application()) as url:
                async with httpx.AsyncClient(base_url=url) as http:
                    assert (await http.get("/shop/ok")).status_code == 200
                plane.collector.watch_gateway(url)
                await plane.collector.collect_once()
        requests = _find(sink.batches[-1], "nemo_workload_requests_total", workload="shop", code="200")
        assert [s.value for s in requests] == [1.0]
        assert _find(sink.batches[-1], "nemo_scrape_errors_total", target="gateway")[0].value == 0
        await plane.collector.collect_once()  # the gateway is gone now: counted, and the pass goes on
        assert _find(sink.batches[-1], "nemo_scrape_errors_total", target="gateway")[0].value == 1
    finally:
        await plane.collector.close()
        plane.db.dispose()
