"""The embedded store answers every query as Prometheus does, on the same history (backfilled into both)."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from nemo_kernel.metrics.embedded import EmbeddedMetrics
from nemo_kernel.metrics.model import Aggregation, Matcher, MatchOp, MetricsQuery, QueryResult, Selector
from nemo_kernel.metrics.prometheus import PrometheusReader
from nemo_kernel.metrics.promql import to_promql
from tests.metrics.backfill import CPU, LATENCY, MEMORY, backfill, history
from tests.metrics.prometheus_server import PrometheusServer, running_prometheus

SECONDS = 900
END = (int(time.time()) - 600) // 60 * 60  # ten minutes ago, so Prometheus' head is not involved
AGREEMENT = 1e-6  # same samples, same answer (up to float summation order); the issue allows 5% on live data


@dataclass
class Backends:
    embedded: EmbeddedMetrics
    prometheus: PrometheusServer


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    samples = history(replicas=6, workloads=3, seconds=SECONDS, end=END)
    root = tmp_path_factory.mktemp("backfilled")
    data = backfill(samples, root)
    store = EmbeddedMetrics(raw_retention=3 * 3600)
    for i in range(0, len(samples), 1000):
        store.ingest(samples[i : i + 1000])
    with running_prometheus(root, {"global": {"scrape_interval": "15s"}}, data) as server:
        server.wait_for_series(f"count_over_time({CPU}[1h] @ {END})", count=6)
        yield Backends(store, server)


@pytest.fixture
async def reader(backends: Backends) -> AsyncIterator[PrometheusReader]:
    reader = PrometheusReader(backends.prometheus.url, timeout=10, meters=False)
    yield reader
    await reader.aclose()


def _by_labels(result: QueryResult) -> dict[tuple[tuple[str, str], ...], list[tuple[float, float]]]:
    return {tuple(sorted(s.labels.items())): [(round(t, 3), v) for t, v in s.points] for s in result.series}


W1 = (Matcher("workload", MatchOp.RE, "w[01]"),)
QUERIES = [
    MetricsQuery(Selector(CPU), 300, Aggregation.RATE, at=END),
    MetricsQuery(Selector(CPU), 600, Aggregation.RATE, by=("workload",), at=END),
    MetricsQuery(Selector(CPU, W1), 600, Aggregation.RATE, step=30, by=(), at=END),
    MetricsQuery(Selector(CPU), 900, Aggregation.LAST, by=("workload",), at=END - 0.5),
    MetricsQuery(Selector(MEMORY), 300, Aggregation.AVG, at=END),
    MetricsQuery(Selector(MEMORY, W1), 600, Aggregation.MAX, step=60, by=("workload",), at=END),
    MetricsQuery(Selector(MEMORY), 300, Aggregation.MIN, by=(), at=END),
    MetricsQuery(Selector(MEMORY), 120, Aggregation.SUM, at=END),
    MetricsQuery(Selector(MEMORY), 600, Aggregation.QUANTILE, quantile=0.9, by=("workload",), at=END),
    MetricsQuery(Selector(LATENCY), 300, Aggregation.HISTOGRAM_QUANTILE, quantile=0.99, by=("workload",), at=END),
    MetricsQuery(Selector(LATENCY), 600, Aggregation.HISTOGRAM_QUANTILE, quantile=0.5, step=60, by=(), at=END),
]


@pytest.mark.parametrize("query", QUERIES, ids=[to_promql(q) for q in QUERIES])
async def test_the_embedded_store_and_prometheus_agree(
    backends: Backends, reader: PrometheusReader, query: MetricsQuery
) -> None:
    embedded = _by_labels(await backends.embedded.query(query))
    prometheus = _by_labels(await reader.query(query))
    assert prometheus, "Prometheus answered nothing: the backfill did not load"
    assert embedded.keys() == prometheus.keys()
    for labels, points in prometheus.items():
        mine = embedded[labels]
        assert [t for t, _ in mine] == [t for t, _ in points], labels
        for (t, want), (_, got) in zip(points, mine, strict=True):
            assert math.isclose(got, want, rel_tol=AGREEMENT, abs_tol=1e-9), (labels, t, got, want)
