"""What ``/federate`` and ``/metrics`` cost on a full embedded store, and what their series limit bounds them to.

Run from the repository root::

    .venv/bin/python benchmarks/bench_federate.py                    # prints a markdown table
    .venv/bin/python benchmarks/bench_federate.py --append-results   # also appends it to benchmarks/RESULTS.md

An ``EmbeddedMetrics`` holds ``--series`` series (half of them a workload's own, half NEMO's replica series, as a
store at ``NEMO_METRICS_MAX_SERIES`` would), one fresh sample each. Timed (the text the answer would carry, without
HTTP): everything selected with no limit (what ``/federate`` answered before it had one), the same selection
refused at the default limit, an answer of exactly the default limit, and ``/metrics``' selection of NEMO's own
series. Medians of ``--rounds`` alternating rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

from results import publish

from nemo_kernel.config import Settings
from nemo_kernel.metrics import EmbeddedMetrics, Sample
from nemo_kernel.metrics.embedded import TooManySeries
from nemo_kernel.metrics.exposition import NEMO_SERIES, federate, render
from nemo_kernel.metrics.promql import parse_selector

LIMIT = Settings.model_fields["federate_max_series"].default


def _store(series: int, now: float) -> EmbeddedMetrics:
    store = EmbeddedMetrics(max_series=series + 10, clock=lambda: now)
    half = series // 2
    labels = {"namespace": "default", "workload": "w", "cluster": "c1", "node": "n1"}
    own = [
        Sample("app_jobs_total", {**labels, "replica": "r1", "job": f"j{i}"}, float(i), now - 1) for i in range(half)
    ]
    nemo = [
        Sample("nemo_replica_cpu_seconds_total", {**labels, "replica": f"r{i}"}, float(i), now - 1)
        for i in range(series - half)
    ]
    store.ingest(own + nemo)
    return store


def _timed(call: Callable[[], object]) -> tuple[float, str]:
    started = time.perf_counter()
    try:
        out = str(call())
    except TooManySeries:
        return time.perf_counter() - started, ""
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--append-results", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    now = time.time()
    store = _store(args.series, now)
    everything = [parse_selector('{__name__=~".+"}', require_metric=False)]
    cases: dict[str, Callable[[], object]] = {
        "everything, no limit (before)": lambda: render(store.latest(everything, now)),
        f"everything, limit {LIMIT:,}: refused": lambda: federate(store, everything, LIMIT, now),
        'a workload\'s series with job=~"j[0-4].*"': lambda: federate(
            store, [parse_selector('app_jobs_total{job=~"j[0-4].*"}')], LIMIT, now
        ),
        "/metrics' selection, NEMO's own series (limit lifted)": lambda: federate(store, NEMO_SERIES, args.series, now),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    answers: dict[str, str] = {}
    for _ in range(args.rounds):
        for name, call in cases.items():
            took, answers[name] = _timed(call)
            times[name].append(took)
    load_after = os.getloadavg()
    lines = [
        "## /federate and /metrics on a full store, with and without the series limit "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"{args.series:,} series (half a workload's own, half NEMO's replica series), one fresh sample each; "
        f"{args.rounds} alternating rounds; the exposition text as the route builds it, without HTTP. Load average "
        f"(1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.1f}' for x in load_after)} (2 cores shared with other sessions).",
        "",
        "```",
        f".venv/bin/python benchmarks/bench_federate.py --series {args.series} --rounds {args.rounds}"
        + (" --append-results" if args.append_results else ""),
        "```",
        "",
        "| selection | series | answer, MB | median, s |",
        "|---|---:|---:|---:|",
    ]
    for name in cases:
        text = answers[name]
        series = f"{sum(1 for line in text.splitlines() if not line.startswith('#')):,}" if text else "-"
        size = f"{len(text.encode()) / 1e6:,.1f}" if text else "422"
        lines.append(f"| {name} | {series} | {size} | {statistics.median(times[name]):.2f} |")
    text = "\n".join(lines) + "\n"
    publish(text, append=args.append_results)


if __name__ == "__main__":
    main()
