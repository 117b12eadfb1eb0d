"""Benchmark of PPEF's evaluation and prediction, side by side with Sloth's multiwindow rules on the same series.

Run from the repository root::

    .venv/bin/python benchmarks/bench_ppef.py                   # prints a markdown report
    .venv/bin/python benchmarks/bench_ppef.py --append-results  # also appends it to benchmarks/RESULTS.md

Figures (issue 11, "Measured"):

1. **Cycle**: 10,000 SLOs evaluated (burn rates, budgets, state) and forecast (40 recent values each) in one call,
   on one core. Baseline: Sloth's rules (the four burn-rate pairs) evaluated SLO by SLO in Python on the same
   counts, alternating rounds with the candidate.
2. **Detection**: a latency SLO (p99 <= 200 ms, timeslices of one evaluation, 99% over a 1-day period, evaluated
   every 15 s) whose p99 ramps from 100 ms across the threshold (simulated clock). When does each side first say
   so? NEMO: ``sla.breach_predicted`` (the forecast) and ``Violated``; Sloth: its first page.
3. **False alarms** over 24 simulated hours of steady noise, two services: a latency SLO whose p99 is noisy but
   well within its objective, and an error-rate SLO (target 99%, 0.2% errors) whose traffic falls to a request a
   minute at night, where Sloth pages on single failed requests. NEMO counts ``breach_predicted`` and
   ``Violated`` episodes (what the closed loop acts on), Sloth its pages; tickets are shown for both.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from results import publish

from nemo_kernel.ppef.evaluate import (
    N_COLS,
    VIOLATED,
    BurnPair,
    Col,
    FloatArray,
    SloBatch,
    burn_pairs,
    evaluate_batch,
    windows_for,
)
from nemo_kernel.ppef.predict import forecast

STEP = 15.0  # evaluation interval, seconds
HISTORY = 40  # recent values the forecast sees (10 minutes)
PERIOD = 86400.0  # the SLOs' period: Sloth's windows scaled to one day
WINDOW = 60.0  # the SLO's own window
SHORTEST = 2 * STEP  # no pair window shorter than two evaluations


# --- Sloth's rules, as its generated Prometheus rules compute them ------------------------------------------


def sloth_alerts(bad: FloatArray, total: FloatArray, target: float, pairs: tuple[BurnPair, ...]) -> tuple[bool, bool]:
    """(page, ticket) of one SLO from its counts (columns of ``evaluate.Col``): burn over both windows of a pair
    above its factor; no minimum of events."""
    page = ticket = False
    for i, pair in enumerate(pairs):
        long_col, short_col = Col.PAGE_1H_LONG + 2 * i, Col.PAGE_1H_SHORT + 2 * i
        if total[long_col] <= 0 or total[short_col] <= 0:
            continue
        budget = 1.0 - target
        fired = bad[long_col] / total[long_col] / budget > pair.factor
        fired = fired and bad[short_col] / total[short_col] / budget > pair.factor
        if fired and pair.severity == "page":
            page = True
        elif fired:
            ticket = True
    return page, ticket


# --- series on a simulated clock ------------------------------------------------------------------------------


def window_counts(
    bad_per_step: FloatArray, total_per_step: FloatArray, windows: tuple[float, ...]
) -> tuple[FloatArray, FloatArray]:
    """Bad and total events in each window ending at each step: shape ``(steps, len(windows))``."""
    cb = np.concatenate([[0.0], np.cumsum(bad_per_step)])
    ct = np.concatenate([[0.0], np.cumsum(total_per_step)])
    steps = len(bad_per_step)
    idx = np.arange(1, steps + 1)
    bad = np.empty((steps, len(windows)))
    total = np.empty((steps, len(windows)))
    for j, w in enumerate(windows):
        start = np.maximum(idx - round(w / STEP), 0)
        bad[:, j] = cb[idx] - cb[start]
        total[:, j] = ct[idx] - ct[start]
    return bad, total


def judge(
    sli: FloatArray,
    bad_per_step: FloatArray,
    total_per_step: FloatArray,
    *,
    ratio: bool,
    threshold: float,
    target: float,
    min_events: float,
) -> dict[str, np.ndarray]:
    """NEMO's and Sloth's verdict at every step of one simulated SLO (NEMO's evaluation runs on all steps at once:
    each step is one row of the batch)."""
    steps = len(sli)
    windows = windows_for(WINDOW, PERIOD, SHORTEST)
    pairs = burn_pairs(PERIOD, SHORTEST)
    bad, total = window_counts(bad_per_step, total_per_step, windows)
    # min_events counts requests for a ratio kind, timeslices in the pairs' windows for a threshold kind
    events = total.copy()
    if not ratio:
        events[:, Col.WINDOW] = np.inf
    window_value = np.convolve(sli, np.ones(int(WINDOW / STEP)) / int(WINDOW / STEP), mode="full")[:steps]
    value = bad[:, Col.WINDOW] / np.maximum(total[:, Col.WINDOW], 1) if ratio else window_value
    status = evaluate_batch(
        SloBatch(
            bad=bad,
            total=total,
            events=events,
            value=value,
            threshold=np.full(steps, np.nan if ratio else threshold),
            at_most=np.ones(steps, bool),
            is_ratio=np.full(steps, ratio),
            target=np.full(steps, target),
            min_events=np.full(steps, min_events),
            allowed_bad=np.full(steps, np.nan if ratio else (1 - target) * PERIOD / STEP),
        )
    )
    predicted = np.zeros(steps, bool)
    if not ratio:
        hist = np.lib.stride_tricks.sliding_window_view(sli, HISTORY)  # row k: steps k .. k+HISTORY-1
        times = np.arange(HISTORY) * STEP
        f = forecast(times, hist, np.full(len(hist), threshold), np.ones(len(hist), bool), now=times[-1])
        predicted[HISTORY - 1 :] = f.alarm
    sloth = np.array([sloth_alerts(bad[k], total[k], target, pairs) for k in range(steps)])
    return {
        "violated": status.state == VIOLATED,
        "predicted": predicted,
        "nemo_ticket": status.ticket,
        "sloth_page": sloth[:, 0],
        "sloth_ticket": sloth[:, 1],
    }


def episodes(flags: np.ndarray) -> int:
    """Rising edges: how many times an alarm started."""
    f = flags.astype(np.int8)
    return int(f[0] + np.count_nonzero(np.diff(f) == 1))


def first_at(flags: np.ndarray) -> float | None:
    hits = np.flatnonzero(flags)
    return float(hits[0] * STEP) if len(hits) else None


def latency_slices(p99: FloatArray, threshold: float) -> tuple[FloatArray, FloatArray]:
    return (p99 > threshold).astype(np.float64), np.ones_like(p99)


def ramp_scenario(seed: int) -> dict[str, float | None]:
    """p99 flat at 100 ms for 20 minutes, then +100 ms per 20 minutes: the true p99 crosses 200 ms at 2400 s."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(3600 / STEP)) * STEP
    true = 0.1 + np.maximum(0.0, t - 1200.0) * 0.1 / 1200.0
    p99 = true + rng.normal(0, 0.01, len(t))
    bad, total = latency_slices(p99, 0.2)
    v = judge(p99, bad, total, ratio=False, threshold=0.2, target=0.99, min_events=10)
    crossed = 2400.0
    out: dict[str, float | None] = {}
    for name in ("predicted", "violated", "sloth_page"):
        at = first_at(v[name])
        out[name] = None if at is None else (at - crossed) / STEP  # in evaluation intervals after the crossing
    return out


