"""PromQL's functions over one window of one series, as Prometheus 2.x computes them (``promql/functions.go``).

Each takes the window's samples as numpy arrays (timestamps in integer milliseconds, values as float64, oldest
first) and returns a float, or ``None`` where Prometheus returns no sample (an empty window, fewer than two
samples for ``rate``). Keeping the arithmetic identical to Prometheus' is what lets the embedded store and a real
Prometheus answer the same :class:`~nemo_kernel.metrics.model.MetricsQuery` with the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

Times = npt.NDArray[np.int64]
Values = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
"""Which evaluation times of a grid have a value."""


def extrapolated_rate(times: Times, values: Values, range_start: int, range_end: int) -> float | None:
    """``rate(x[range])`` evaluated at ``range_end`` (ms) over the samples in ``[range_start, range_end]``.

    Counter resets (a value lower than the one before) add the value before the reset, and the increase is
    extrapolated towards the window's edges as Prometheus does: all the way when the first/last sample is within
    1.1 average intervals of the edge, else by half an interval, and never below a counter's zero point.
    """
    n = len(values)
    if n < 2:
        return None
    first, last = float(values[0]), float(values[-1])
    result = last - first
    drops = values[1:] < values[:-1]
    if drops.any():
        # Prometheus adds the value before each reset (one by one, in order: the same rounding).
        for before_reset in values[:-1][drops].tolist():
            result += before_reset
    t_first, t_last = int(times[0]), int(times[-1])
    duration_to_start = (t_first - range_start) / 1000.0
    duration_to_end = (range_end - t_last) / 1000.0
    sampled = (t_last - t_first) / 1000.0
    average_interval = sampled / (n - 1)
    if result > 0 and first >= 0:
        # Counters cannot go negative: extrapolate at most to where the counter would have been zero.
        duration_to_zero = sampled * (first / result)
        duration_to_start = min(duration_to_start, duration_to_zero)
    threshold = average_interval * 1.1
    interval = sampled
    interval += duration_to_start if duration_to_start < threshold else average_interval / 2
    interval += duration_to_end if duration_to_end < threshold else average_interval / 2
    factor = interval / sampled
    factor /= (range_end - range_start) / 1000.0
    return result * factor


def sequential_sum(values: Values) -> float:
    """The sum added up in order, as Prometheus does (numpy's ``sum`` adds pairwise, Python 3.12's compensates:
    both round differently)."""
    if not len(values):
        return 0.0
    with np.errstate(all="ignore"):  # Inf - Inf is NaN, as in Prometheus: not a warning in the server's log
        return float(np.cumsum(values)[-1])


def incremental_mean(values: Iterable[float]) -> float:
    """Prometheus' running mean (``avg_over_time`` and the ``avg`` aggregator): no overflow on huge values, and
    the same rounding as Prometheus."""
    mean, count = math.nan, 0
    for v in values:
        count += 1
        if count == 1:
            mean = v
            continue
        if math.isinf(mean):
            if math.isinf(v) and (mean > 0) == (v > 0):
                continue  # the same infinity: the mean is right already
            if not math.isinf(v) and not math.isnan(v):
                continue  # a finite value leaves an infinite mean as it is (Inf - Inf would make NaN)
        mean += v / count - mean / count
    return mean


def counter_increase(values: Values, before: float | None = None) -> float:
    """The increase of a counter over ``values`` with resets handled (no extrapolation); ``before`` is the value
    just before the first one, when known (the last value of the previous rollup bucket)."""
    if before is not None:
        values = np.concatenate(([before], values))
    if len(values) < 2:
        return 0.0
    deltas = np.diff(values)
    # After a reset the counter started from zero, so the whole new value is the increase.
    return float(np.where(deltas >= 0, deltas, values[1:]).sum())


def quantile(q: float, values: Values | Sequence[float]) -> float:
    """PromQL's ``quantile``/``quantile_over_time``: linear interpolation between the closest ranks."""
    if len(values) == 0:
        return math.nan
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    rank = q * (len(ordered) - 1)
    lower = max(0, math.floor(rank))
    upper = min(len(ordered) - 1, lower + 1)
    weight = rank - math.floor(rank)
    return float(ordered[lower] * (1 - weight) + ordered[upper] * weight)


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """PromQL's ``histogram_quantile`` over classic buckets ``(upper bound le, cumulative count)``.

    NaN when there is no ``+Inf`` bucket, fewer than two buckets or no observations; the quantile is interpolated
    linearly inside its bucket, and the ``+Inf`` bucket answers the highest finite bound.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if not buckets:
        return math.nan
    merged: dict[float, float] = {}
    for bound, count in buckets:
        merged[bound] = merged.get(bound, 0.0) + count  # coalesceBuckets: equal bounds are one bucket
    ordered = sorted(merged.items())
    if not math.isinf(ordered[-1][0]) or ordered[-1][0] < 0:
        return math.nan
    # ensureMonotonic: rates of cumulative buckets can be slightly out of order (scrapes at different times).
    bounds = [b for b, _ in ordered]
    counts: list[float] = []
    highest = -math.inf
    for _, count in ordered:
        highest = max(highest, count)
        counts.append(highest)
    if len(bounds) < 2:
        return math.nan
    observations = counts[-1]
    if observations == 0 or math.isnan(observations):
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(bounds) - 1) if counts[i] >= rank), len(bounds) - 1)
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[b], counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)
