"""Range queries of the embedded store: the evaluation of a git revision (the baseline) against today's, same store.

Run from the repository root::

    .venv/bin/python benchmarks/bench_range_eval.py --baseline 5a3481e                 # prints a markdown table
    .venv/bin/python benchmarks/bench_range_eval.py --baseline 5a3481e --append-results

One ``EmbeddedMetrics`` holds an hour of samples every 5 s (as ``bench_findings.py``) of each replica's CPU counter
(with a restart: a counter reset) and memory gauge, of each node's CPU, and a latency histogram per workload. The
baseline's ``metrics/evaluate.py`` and ``metrics/embedded.py`` are read from git (``git show REV:...``) and loaded
beside today's modules; its ``EmbeddedMetrics.evaluate`` then answers from the same store object. Each query is
asked of both, alternating, and the medians compared; every answer of today's code must equal the baseline's bit
for bit (labels, times and the bits of every value), else the script stops.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import struct
import subprocess
import sys
import time
import types
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from results import publish

from nemo_kernel.metrics import Aggregation, EmbeddedMetrics, MetricsQuery, QueryResult, Sample, Selector

ROOT = Path(__file__).resolve().parents[1]

NODES = 20
STEP = 5.0
CPU, MEMORY, NODE_CPU = "nemo_replica_cpu_seconds_total", "nemo_replica_memory_bytes", "nemo_node_cpu_seconds_total"
REPLICA = ("namespace", "workload", "replica", "cluster", "node")
NODE = ("cluster", "node")
LATENCY = "nemo_workload_request_duration_seconds"
BUCKETS = ("0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf")


def _baseline(rev: str) -> Callable[[EmbeddedMetrics, MetricsQuery], QueryResult]:
    """The baseline revision's ``EmbeddedMetrics.evaluate``, its evaluate module loaded under another name."""

    def load(name: str, path: str, source: str) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__file__ = f"{rev}:{path}"
        sys.modules[name] = module
        exec(compile(source, module.__file__, "exec"), module.__dict__)  # our own code, from git
        return module

    def show(path: str) -> str:
        shown = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True)
        return shown.stdout

    load("baseline_evaluate", "src/nemo_kernel/metrics/evaluate.py", show("src/nemo_kernel/metrics/evaluate.py"))
    embedded = show("src/nemo_kernel/metrics/embedded.py").replace("nemo_kernel.metrics.evaluate", "baseline_evaluate")
    module = load("baseline_embedded", "src/nemo_kernel/metrics/embedded.py", embedded)
    evaluate: Callable[[EmbeddedMetrics, MetricsQuery], QueryResult] = module.EmbeddedMetrics.evaluate
    return evaluate


def _store(replicas: int, start: float) -> EmbeddedMetrics:
    store = EmbeddedMetrics(clock=lambda: start + 3600)
    for k in range(int(3600 / STEP)):
        t = start + k * STEP
        batch = []
        for r in range(replicas):
            labels = {"namespace": "default", "workload": f"w{r % 10}", "replica": f"r{r}", "cluster": "edge-a"}
            labels["node"] = f"n{r % NODES}"
            restarted = k >= 400 and r % 7 == 0  # a seventh of the replicas restart after 2000 s
            cpu = 0.05 * (k - 400 if restarted else k) * STEP + r * 1e-3
            batch += [Sample(CPU, labels, cpu, t), Sample(MEMORY, labels, 30e6 + (k % 7) * 1e5 + r, t)]
        batch += [Sample(NODE_CPU, {"cluster": "edge-a", "node": f"n{i}"}, 2.0 * k * STEP, t) for i in range(NODES)]
        for w in range(10):  # a latency histogram per workload: cumulative counts per bucket
            for j, le in enumerate(BUCKETS):
                labels = {"namespace": "default", "workload": f"w{w}", "le": le}
                batch.append(Sample(LATENCY + "_bucket", labels, float(k * (3 + w) * (j + 1)), t))
        store.ingest(batch)
    return store