def noise_scenarios(seed: int) -> dict[str, int]:
    """24 h of steady noise. Latency: p99 100 ms +- 30 ms (0.04% of slices above 200 ms) and +- 40 ms (0.6%), both
    within a 1% budget. Errors: 0.2% of requests against a 1% budget; traffic from 5 req/s by day to one request a
    minute at night; NEMO with min_events 10 (the default) and 50."""
    rng = np.random.default_rng(seed)
    steps = int(86400 / STEP)
    out: dict[str, int] = {}
    for sd in (0.03, 0.04):
        p99 = 0.1 + rng.normal(0, sd, steps)
        bad, total = latency_slices(p99, 0.2)
        lat = judge(p99, bad, total, ratio=False, threshold=0.2, target=0.99, min_events=10)
        name = f"latency +- {sd * 1000:.0f} ms"
        out[f"{name}: NEMO breach_predicted"] = episodes(lat["predicted"])
        out[f"{name}: NEMO Violated"] = episodes(lat["violated"])
        out[f"{name}: Sloth pages"] = episodes(lat["sloth_page"])
        out[f"{name}: NEMO tickets (AtRisk) / Sloth tickets"] = episodes(lat["nemo_ticket"])
    hours = np.arange(steps) * STEP / 3600
    rate = np.where((hours % 24) < 6, 1 / 60, 5.0)  # requests per second: night, then day
    requests = rng.poisson(rate * STEP).astype(np.float64)
    errors = rng.binomial(requests.astype(np.int64), 0.002).astype(np.float64)
    for min_events in (10, 50):
        err = judge(np.zeros(steps), errors, requests, ratio=True, threshold=np.nan, target=0.99, min_events=min_events)
        out[f"errors: NEMO Violated (min_events {min_events})"] = episodes(err["violated"])
    out["errors: Sloth pages"] = episodes(err["sloth_page"])
    out["errors: Sloth tickets"] = episodes(err["sloth_ticket"])
    return out


