"""A :class:`MetricsQuery` evaluated over selected series, as its PromQL (``metrics.promql.to_promql``) would be.

The store hands in the selected series as :class:`Windowed` sources (anything that gives the samples of a closed
time window); this module applies the per-window function at each evaluation time, then the cross-series ``by``
aggregation, and shapes :class:`Series` results. Times inside are integer milliseconds, as Prometheus keeps them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from nemo_kernel.metrics.functions import (
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


class Windowed(Protocol):
    """One series' data, asked one window at a time."""

    name: str
    labels: Mapping[str, str]

    def over(self, agg: Aggregation, q: float | None, start: int, end: int) -> float | None:
        """``agg`` over the samples in ``[start, end]`` (ms), or None where PromQL gives no sample."""


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


def evaluate(query: MetricsQuery, selected: Iterable[Windowed], now: float) -> list[Series]:
    """The result series of ``query`` over the ``selected`` series (for a histogram quantile: its ``_bucket``
    series), evaluated on the query's grid."""
    grid = Grid.of(query, now)
    # Series are aggregated in the order the store created them, as Prometheus' head returns them (by series
    # reference) for a query: the same order of additions, the same rounding.
    if query.aggregation is Aggregation.HISTOGRAM_QUANTILE:
        return _histogram_quantile(query, selected, grid)
    per_series = [(s, _points(s, query, grid)) for s in selected]
    per_series = [(s, p) for s, p in per_series if p]
    if query.by is None:
        keep_name = query.aggregation is Aggregation.LAST  # last_over_time keeps __name__, like offset
        return [Series(_labels(s.name if keep_name else None, s.labels), _seconds(points)) for s, points in per_series]
    groups: dict[tuple[tuple[str, str], ...], list[dict[int, float]]] = {}
    for s, points in per_series:
        groups.setdefault(_group_key(s.labels, query.by), []).append(points)
    combine = _COMBINE[_ACROSS[query.aggregation]]
    return [Series(dict(key), _seconds(_combined(members, combine))) for key, members in sorted(groups.items())]


def _points(s: Windowed, query: MetricsQuery, grid: Grid) -> dict[int, float]:
    points: dict[int, float] = {}
    for t in grid.times:
        value = s.over(query.aggregation, query.quantile, t - grid.range_ms, t)
        if value is not None:
            points[t] = value
    return points


def _labels(name: str | None, labels: Mapping[str, str]) -> dict[str, str]:
    out = dict(labels)
    if name is not None:
        out["__name__"] = name
    return out


def _seconds(points: Mapping[int, float]) -> list[tuple[float, float]]:
    return [(t / 1000.0, v) for t, v in sorted(points.items())]


def _group_key(labels: Mapping[str, str], by: Sequence[str]) -> tuple[tuple[str, str], ...]:
    # PromQL drops grouping labels that are empty or absent from the output series.
    return tuple(sorted((name, labels[name]) for name in set(by) if labels.get(name, "") != ""))


def _sum(values: list[float]) -> float:
    total = values[0]
    for v in values[1:]:
        total += v  # in order, as Prometheus 2.x's sum aggregator (Python 3.12's sum() compensates)
    return total


def _avg(values: list[float]) -> float:
    return incremental_mean(values)


def _max(values: list[float]) -> float:
    real = [v for v in values if not math.isnan(v)]  # max/min by skip NaN unless all are NaN
    return max(real) if real else math.nan


def _min(values: list[float]) -> float:
    real = [v for v in values if not math.isnan(v)]
    return min(real) if real else math.nan


_COMBINE: dict[str, Callable[[list[float]], float]] = {"sum": _sum, "avg": _avg, "max": _max, "min": _min}


def _combined(members: list[dict[int, float]], combine: Callable[[list[float]], float]) -> dict[int, float]:
    at: dict[int, list[float]] = {}
    for points in members:
        for t, v in points.items():
            at.setdefault(t, []).append(v)
    return {t: combine(values) for t, values in at.items()}


def _histogram_quantile(query: MetricsQuery, selected: Iterable[Windowed], grid: Grid) -> list[Series]:
    q = query.quantile if query.quantile is not None else math.nan
    # histogram_quantile(q, [sum by (le, by...)] (rate(m_bucket[w]))): group by every label but le (or by ``by``)
    groups: dict[tuple[tuple[str, str], ...], dict[int, dict[str, float]]] = {}
    for s in selected:
        le = s.labels.get("le")
        if le is None or _bound(le) is None:
            continue  # Prometheus ignores bucket series whose le is missing or not a number
        if query.by is None:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        else:
            key = _group_key(s.labels, query.by)
        by_time = groups.setdefault(key, {})
        for t, rate in _points(s, query, grid).items():
            per_le = by_time.setdefault(t, {})
            per_le[le] = per_le.get(le, 0.0) + rate
    out: list[Series] = []
    for key, by_time in sorted(groups.items()):
        points = {
            t: bucket_quantile(q, [(float(le), count) for le, count in per_le.items()]) for t, per_le in by_time.items()
        }
        out.append(Series(dict(key), _seconds(points)))
    return out


def _bound(le: str) -> float | None:
    try:
        return float(le)
    except ValueError:
        return None
