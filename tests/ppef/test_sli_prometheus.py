"""An SLI reads the same through a real Prometheus as through the embedded store (same history backfilled into
both with promtool): PPEF's MetricsQuery means one thing whichever backend answers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest

from nemo_kernel.domain.sla import SloKind, SloSpec
from nemo_kernel.metrics.embedded import EmbeddedMetrics
from nemo_kernel.metrics.prometheus import PrometheusReader
from nemo_kernel.ppef.sli import SliTarget, read_metric_sli
from tests.metrics.backfill import CPU, backfill, history
from tests.metrics.prometheus_server import running_prometheus

SECONDS = 900
END = (int(time.time()) - 600) // 60 * 60  # ten minutes ago: Prometheus answers from the backfilled blocks


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedMetrics, str]]:
    samples = history(replicas=4, workloads=2, seconds=SECONDS, end=END)
    root = tmp_path_factory.mktemp("ppef-backfilled")
    data = backfill(samples, root)
    store = EmbeddedMetrics(raw_retention=3 * 3600)
    for i in range(0, len(samples), 1000):
        store.ingest(samples[i : i + 1000])
    with running_prometheus(root, {"global": {"scrape_interval": "15s"}}, data) as server:
        server.wait_for_series(f"count_over_time({CPU}[1h] @ {END})", count=4)
        yield store, server.url


@pytest.fixture
async def prometheus(backends: tuple[EmbeddedMetrics, str]) -> AsyncIterator[PrometheusReader]:
    reader = PrometheusReader(backends[1], timeout=10, meters=False)
    yield reader
    await reader.aclose()


@pytest.mark.parametrize(
    "slo",
    [
        {"name": "p99", "kind": "latency", "percentile": 99, "threshold": 0.2},
        {"name": "p50", "kind": "latency", "percentile": 50, "threshold": 0.05},
        {"name": "cpu", "kind": "capacity", "threshold": 0.8},
    ],
)
async def test_the_sli_is_the_same_on_both_backends(
    backends: tuple[EmbeddedMetrics, str], prometheus: PrometheusReader, slo: dict[str, object]
) -> None:
    spec = SloSpec.model_validate(slo)
    assert spec.kind in (SloKind.LATENCY, SloKind.CAPACITY)
    target = SliTarget("default", "w0", cpu_request_cores=1.0)
    embedded = await read_metric_sli(backends[0], spec, target, 300, at=END)
    promql = await read_metric_sli(prometheus, spec, target, 300, at=END)
    assert not embedded.no_data and not promql.no_data
    assert embedded.value == pytest.approx(promql.value, rel=1e-6)
