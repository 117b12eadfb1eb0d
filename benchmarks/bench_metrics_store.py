"""The embedded metrics store against its budgets (issue 10), next to a naive baseline in the same run.

- ingest: samples/s of CPU time on one core, scrape-like batches of ``--batch`` samples (7 target labels each);
- query: a 1-hour window of one series at 1 s resolution (3,600 samples) aggregated (avg, max, rate, quantile);
- memory: RSS of a fresh process holding ``--series`` active series of ``--samples`` samples each.

The baseline is the obvious store: a dict from (name, sorted labels) to a list of ``(t, v)`` tuples, answered with
list comprehensions. Ingest and query alternate baseline and candidate ``--rounds`` times and report medians; CPU
time (``time.process_time``) is used because the machine is shared. Usage::

    .venv/bin/python benchmarks/bench_metrics_store.py [--append-results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from results import publish

from nemo_kernel.metrics import Aggregation, EmbeddedMetrics, MetricsQuery, Sample, Selector
from nemo_kernel.metrics.functions import quantile

NOW = time.time()


class NaiveStore:
    """The baseline: lists of tuples per series, pure-Python aggregation."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = {}

    def ingest(self, samples: Sequence[Sample]) -> None:
        for s in samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            points = self.series.get(key)
            if points is None:
                points = self.series[key] = []
            points.append((s.timestamp, s.value))

    def aggregate(self, name: str, labels: Mapping[str, str], aggregation: str, start: float, end: float) -> float:
        points = [v for t, v in self.series[(name, tuple(sorted(labels.items())))] if start <= t <= end]
        if aggregation == "avg":
            return sum(points) / len(points)
        if aggregation == "max":
            return max(points)
        if aggregation == "quantile":
            return quantile(0.9, points)
        increase = sum(b - a if b >= a else b for a, b in itertools.pairwise(points))
        return increase / (end - start)


def _labels(i: int) -> dict[str, str]:
    return {
        "namespace": "default",
        "workload": f"w{i % 50}",
        "replica": f"w{i % 50}-{i}",
        "cluster": f"edge-{i % 3}",
        "node": f"n{i % 7}",
        "tier": "edge",
        "region": "eu",
    }


def _scrapes(series: int, scrapes: int, batch: int, interval: float) -> list[list[Sample]]:
    labels = [_labels(i) for i in range(series)]
    start = NOW - scrapes * interval
    batches: list[list[Sample]] = []
    for k in range(scrapes):
        # a new dict per scrape, as a collector parsing a scrape would make
        samples = [
            Sample("nemo_replica_cpu_seconds_total", dict(lab), float(k * 3 + i % 5), start + k * interval)
            for i, lab in enumerate(labels)
        ]
        batches.extend(samples[j : j + batch] for j in range(0, len(samples), batch))
    return batches


def _cpu(fn: Callable[[], object]) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def bench_ingest(args: argparse.Namespace) -> dict[str, float]:
    batches = _scrapes(args.ingest_series, args.ingest_scrapes, args.batch, 15.0)
    total = sum(len(b) for b in batches)
    rates: dict[str, list[float]] = {"baseline": [], "embedded": []}
    for _ in range(args.rounds):
        for kind in ("baseline", "embedded"):
            store: NaiveStore | EmbeddedMetrics = NaiveStore() if kind == "baseline" else EmbeddedMetrics()

            def run(store: NaiveStore | EmbeddedMetrics = store) -> None:
                for b in batches:
                    store.ingest(b)

            rates[kind].append(total / _cpu(run))
            if isinstance(store, EmbeddedMetrics):
                assert store.dropped() == {}, store.dropped()
    return {kind: statistics.median(r) for kind, r in rates.items()}


