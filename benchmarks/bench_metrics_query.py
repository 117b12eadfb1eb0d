"""The same queries served by the embedded store and by a real Prometheus, on the same hour of history.

The history (``tests/metrics/backfill.py``: replica CPU counters, memory gauges, latency histograms at 1 s) is
ingested into an ``EmbeddedMetrics`` and backfilled into Prometheus 2.42 with ``promtool``; each query is then asked
of both, alternating (embedded, Prometheus, embedded, ...), and the medians compared. Answers are checked to agree.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_metrics_query.py --replicas 100 --repeat 31 --append-results
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from results import publish
from tests.metrics.backfill import CPU, LATENCY, MEMORY, backfill, history
from tests.metrics.prometheus_server import running_prometheus

from nemo_kernel.metrics.embedded import EmbeddedMetrics
from nemo_kernel.metrics.model import Aggregation, Matcher, MatchOp, MetricsQuery, QueryResult, Selector
from nemo_kernel.metrics.prometheus import PrometheusReader
from nemo_kernel.metrics.promql import to_promql


def queries(end: int) -> list[tuple[str, MetricsQuery]]:
    """What is measured: a named query at ``end``."""
    one = (Matcher("replica", MatchOp.EQ, "r1"),)
    by = ("workload",)
    return [
        ("1 h of one series, avg", MetricsQuery(Selector(MEMORY, one), 3600, Aggregation.AVG, at=end)),
        ("1 h rate of one counter", MetricsQuery(Selector(CPU, one), 3600, Aggregation.RATE, at=end)),
        ("5 min rate, every replica, by workload", MetricsQuery(Selector(CPU), 300, Aggregation.RATE, by=by, at=end)),
        (
            "1 h range step 60 s, rate by workload",
            MetricsQuery(Selector(CPU), 3600, Aggregation.RATE, step=60, by=by, at=end),
        ),
        (
            "p99 latency, 5 min, by workload",
            MetricsQuery(Selector(LATENCY), 300, Aggregation.HISTOGRAM_QUANTILE, quantile=0.99, by=by, at=end),
        ),
    ]


def _values(result: QueryResult) -> dict[tuple[tuple[str, str], ...], list[float]]:
    return {tuple(sorted(s.labels.items())): [v for _, v in s.points] for s in result.series}


def _agree(a: QueryResult, b: QueryResult) -> bool:
    va, vb = _values(a), _values(b)
    return va.keys() == vb.keys() and all(
        len(va[k]) == len(vb[k])
        and all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9) for x, y in zip(va[k], vb[k], strict=True))
        for k in va
    )


async def measure(store: EmbeddedMetrics, reader: PrometheusReader, query: MetricsQuery, repeat: int) -> list[object]:
    embedded, prometheus = [], []
    await store.query(query), await reader.query(query)  # warm both (thread pool, connection, caches)
    for _ in range(repeat):
        t = time.perf_counter()
        mine = await store.query(query)
        embedded.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        theirs = await reader.query(query)
        prometheus.append((time.perf_counter() - t) * 1000)
    return [statistics.median(embedded), statistics.median(prometheus), _agree(mine, theirs), len(theirs.series)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=100)
    parser.add_argument("--workloads", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument("--repeat", type=int, default=31)
    parser.add_argument("--append-results", action="store_true")
    args = parser.parse_args()
    end = (int(time.time()) - 600) // 60 * 60
    samples = history(args.replicas, args.workloads, args.seconds, end)
    store = EmbeddedMetrics(raw_retention=args.seconds + 3600, max_samples_per_series=args.seconds + 10)
    t = time.perf_counter()
    for i in range(0, len(samples), 1000):
        store.ingest(samples[i : i + 1000])
    ingest_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        data = backfill(samples, Path(tmp))
        del samples
        with running_prometheus(Path(tmp) / "prom", {"global": {"scrape_interval": "15s"}}, data) as server:
            server.wait_for_series(f"count_over_time({CPU}[1h] @ {end})", count=args.replicas)
            reader = PrometheusReader(server.url, timeout=30, meters=False)
            rows = []
            for name, query in queries(end):
                rows.append((name, to_promql(query), *await measure(store, reader, query, args.repeat)))
            await reader.aclose()
    load = os.getloadavg()
    lines = [
        f"## Metrics queries: embedded store vs Prometheus 2.42, same history ({time.strftime('%Y-%m-%d')})",
        "",
        f"{args.replicas} replicas in {args.workloads} workloads, {args.seconds} s at 1 s resolution (CPU counter "
        f"and memory gauge per replica, a latency histogram per workload: {store.series_count()} series), ingested "
        f"into `EmbeddedMetrics` (in {ingest_s:.1f} s) and backfilled into Prometheus with promtool. Each query "
        f"{args.repeat} times per backend, alternating; wall time of `query()` (the embedded store's runs in a "
        f"worker thread; Prometheus' over loopback HTTP). Python {platform.python_version()}, {platform.machine()}, "
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (2 cores shared with other sessions).",
        "",
        "```sh",
        f"PYTHONPATH=. .venv/bin/python benchmarks/bench_metrics_query.py --replicas {args.replicas} "
        f"--workloads {args.workloads} --seconds {args.seconds} --repeat {args.repeat} --append-results",
        "```",
        "",
        "| query | PromQL | embedded median (ms) | Prometheus median (ms) | Prometheus / embedded | same answer "
        "| series |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for name, promql, emb, prom, same, count in rows:
        assert isinstance(emb, float) and isinstance(prom, float)
        lines.append(f"| {name} | `{promql}` | {emb:.2f} | {prom:.2f} | {prom / emb:.1f}x | {same} | {count} |")
    text = "\n".join(lines) + "\n"
    publish(text, append=args.append_results)


if __name__ == "__main__":
    asyncio.run(main())