def queries() -> list[tuple[str, MetricsQuery]]:
    """What is measured (at the end of the hour): the findings cycle's queries (20 min, every 15 s), range queries
    over the hour of every aggregation, and an instant one."""
    a = Aggregation
    return [
        ("findings: CPU rate by replica, 20 min / 15 s", MetricsQuery(Selector(CPU), 1200, a.RATE, 15, by=REPLICA)),
        ("findings: memory avg by replica, 20 min / 15 s", MetricsQuery(Selector(MEMORY), 1200, a.AVG, 15, by=REPLICA)),
        ("findings: node CPU rate by node, 20 min / 15 s", MetricsQuery(Selector(NODE_CPU), 1200, a.RATE, 15, by=NODE)),
        ("1 h / 60 s, CPU rate by workload", MetricsQuery(Selector(CPU), 3600, a.RATE, 60, by=("workload",))),
        ("1 h / 60 s, memory avg by workload", MetricsQuery(Selector(MEMORY), 3600, a.AVG, 60, by=("workload",))),
        ("1 h / 60 s, memory max, every replica", MetricsQuery(Selector(MEMORY), 3600, a.MAX, 60)),
        ("1 h / 60 s, memory min in all", MetricsQuery(Selector(MEMORY), 3600, a.MIN, 60, by=())),
        ("1 h / 60 s, CPU sum_over_time in all", MetricsQuery(Selector(CPU), 3600, a.SUM, 60, by=())),
        ("1 h / 60 s, memory p90, every replica", MetricsQuery(Selector(MEMORY), 3600, a.QUANTILE, 60, 0.9)),
        ("1 h / 60 s, memory last, every replica", MetricsQuery(Selector(MEMORY), 3600, a.LAST, 60)),
        ("instant 1 h avg of every replica", MetricsQuery(Selector(MEMORY), 3600, a.AVG)),
        ("instant 5 min CPU rate by workload", MetricsQuery(Selector(CPU), 300, a.RATE, by=("workload",))),
        (
            "instant p99 latency, 5 min, by workload",
            MetricsQuery(Selector(LATENCY), 300, a.HISTOGRAM_QUANTILE, None, 0.99, ("workload",)),
        ),
        (
            "1 h / 60 s, p99 latency by workload",
            MetricsQuery(Selector(LATENCY), 3600, a.HISTOGRAM_QUANTILE, 60, 0.99, ("workload",)),
        ),
    ]


def _bits(result: QueryResult) -> list[tuple[tuple[tuple[str, str], ...], list[tuple[float, bytes]]]]:
    return [(tuple(sorted(s.labels.items())), [(t, struct.pack("<d", v)) for t, v in s.points]) for s in result.series]


def measure(replicas: int, rounds: int, rev: str) -> list[tuple[str, float, float, int, int]]:
    """Per query: its name, baseline and today's median seconds, series and points answered."""
    old = _baseline(rev)
    start = float(int(time.time()) - 7200)
    store = _store(replicas, start)
    rows = []
    for name, query in queries():
        query = dataclasses.replace(query, at=start + 3600)
        before, after = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            expected = old(store, query)
            t1 = time.perf_counter()
            got = store.evaluate(query)
            t2 = time.perf_counter()
            before.append(t1 - t0)
            after.append(t2 - t1)
        if _bits(got) != _bits(expected):
            raise SystemExit(f"{name}: today's answer differs from the baseline's")
        points = sum(len(s.points) for s in got.series)
        rows.append((name, statistics.median(before), statistics.median(after), len(got.series), points))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision whose evaluation is the baseline")
    parser.add_argument("--replicas", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--append-results", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = measure(args.replicas, args.rounds, args.baseline)
    load_after = os.getloadavg()
    lines = [
        f"## Range queries: the store's evaluation at {args.baseline} vs today's "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"{args.replicas} replicas (10 workloads, {NODES} nodes), one hour of samples every {STEP:g} s; {args.rounds} "
        f"alternating rounds per query, same store; load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.1f}' for x in load_before)}, after {'/'.join(f'{x:.1f}' for x in load_after)}. "
        "Every answer equal to the baseline's bit for bit.",
        "",
        "```",
        f".venv/bin/python benchmarks/bench_range_eval.py --baseline {args.baseline} --replicas {args.replicas} "
        f"--rounds {args.rounds}" + (" --append-results" if args.append_results else ""),
        "```",
        "",
        "| query | series | points | baseline, ms (median) | today, ms (median) | speed-up |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, before, after, series, points in rows:
        lines.append(
            f"| {name} | {series:,} | {points:,} | {before * 1000:,.1f} | {after * 1000:,.1f} | {before / after:.1f}x |"
        )
    text = "\n".join(lines) + "\n"
    publish(text, append=args.append_results)


if __name__ == "__main__":
    main()
