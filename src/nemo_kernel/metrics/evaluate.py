"""A :class:`MetricsQuery` evaluated over selected series, as its PromQL (``metrics.promql.to_promql``) would be.

The per-window functions of one series (``over_window``; ``over_history`` for windows reaching into the rollups;
``metrics.windows`` for every window of a range query at once) give each selected series' values on the query's
:class:`Grid` (:class:`OnGrid`); :func:`evaluate` then applies the cross-series ``by`` aggregation and shapes
:class:`Series` results. Times inside are integer milliseconds, as Prometheus keeps them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nemo_kernel.metrics.functions import (
    Mask,
    Times,
    Values,
    bucket_quantile,
    counter_increase,
    extrapolated_rate,
    incremental_mean,
    quantile,
    sequential_sum,
)
from nemo_kernel.metrics.model import Aggregation, MetricsQuery, Series
from nemo_kernel.metrics.rollups import History


@dataclass(frozen=True, slots=True)
class OnGrid:
    """One selected series evaluated at each time of a query's grid: its per-window function's values, and which
    times have one (PromQL gives no sample for an empty window)."""

    name: str
    labels: Mapping[str, str]
    present: Mask
    values: Values


def over_window(agg: Aggregation, q: float | None, times: Times, values: Values, start: int, end: int) -> float | None:
    """The PromQL range function of ``agg`` over one window's raw samples."""
    if agg in (Aggregation.RATE, Aggregation.HISTOGRAM_QUANTILE):
        return extrapolated_rate(times, values, start, end)
    if len(values) == 0:
        return None
    if agg is Aggregation.LAST:
        return float(values[-1])
    if agg is Aggregation.SUM:
        return sequential_sum(values)
    if agg is Aggregation.AVG:
        return incremental_mean(values.tolist())
    if agg is Aggregation.QUANTILE:
        return quantile(q if q is not None else math.nan, values)
    # max/min_over_time skip NaN unless every value is NaN
    real = values[~np.isnan(values)]
    if len(real) == 0:
        return math.nan
    return float(real.max() if agg is Aggregation.MAX else real.min())


def over_history(
    agg: Aggregation,
    q: float | None,
    history: History,
    times: Times,
    values: Values,
    start: int,
    end: int,
) -> float | None:
    """``agg`` over a window that reaches back into rollups: the buckets wholly inside it, plus the raw samples.

    Exact for count-based answers (avg, sum, min, max, last); ``rate`` is the buckets' increase plus the raw one
    over the window, without extrapolation; ``quantile`` ranks the raw values with one value (the mean) per bucket.
    """
    sl = history.within(start, end)
    if sl.start == sl.stop:
        return over_window(agg, q, times, values, start, end)
    cut = int(np.searchsorted(times, history.raw_from, side="left"))
    times, values = times[cut:], values[cut:]
    if agg in (Aggregation.RATE, Aggregation.HISTOGRAM_QUANTILE):
        before = float(history.lasts[sl][-1])
        total = float(history.incs[sl].sum()) + counter_increase(values, before if len(values) else None)
        return total / ((end - start) / 1000.0)
    if agg is Aggregation.LAST:
        return float(values[-1]) if len(values) else float(history.lasts[sl][-1])
    if agg is Aggregation.SUM:
        return float(history.sums[sl].sum() + values.sum())
    if agg is Aggregation.AVG:
        return float((history.sums[sl].sum() + values.sum()) / (history.counts[sl].sum() + len(values)))
    if agg is Aggregation.QUANTILE:
        means = history.sums[sl] / history.counts[sl]
        return quantile(q if q is not None else math.nan, np.concatenate((means, values)))
    extremes = np.concatenate((history.maxs[sl] if agg is Aggregation.MAX else history.mins[sl], values))
    real = extremes[~np.isnan(extremes)]
    if len(real) == 0:
        return math.nan
    return float(real.max() if agg is Aggregation.MAX else real.min())


@dataclass(frozen=True, slots=True)
class Grid:
    """The evaluation times of a query (ms) and the range each one looks back over (ms)."""

    times: Sequence[int]
    range_ms: int

    @property
    def earliest(self) -> int:
        """The start of the first window (ms)."""
        return self.times[0] - self.range_ms if self.times else 0

    @property
    def ends(self) -> Times:
        """The evaluation times (ms) as an array: where each window ends."""
        return np.asarray(self.times, dtype=np.int64)

    @property
    def starts(self) -> Times:
        """Where each window starts (ms): Prometheus 2.x range selectors are closed at both ends."""
        return self.ends - self.range_ms

    @classmethod
    def of(cls, query: MetricsQuery, now: float) -> Grid:
        """An instant query evaluates once at ``at`` over ``window``; a range query from ``at - window`` to ``at``
        every ``step``, each point over ``step`` (Prometheus' ``start + k*step <= end``)."""
        end = round((query.at if query.at is not None else now) * 1000)
        window = round(query.window * 1000)
        if query.step is None:
            return cls((end,), window)
        step = max(1, round(query.step * 1000))
        return cls(tuple(range(end - window, end + 1, step)), step)


# How series are combined across when ``by`` is set (MetricsQuery's docstring; promql.to_promql writes the same).
_ACROSS: dict[Aggregation, str] = {
    Aggregation.AVG: "avg",
    Aggregation.MAX: "max",
    Aggregation.MIN: "min",
    Aggregation.SUM: "sum",
    Aggregation.RATE: "sum",
    Aggregation.LAST: "max",
    Aggregation.QUANTILE: "max",
}