# --- one cycle of 10,000 SLOs --------------------------------------------------------------------------------


def cycle_inputs(n: int, seed: int = 11) -> tuple[SloBatch, FloatArray, FloatArray]:
    rng = np.random.default_rng(seed)
    total = rng.uniform(0, 10_000, (n, N_COLS))
    bad = total * rng.uniform(0, 0.03, (n, N_COLS))
    ratio = rng.random(n) < 0.5
    batch = SloBatch(
        bad=bad,
        total=total,
        events=np.where(ratio[:, None], total, np.inf),
        value=rng.uniform(0, 0.3, n),
        threshold=np.where(ratio, np.nan, 0.2),
        at_most=np.ones(n, bool),
        is_ratio=ratio,
        target=np.full(n, 0.99),
        min_events=np.full(n, 10.0),
    )
    history = 0.1 + rng.normal(0, 0.02, (n, HISTORY))
    return batch, history, np.arange(HISTORY) * STEP


def timed(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def cycle(n: int, rounds: int) -> tuple[float, float]:
    """Medians (s of CPU time) of the candidate (NEMO: evaluate + forecast, vectorised) and the baseline (Sloth's
    pairs SLO by SLO), alternating."""
    batch, history, times = cycle_inputs(n)
    pairs = burn_pairs(PERIOD, SHORTEST)

    def candidate() -> None:
        evaluate_batch(batch)
        forecast(times, history, np.full(n, 0.2), np.ones(n, bool), now=times[-1])

    def baseline() -> None:
        for k in range(n):
            sloth_alerts(batch.bad[k], batch.total[k], 0.99, pairs)

    cand, base = [], []
    for _ in range(rounds):
        base.append(timed(baseline))
        cand.append(timed(candidate))
    return statistics.median(cand), statistics.median(base)


def report(args: argparse.Namespace) -> str:
    cand, base = cycle(args.slos, args.rounds)
    ramps = [ramp_scenario(seed) for seed in range(args.seeds)]
    noise = [noise_scenarios(100 + seed) for seed in range(args.seeds)]
    load = os.getloadavg()

    def med(key: str) -> str:
        vals = [r[key] for r in ramps]
        if any(v is None for v in vals):
            return f"missed in {sum(v is None for v in vals)} of {len(vals)}"
        nums = [v for v in vals if v is not None]
        return f"{statistics.median(nums):+.1f} ({min(nums):+.0f} .. {max(nums):+.0f})"

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = " ".join(["benchmarks/bench_ppef.py", *sys.argv[1:]])
    lines = [
        f"## PPEF evaluation and prediction (issue 11) — {now}",
        "",
        f"Python {platform.python_version()}, {platform.machine()}, 2 cores shared with other sessions; load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) at the end. Baseline in the same run: Sloth's "
        "multiwindow multi-burn-rate rules (14.4/6/3/1, windows scaled to the period) on the same counts.",
        "",
        "```sh",
        f".venv/bin/python {cmd}",
        "```",
        "",
        f"**Cycle** ({args.slos:,} SLOs, median of {args.rounds} alternating rounds, CPU seconds of one core; "
        "budget <= 1 s):",
        "",
        "| | seconds |",
        "|---|---:|",
        f"| NEMO: evaluate_batch + forecast ({HISTORY} values each), vectorised | {cand:.3f} |",
        f"| baseline: Sloth's four pairs, SLO by SLO in Python (no forecast) | {base:.3f} |",
        "",
        f"**Detection on a ramp** (p99 latency crossing 200 ms; evaluation every {STEP:.0f} s; 1-day period; "
        f"{args.seeds} seeds). Evaluation intervals after the true p99 crosses the threshold (negative: before it); "
        "median (min .. max):",
        "",
        "| signal | intervals |",
        "|---|---:|",
        f"| NEMO sla.breach_predicted | {med('predicted')} |",
        f"| NEMO Violated | {med('violated')} |",
        f"| Sloth first page | {med('sloth_page')} |",
        "",
        f"**False alarms over 24 h of steady noise** (alarm episodes, summed over {args.seeds} seeds):",
        "",
        "| alarm | episodes |",
        "|---|---:|",
    ]
    for key in noise[0]:
        lines.append(f"| {key} | {sum(n[key] for n in noise)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slos", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--append-results", action="store_true")
    args = parser.parse_args()
    text = report(args)
    publish(text, append=args.append_results)


if __name__ == "__main__":
    main()
