"""PromQL's range functions over every window of a range query at once, for one series' raw samples.

:func:`over_windows` gives what :func:`~nemo_kernel.metrics.evaluate.over_window` gives at each evaluation time,
bit for bit, with numpy operations over all the windows instead of a Python call per window: the same
floating-point operations in the same order for each window (a running sum or mean advances every window by its
k-th sample at once; ``rate``'s extrapolation is elementwise). Where the across-windows form would cost more than
window by window (few windows of many samples, e.g. an instant query) or could not keep the order (a window holding
NaN for ``quantile``, counter resets for ``rate``), those windows are computed one at a time by ``over_window``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from nemo_kernel.metrics.evaluate import over_window
from nemo_kernel.metrics.functions import Mask, Times, Values
from nemo_kernel.metrics.model import Aggregation

Index = npt.NDArray[np.intp]
MAX_PADDED_CELLS = 4_000_000
"""Most cells of the padded windows x samples matrix ``quantile`` sorts at once (32 MB of float64)."""


def over_windows(
    agg: Aggregation, q: float | None, times: Times, values: Values, starts: Times, ends: Times
) -> tuple[Mask, Values]:
    """``agg`` over each window ``[starts[i], ends[i]]`` (ms) of the samples: which windows have a value (PromQL
    gives none for an empty window, or one of fewer than two samples for ``rate``) and the values (undefined where
    there is none)."""
    lo: Index = np.searchsorted(times, starts, side="left")
    hi: Index = np.searchsorted(times, ends, side="right")
    n = hi - lo
    out = np.zeros(len(starts), dtype=np.float64)
    if len(values) == 0:
        return np.zeros(len(starts), dtype=np.bool_), out
    if agg in (Aggregation.RATE, Aggregation.HISTOGRAM_QUANTILE):
        return n >= 2, _rate(times, values, lo, hi, starts, ends)
    present = n > 0
    if agg is Aggregation.LAST:
        return present, values[np.maximum(hi - 1, 0)]
    k_max = int(n.max())
    across = k_max <= len(n)  # k_max numpy steps over the windows, against a Python call per window
    if agg is Aggregation.QUANTILE:
        # one padded row per window, sorted at once: worth it while the padding stays a few times the samples,
        # and bounded in memory (a few arrays of that many cells)
        cells = k_max * len(n)
        across = len(n) > 1 and cells <= min(4 * (int(n.sum()) + len(n)), MAX_PADDED_CELLS)
    if not across:
        return present, _one_by_one(agg, q, times, values, lo, hi, starts, ends, present)
    if agg is Aggregation.SUM:
        return present, _running_sum(values, lo, n, k_max)
    if agg is Aggregation.AVG:
        return present, _running_mean(values, lo, n, k_max)
    if agg is Aggregation.QUANTILE:
        return present, _quantile(q if q is not None else math.nan, times, values, lo, hi, starts, ends, k_max)
    return present, _extreme(agg is Aggregation.MAX, values, lo, n, k_max)


def over_series(
    agg: Aggregation, q: float | None, series: Sequence[tuple[Times, Values]], starts: Times, ends: Times
) -> list[tuple[Mask, Values]]:
    """:func:`over_windows` of several series over the same windows, in one call: the series' samples, all inside
    ``[starts[0], ends[-1]]``, are laid end to end on one time axis (series j shifted by j times that span), and so
    are their windows, so that each window still holds only its own series' samples."""
    if not series:
        return []
    base, width = int(starts[0]), int(ends[-1]) - int(starts[0]) + 1
    shifts = np.arange(len(series), dtype=np.int64) * width - base
    times = np.concatenate([t + shifts[j] for j, (t, _) in enumerate(series)])
    values = np.concatenate([v for _, v in series])
    every_start = (starts[None, :] + shifts[:, None]).ravel()
    every_end = (ends[None, :] + shifts[:, None]).ravel()
    present, out = over_windows(agg, q, times, values, every_start, every_end)
    w = len(starts)
    return [(present[j * w : (j + 1) * w], out[j * w : (j + 1) * w]) for j in range(len(series))]


def _one_by_one(
    agg: Aggregation,
    q: float | None,
    times: Times,
    values: Values,
    lo: Index,
    hi: Index,
    starts: Times,
    ends: Times,
    present: Mask,
) -> Values:
    out = np.zeros(len(lo), dtype=np.float64)
    for i in np.flatnonzero(present).tolist():
        a, b = int(lo[i]), int(hi[i])
        value = over_window(agg, q, times[a:b], values[a:b], int(starts[i]), int(ends[i]))
        out[i] = math.nan if value is None else value
    return out


def _kth(values: Values, lo: Index, n: Index, k: int) -> tuple[Mask, Values]:
    """The windows with a k-th sample, and those samples."""
    active = n > k
    return active, values[lo[active] + k]


def _running_sum(values: Values, lo: Index, n: Index, k_max: int) -> Values:
    # functions.sequential_sum for every window: the first sample, then each next one added in order.
    total = np.zeros(len(lo), dtype=np.float64)
    with np.errstate(all="ignore"):  # Inf - Inf is NaN, as in Prometheus
        for k in range(k_max):
            active, v = _kth(values, lo, n, k)
            total[active] = v if k == 0 else total[active] + v
    return total


