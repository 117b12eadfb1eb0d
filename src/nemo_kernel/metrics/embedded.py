"""The embedded time-series store, the default analytics backend of ``nemo up``: samples in, PromQL answers out.

:class:`EmbeddedMetrics` is both the :class:`MetricSink` the collectors write to and the :class:`MetricsReader`
the API, PPEF and the decision engine ask; its answers are those of the query's PromQL (``metrics.promql``) over
the same samples. Recent raw samples are kept in memory (:class:`~nemo_kernel.metrics.raw.RawSeries`, bounded by
the raw retention, a per-series sample bound and ``max_series``). Everything refused is counted in
``nemo_samples_dropped_total{reason=...}``, itself a series of this store.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from nemo_kernel.metrics import matching
from nemo_kernel.metrics.evaluate import evaluate, over_window
from nemo_kernel.metrics.model import (
    LABEL_NAME,
    METRIC_NAME,
    Aggregation,
    MetricsQuery,
    QueryResult,
    Sample,
    Selector,
)
from nemo_kernel.metrics.names import SAMPLES_DROPPED
from nemo_kernel.metrics.raw import RawSeries

DEFAULT_RAW_RETENTION = 2 * 3600.0
DEFAULT_MAX_SERIES = 200_000
DEFAULT_MAX_SAMPLES_PER_SERIES = 7_200  # 2 h at one sample a second
FUTURE_SLACK = 600.0
"""Seconds a sample's timestamp may be ahead of the store's clock (clock skew between hosts)."""
MAX_LABELS = 64
"""Most labels one series may carry."""
MAX_NAME_CHARS = 256
"""Longest metric or label name."""
MAX_VALUE_CHARS = 4096
"""Longest label value."""

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


class DropReason:
    """Why a sample was refused (the ``reason`` label of ``nemo_samples_dropped_total``)."""

    BAD_NAME = "bad_name"  # metric name not a Prometheus name
    BAD_LABEL = "bad_label"  # label name invalid or reserved, value not a valid bounded string, too many labels
    BAD_TIMESTAMP = "bad_timestamp"  # not a finite number
    BAD_VALUE = "bad_value"  # not a number
    OUT_OF_ORDER = "out_of_order"  # not newer than the series' newest sample
    TOO_OLD = "too_old"  # older than the raw retention allows
    TOO_NEW = "too_new"  # more than FUTURE_SLACK ahead of the clock (it would block the series' real samples)
    SERIES_LIMIT = "series_limit"  # a new series beyond max_series


class _Stored:
    """A held series as the evaluator sees it (raw samples only)."""

    __slots__ = ("labels", "name", "raw")

    def __init__(self, raw: RawSeries) -> None:
        self.raw = raw
        self.name = raw.name
        self.labels: Mapping[str, str] = raw.labels

    def over(self, agg: Aggregation, q: float | None, start: int, end: int) -> float | None:
        times, values = self.raw.window(start, end)
        return over_window(agg, q, times, values, start, end)


class EmbeddedMetrics:
    """In-memory recent samples with PromQL-exact queries; see the module docstring."""

    source = "embedded"

    def __init__(
        self,
        *,
        raw_retention: float = DEFAULT_RAW_RETENTION,
        max_series: int = DEFAULT_MAX_SERIES,
        max_samples_per_series: int = DEFAULT_MAX_SAMPLES_PER_SERIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``raw_retention`` seconds of raw samples are kept per series (at most ``max_samples_per_series``);
        at most ``max_series`` series are held; ``clock`` gives "now" (unix seconds) for queries without ``at``
        and for the age of samples."""
        if not (math.isfinite(raw_retention) and raw_retention > 0):
            raise ValueError("raw_retention must be a positive number of seconds")
        self.raw_retention_ms = round(raw_retention * 1000)
        self.max_series = max_series
        self.max_samples_per_series = max(16, max_samples_per_series)
        self.clock = clock
        self._series: dict[SeriesKey, RawSeries] = {}
        self._by_name: dict[str, dict[SeriesKey, RawSeries]] = {}
        # (name, label names, label values) as a producer gives them -> series: the ingest fast path (no sorting,
        # no per-label tuples)
        self._seen: dict[tuple[str, tuple[str, ...], tuple[str, ...]], RawSeries] = {}
        self._dropped: dict[str, int] = {}
        self._lock = threading.Lock()  # ingest (event loop) and queries (worker threads) meet here

    # --- in --------------------------------------------------------------------------------------------------

    def ingest(self, samples: Sequence[Sample]) -> None:
        """Keep ``samples``; a bad one is dropped and counted by reason, never raised (the batch goes on)."""
        dropped: dict[str, int] = {}
        now = self.clock()
        oldest, newest = now - self.raw_retention_ms / 1000, now + FUTURE_SLACK
        retention, max_samples = self.raw_retention_ms, self.max_samples_per_series
        with self._lock:
            seen = self._seen
            for s in samples:
                # The hot path (200,000 samples/s): a known series, labels in the order it was first seen.
                try:
                    labels = s.labels
                    series = seen.get((s.name, tuple(labels), tuple(labels.values())))
                except (TypeError, AttributeError):
                    series = None  # unhashable labels: refused below
                if series is None:
                    series, reason = self._series_of(s)
                    if series is None:
                        dropped[reason] = dropped.get(reason, 0) + 1
                        continue
                t, v = s.timestamp, s.value
                if t.__class__ is not float and (t.__class__ is not int or isinstance(t, bool)):
                    reason = DropReason.BAD_TIMESTAMP
                elif v.__class__ is not float and (v.__class__ is not int or isinstance(v, bool)):
                    reason = DropReason.BAD_VALUE
                elif not oldest <= t <= newest:  # NaN and infinities fail both comparisons
                    reason = _time_refusal(t, oldest)
                else:
                    ms = round(t * 1000)
                    if series.append(ms, float(v), ms - retention, max_samples):
                        continue
                    reason = DropReason.OUT_OF_ORDER
                dropped[reason] = dropped.get(reason, 0) + 1
            if dropped:
                self._count_drops(dropped, round(now * 1000))

    def _series_of(self, s: Sample) -> tuple[RawSeries | None, str]:
        """The series of a sample the fast lookup missed (a new series, or labels in another order), created if
        its name and labels are valid and there is room; else None and why."""
        reason = self._refusal(s)
        if reason is not None:
            return None, reason
        key: SeriesKey = (s.name, tuple(sorted(s.labels.items())))
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.max_series:
                return None, DropReason.SERIES_LIMIT
            series = RawSeries(s.name, dict(key[1]))
            self._series[key] = series
            self._by_name.setdefault(s.name, {})[key] = series
        if len(self._seen) < 2 * self.max_series:  # label orders a producer uses; bounded against shuffling
            self._seen[(s.name, tuple(s.labels), tuple(s.labels.values()))] = series
        return series, ""

    def _refusal(self, s: Sample) -> str | None:
        """Why a new series' name or labels are refused, if they are."""
        if not isinstance(s.name, str) or len(s.name) > MAX_NAME_CHARS or not METRIC_NAME.fullmatch(s.name):
            return DropReason.BAD_NAME
        if len(s.labels) > MAX_LABELS:
            return DropReason.BAD_LABEL
        for name, value in s.labels.items():
            if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or not LABEL_NAME.fullmatch(name):
                return DropReason.BAD_LABEL
            if name.startswith("__") or not isinstance(value, str) or len(value) > MAX_VALUE_CHARS:
                return DropReason.BAD_LABEL
            if not _valid_unicode(value):
                return DropReason.BAD_LABEL
        return None

    def _count_drops(self, dropped: Mapping[str, int], now_ms: int) -> None:
        # The drop counters are series of this store, so /federate, queries and dashboards see them like any other.
        for reason, count in dropped.items():
            self._dropped[reason] = self._dropped.get(reason, 0) + count
            key: SeriesKey = (SAMPLES_DROPPED.name, (("reason", reason),))
            series = self._series.get(key)
            if series is None:
                series = RawSeries(SAMPLES_DROPPED.name, {"reason": reason})
                self._series[key] = series  # beyond max_series too: the count of drops must not itself be dropped
                self._by_name.setdefault(SAMPLES_DROPPED.name, {})[key] = series
            last = series.last_time
            t = now_ms if last is None else max(now_ms, last + 1)
            series.append(t, float(self._dropped[reason]), t - self.raw_retention_ms, self.max_samples_per_series)

    def dropped(self) -> dict[str, int]:
        """Samples refused since start, by reason."""
        with self._lock:
            return dict(self._dropped)

    def series_count(self) -> int:
        """How many series are held."""
        return len(self._series)

    # --- housekeeping ----------------------------------------------------------------------------------------

    def prune(self, now: float | None = None) -> int:
        """Drop raw samples older than the retention and forget series left without samples; returns how many
        series were forgotten."""
        keep_from = round((self.clock() if now is None else now) * 1000) - self.raw_retention_ms
        with self._lock:
            empty = []
            for key, series in self._series.items():
                series.trim(keep_from)
                if series.n == 0:
                    empty.append(key)
            if empty:
                gone = {id(self._series[key]) for key in empty}
                self._seen = {k: v for k, v in self._seen.items() if id(v) not in gone}
            for key in empty:
                series = self._series.pop(key)
                by_name = self._by_name.get(series.name)
                if by_name is not None:
                    by_name.pop(key, None)
                    if not by_name:
                        del self._by_name[series.name]
            return len(empty)

    # --- out -------------------------------------------------------------------------------------------------

    def select(self, selector: Selector) -> Iterator[RawSeries]:
        """The held series ``selector`` selects (call with the lock held or on a quiescent store)."""
        matching.check(selector)
        if selector.metric:
            candidates: Iterator[RawSeries] = iter(list(self._by_name.get(selector.metric, {}).values()))
        else:
            candidates = iter(list(self._series.values()))
        for series in candidates:
            if matching.selects(selector, series.name, series.labels):
                yield series

    def evaluate(self, query: MetricsQuery) -> QueryResult:
        """Answer ``query`` now, in the calling thread (``query`` runs it in a worker thread)."""
        selector = query.selector
        if query.aggregation is Aggregation.HISTOGRAM_QUANTILE:
            selector = Selector(selector.metric + "_bucket", selector.matchers)
        now = self.clock()
        with self._lock:
            selected = [_Stored(s) for s in self.select(selector)]
            series = evaluate(query, selected, now)
        return QueryResult(series=series, source=self.source)

    async def query(self, query: MetricsQuery) -> QueryResult:
        """The series that answer ``query`` (a ``ValueError`` for a bad regular expression)."""
        return await asyncio.to_thread(self.evaluate, query)


def _time_refusal(t: float, oldest: float) -> str:
    if not math.isfinite(t):
        return DropReason.BAD_TIMESTAMP
    return DropReason.TOO_OLD if t < oldest else DropReason.TOO_NEW


def _valid_unicode(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")  # lone surrogates cannot be exposed or stored
    except UnicodeEncodeError:
        return False
    return True