def evaluate(query: MetricsQuery, grid: Grid, selected: Iterable[OnGrid]) -> list[Series]:
    """The result series of ``query`` from its ``selected`` series (for a histogram quantile: its ``_bucket``
    series) evaluated on its ``grid``: combined across series by ``by``, or each on its own."""
    # Series are aggregated in the order the store created them, as Prometheus' head returns them (by series
    # reference) for a query: the same order of additions, the same rounding.
    if query.aggregation is Aggregation.HISTOGRAM_QUANTILE:
        return _histogram_quantile(query, selected, grid)
    ends = grid.ends
    per_series = [s for s in selected if s.present.any()]
    if query.by is None:
        keep_name = query.aggregation is Aggregation.LAST  # last_over_time keeps __name__, like offset
        return [
            Series(_labels(s.name if keep_name else None, s.labels), _seconds(ends, s.present, s.values))
            for s in per_series
        ]
    groups: dict[tuple[tuple[str, str], ...], list[tuple[Mask, Values]]] = {}
    for s in per_series:
        groups.setdefault(_group_key(s.labels, query.by), []).append((s.present, s.values))
    combine = _COMBINE[_ACROSS[query.aggregation]]
    return [Series(dict(key), _seconds(ends, *combine(members))) for key, members in sorted(groups.items())]


def _labels(name: str | None, labels: Mapping[str, str]) -> dict[str, str]:
    out = dict(labels)
    if name is not None:
        out["__name__"] = name
    return out


def _seconds(ends: Times, present: Mask, values: Values) -> list[tuple[float, float]]:
    return list(zip((ends[present] / 1000.0).tolist(), values[present].tolist(), strict=True))


def _group_key(labels: Mapping[str, str], by: Sequence[str]) -> tuple[tuple[str, str], ...]:
    # PromQL drops grouping labels that are empty or absent from the output series.
    return tuple(sorted((name, labels[name]) for name in set(by) if labels.get(name, "") != ""))


# Across series, each evaluation time on its own, members in the store's order: the same operations in the same
# order as Prometheus' aggregators, for every time at once.


def _sum(members: list[tuple[Mask, Values]]) -> tuple[Mask, Values]:
    seen = np.zeros_like(members[0][0])
    total = np.zeros_like(members[0][1])
    with np.errstate(all="ignore"):
        for present, values in members:
            total = np.where(present, np.where(seen, total + values, values), total)  # in order, as Prometheus 2.x
            seen |= present
    return seen, total


def _avg(members: list[tuple[Mask, Values]]) -> tuple[Mask, Values]:
    # functions.incremental_mean at every time, over the members that have a value there
    count = np.zeros_like(members[0][1])
    mean = np.zeros_like(members[0][1])
    with np.errstate(all="ignore"):
        for present, v in members:
            count = np.where(present, count + 1, count)
            finite_v = ~np.isinf(v) & ~np.isnan(v)
            keep = np.isinf(mean) & ((np.isinf(v) & ((mean > 0) == (v > 0))) | finite_v)
            moved = np.where(keep, mean, mean + (v / count - mean / count))
            mean = np.where(present, np.where(count == 1, v, moved), mean)
    return count > 0, mean


def _extreme(highest: bool, members: list[tuple[Mask, Values]]) -> tuple[Mask, Values]:
    # max/min by skip NaN unless all are NaN; the first of equal values stays (Python's max/min)
    seen = np.zeros_like(members[0][0])
    best = np.full_like(members[0][1], np.nan)
    for present, v in members:
        better = (v > best) if highest else (v < best)
        best = np.where(present & (np.isnan(best) | better), v, best)
        seen |= present
    return seen, best


_COMBINE: dict[str, Callable[[list[tuple[Mask, Values]]], tuple[Mask, Values]]] = {
    "sum": _sum,
    "avg": _avg,
    "max": lambda members: _extreme(True, members),
    "min": lambda members: _extreme(False, members),
}


def _histogram_quantile(query: MetricsQuery, selected: Iterable[OnGrid], grid: Grid) -> list[Series]:
    q = query.quantile if query.quantile is not None else math.nan
    # histogram_quantile(q, [sum by (le, by...)] (rate(m_bucket[w]))): group by every label but le (or by ``by``)
    groups: dict[tuple[tuple[str, str], ...], dict[int, dict[str, float]]] = {}
    ends = grid.ends
    for s in selected:
        le = s.labels.get("le")
        if le is None or _bound(le) is None:
            continue  # Prometheus ignores bucket series whose le is missing or not a number
        if query.by is None:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        else:
            key = _group_key(s.labels, query.by)
        by_time = groups.setdefault(key, {})
        for t, rate in zip(ends[s.present].tolist(), s.values[s.present].tolist(), strict=True):
            per_le = by_time.setdefault(t, {})
            per_le[le] = per_le.get(le, 0.0) + rate
    out: list[Series] = []
    for key, by_time in sorted(groups.items()):
        points = {
            t: bucket_quantile(q, [(float(le), count) for le, count in per_le.items()]) for t, per_le in by_time.items()
        }
        out.append(Series(dict(key), [(t / 1000.0, v) for t, v in sorted(points.items())]))
    return out


def _bound(le: str) -> float | None:
    try:
        return float(le)
    except ValueError:
        return None