def _running_mean(values: Values, lo: Index, n: Index, k_max: int) -> Values:
    # functions.incremental_mean for every window; the k-th sample of every window has the same count, k + 1.
    mean = np.zeros(len(lo), dtype=np.float64)
    with np.errstate(all="ignore"):
        for k in range(k_max):
            active, v = _kth(values, lo, n, k)
            if k == 0:
                mean[active] = v
                continue
            m = mean[active]
            count = k + 1
            # An infinite mean is kept for the same infinity or a finite value (Inf - Inf would make NaN).
            finite_v = ~np.isinf(v) & ~np.isnan(v)
            keep = np.isinf(m) & ((np.isinf(v) & ((m > 0) == (v > 0))) | finite_v)
            mean[active] = np.where(keep, m, m + (v / count - m / count))
    return mean


def _extreme(highest: bool, values: Values, lo: Index, n: Index, k_max: int) -> Values:
    # max/min_over_time: NaN is skipped unless every value is NaN; the first of equal values stays.
    best = np.full(len(lo), np.nan)
    for k in range(k_max):
        active, v = _kth(values, lo, n, k)
        b = best[active]
        better = (v > b) if highest else (v < b)
        best[active] = np.where(np.isnan(b) | better, v, b)
    return best


def _quantile(
    q: float, times: Times, values: Values, lo: Index, hi: Index, starts: Times, ends: Times, k_max: int
) -> Values:
    # functions.quantile for every window: each window's samples sorted in a row padded with +Inf past its end.
    n = hi - lo
    if math.isnan(q) or q < 0 or q > 1:
        return np.full(len(lo), math.nan if math.isnan(q) else (-math.inf if q < 0 else math.inf))
    offsets = np.arange(k_max)
    inside = offsets[None, :] < n[:, None]
    at = np.minimum(lo[:, None] + offsets[None, :], len(values) - 1)
    rows = np.sort(np.where(inside, values[at], np.inf), axis=1)
    rank = q * (np.maximum(n, 1) - 1)
    floor = np.floor(rank)
    lower = np.maximum(0, floor).astype(np.intp)
    upper = np.minimum(np.maximum(n, 1) - 1, lower + 1)
    weight = rank - floor
    picked = np.arange(len(lo))
    with np.errstate(all="ignore"):
        out: Values = rows[picked, lower] * (1 - weight) + rows[picked, upper] * weight
    # NaN sorts after the padding: those windows are ranked one by one.
    with_nan = np.flatnonzero(np.isnan(values[at]).any(axis=1, where=inside) & (n > 0))
    if len(with_nan):
        present = np.zeros(len(lo), dtype=np.bool_)
        present[with_nan] = True
        out[with_nan] = _one_by_one(Aggregation.QUANTILE, q, times, values, lo, hi, starts, ends, present)[with_nan]
    return out


def _rate(times: Times, values: Values, lo: Index, hi: Index, starts: Times, ends: Times) -> Values:
    # functions.extrapolated_rate for every window, operation for operation (windows of fewer than 2 samples give
    # garbage that the caller masks out).
    n = hi - lo
    last_at = np.maximum(hi - 1, 0)
    first, last = values[np.minimum(lo, len(values) - 1)], values[last_at]
    result = last - first
    drops = values[1:] < values[:-1]  # pair (i, i + 1) is a reset
    if drops.any():
        # Prometheus adds the value before each reset one by one, in order: windows holding a reset are done so.
        before = np.concatenate(([0], np.cumsum(drops)))
        # clamped as above: an empty window after the last sample has lo == len(values) (masked out by n >= 2)
        end = len(values) - 1
        holding = np.flatnonzero(
            (n >= 2) & (before[np.minimum(np.maximum(hi - 1, lo), end)] > before[np.minimum(lo, end)])
        )
        for i in holding.tolist():
            a, b = int(lo[i]), int(hi[i])
            total = float(result[i])
            for value in values[a : b - 1][drops[a : b - 1]].tolist():
                total += value
            result[i] = total
    t_first, t_last = times[np.minimum(lo, len(times) - 1)], times[last_at]
    with np.errstate(all="ignore"):
        duration_to_start = (t_first - starts) / 1000.0
        duration_to_end = (ends - t_last) / 1000.0
        sampled = (t_last - t_first) / 1000.0
        average_interval = sampled / (n - 1)
        duration_to_zero = sampled * (first / result)
        # min(duration_to_start, duration_to_zero), where counters cannot go below zero
        to_zero = (result > 0) & (first >= 0) & (duration_to_zero < duration_to_start)
        duration_to_start = np.where(to_zero, duration_to_zero, duration_to_start)
        threshold = average_interval * 1.1
        interval = sampled + np.where(duration_to_start < threshold, duration_to_start, average_interval / 2)
        interval = interval + np.where(duration_to_end < threshold, duration_to_end, average_interval / 2)
        factor = interval / sampled
        factor = factor / ((ends - starts) / 1000.0)
        rate: Values = result * factor
    return rate