def bench_query(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    labels = _labels(1)
    samples = [Sample("m_total", labels, float(i * 2 + (i % 3)), NOW - 3600 + i) for i in range(3600)]
    embedded, naive = EmbeddedMetrics(), NaiveStore()
    embedded.ingest(samples)
    naive.ingest(samples)
    aggs = {"avg": Aggregation.AVG, "max": Aggregation.MAX, "rate": Aggregation.RATE, "quantile": Aggregation.QUANTILE}
    out: dict[str, dict[str, float]] = {}
    for name, agg in aggs.items():
        q = MetricsQuery(Selector("m_total"), 3600, agg, quantile=0.9 if name == "quantile" else None, at=NOW)
        times: dict[str, list[float]] = {"baseline": [], "embedded": []}
        for _ in range(args.rounds * 10):
            t0 = time.perf_counter()
            naive.aggregate("m_total", labels, name, NOW - 3600, NOW)
            times["baseline"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            result = embedded.evaluate(q)
            times["embedded"].append(time.perf_counter() - t0)
            assert result.series, name
        out[name] = {kind: statistics.median(t) * 1000 for kind, t in times.items()}
    return out


def _rss_child(kind: str, series: int, samples: int, batch: int) -> None:
    """Run in a fresh interpreter: fill a store, print the RSS growth in bytes."""
    import psutil

    process = psutil.Process()
    labels = [_labels(i) for i in range(series)]
    store: NaiveStore | EmbeddedMetrics = NaiveStore() if kind == "baseline" else EmbeddedMetrics()
    before = process.memory_info().rss
    start = NOW - samples * 30.0
    for k in range(samples):
        scrape = [Sample("nemo_replica_cpu_seconds_total", labels[i], float(k), start + k * 30) for i in range(series)]
        for j in range(0, series, batch):
            store.ingest(scrape[j : j + batch])
    del scrape
    rss = process.memory_info().rss
    print(json.dumps({"total": rss, "growth": rss - before}))


def bench_memory(args: argparse.Namespace, kind: str, series: int) -> dict[str, int]:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from bench_metrics_store import _rss_child; _rss_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), "
        "int(sys.argv[5]))"
    )
    here = str(Path(__file__).parent)
    argv = [sys.executable, "-c", code, here, kind, str(series), str(args.samples), str(args.batch)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    result: dict[str, int] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--ingest-series", type=int, default=10_000)
    parser.add_argument("--ingest-scrapes", type=int, default=20)
    parser.add_argument("--series", type=int, default=100_000, help="active series for the memory figure")
    parser.add_argument("--baseline-series", type=int, default=10_000, help="the baseline's (it needs far more)")
    parser.add_argument("--samples", type=int, default=240, help="samples per series (240: 2 h at one per 30 s)")
    parser.add_argument("--append-results", action="store_true")
    args = parser.parse_args()

    ingest = bench_ingest(args)
    query = bench_query(args)
    memory = {
        "baseline": bench_memory(args, "baseline", args.baseline_series),
        "embedded": bench_memory(args, "embedded", args.series),
    }
    load = os.getloadavg()
    per_series = {
        "baseline": memory["baseline"]["growth"] / args.baseline_series,
        "embedded": memory["embedded"]["growth"] / args.series,
    }
    lines = [
        f"## Embedded metrics store (issue 10) — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores shared with other "
        f"sessions; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) at the end. Medians of "
        f"{args.rounds} alternating rounds (query: {args.rounds * 10} calls each). Baseline: a dict of lists of "
        "`(t, v)` tuples aggregated in pure Python.",
        "",
        "```sh",
        ".venv/bin/python benchmarks/bench_metrics_store.py " + " ".join(sys.argv[1:]),
        "```",
        "",
        "| figure | budget | baseline | embedded |",
        "|---|---|---:|---:|",
        f"| ingest, samples/s of one core's CPU time ({args.ingest_series:,} series x {args.ingest_scrapes} scrapes, "
        f"batches of {args.batch:,}) | >= 200,000 | {ingest['baseline']:,.0f} | {ingest['embedded']:,.0f} |",
    ]
    for name, t in query.items():
        lines.append(
            f"| 1 h window of one series (3,600 samples), {name}, ms | <= 5 | {t['baseline']:.3f} | "
            f"{t['embedded']:.3f} |"
        )
    lines += [
        f"| memory per active series ({args.samples} samples each), bytes | <= 10,737 | "
        f"{per_series['baseline']:,.0f} | {per_series['embedded']:,.0f} |",
        f"| RSS of the process holding them (MiB): baseline {args.baseline_series:,} series, embedded "
        f"{args.series:,} | <= 1,024 for 100,000 | {memory['baseline']['total'] / 2**20:,.0f} | "
        f"{memory['embedded']['total'] / 2**20:,.0f} |",
        "",
    ]
    text = "\n".join(lines)
    publish(text, append=args.append_results)


if __name__ == "__main__":
    main()
