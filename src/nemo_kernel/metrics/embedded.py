"""The embedded time-series store, the default analytics backend of ``nemo up``: samples in, PromQL answers out.

:class:`EmbeddedMetrics` is both the :class:`MetricSink` the collectors write to and the :class:`MetricsReader`
the API, PPEF and the decision engine ask; its answers are those of the query's PromQL (``metrics.promql``) over
the same samples. Recent raw samples are kept in memory (:class:`~nemo_kernel.metrics.raw.RawSeries`, bounded by
the raw retention, a per-series sample bound and ``max_series``). Everything refused (``metrics.admission``) is
counted in ``nemo_samples_dropped_total{reason=...}``, itself a series of this store; 1-minute and 1-hour rollups
(``metrics.rollups``) written to a :class:`RollupStore` answer windows older than the raw samples.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from nemo_kernel.metrics import matching
from nemo_kernel.metrics.admission import FUTURE_SLACK, DropReason, series_refusal, time_refusal
from nemo_kernel.metrics.evaluate import Grid, OnGrid, evaluate, over_history
from nemo_kernel.metrics.functions import Mask, Times, Values
from nemo_kernel.metrics.model import (
    Aggregation,
    MetricsQuery,
    QueryResult,
    Sample,
    Selector,
)
from nemo_kernel.metrics.names import RESERVED_PREFIX, SAMPLES_DROPPED
from nemo_kernel.metrics.raw import RawSeries
from nemo_kernel.metrics.rollups import MINUTE, RESOLUTIONS, History, RollupRow, RollupStore, labels_key, rollup_rows
from nemo_kernel.metrics.windows import over_series

ROLLUP_LAG = 60.0
"""Seconds a bucket's end must be behind the clock before it is rolled up: late samples of a scrape still land."""
MAX_PENDING_ROWS = 1_000_000
"""Rollup rows kept for a retry while the store cannot take them (then the oldest go)."""
DEFAULT_RAW_RETENTION = 2 * 3600.0
DEFAULT_MAX_SERIES = 200_000
DEFAULT_MAX_SAMPLES_PER_SERIES = 7_200  # 2 h at one sample a second
MAX_QUERY_SAMPLES = 5_000_000
"""Most raw samples one query may read (80 MB of copies), like Prometheus' ``query.max-samples``."""
MAX_QUERY_POINTS = 5_000_000
"""Most (series x evaluation time) points one query may compute."""
_CHUNK = 2_000  # series handled per hold of the lock by housekeeping: ingest waits at most that long
LOOKBACK = 300.0
"""Seconds back an instant value is looked for (Prometheus' default lookback delta)."""
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


_NO_TIMES = np.empty(0, dtype=np.int64)
_NO_VALUES = np.empty(0, dtype=np.float64)


class TooManySeries(Exception):
    """A selection of more series than an answer may hold."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit:,} series selected")
        self.limit = limit


class EmbeddedMetrics:
    """In-memory recent samples with PromQL-exact queries; see the module docstring."""

    source = "embedded"

    def __init__(
        self,
        *,
        raw_retention: float = DEFAULT_RAW_RETENTION,
        max_series: int = DEFAULT_MAX_SERIES,
        max_samples_per_series: int = DEFAULT_MAX_SAMPLES_PER_SERIES,
        rollups: RollupStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``raw_retention`` seconds of raw samples are kept per series (at most ``max_samples_per_series``);
        at most ``max_series`` series are held; ``clock`` gives "now" (unix seconds) for queries without ``at``
        and for the age of samples. ``rollups`` keeps the 1 min and 1 h history (:meth:`flush` writes it) and
        answers the parts of windows older than the raw samples; without it only raw samples answer."""
        if not (math.isfinite(raw_retention) and raw_retention > 0):
            raise ValueError("raw_retention must be a positive number of seconds")
        self.raw_retention_ms = round(raw_retention * 1000)
        self.max_series = max_series
        self.max_samples_per_series = max(16, max_samples_per_series)
        self.clock = clock
        self.rollups = rollups
        self._pending: list[RollupRow] = []  # rows a failed save left for the next flush
        self._series: dict[SeriesKey, RawSeries] = {}
        self._by_name: dict[str, dict[SeriesKey, RawSeries]] = {}
        # (name, label names, label values) as a producer gives them -> series: the ingest fast path (no sorting,
        # no per-label tuples)
        self._seen: dict[tuple[str, tuple[str, ...], tuple[str, ...]], RawSeries] = {}
        self._dropped: dict[str, int] = {}
        self._foreign = 0  # held series whose name is not nemo_ (workloads' own): at most half of max_series
        self._lock = threading.Lock()  # ingest (event loop) and queries (worker threads) meet here

    # --- in --------------------------------------------------------------------------------------------------

    def ingest(self, samples: Sequence[Sample]) -> None:
        """Keep ``samples``; a bad one is dropped and counted by reason, never raised (the batch goes on)."""
        dropped: dict[str, int] = {}
        now = self.clock()
        oldest, newest = now - self.raw_retention_ms / 1000, now + FUTURE_SLACK
        max_samples = self.max_samples_per_series
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
                    reason = time_refusal(t, oldest)
                else:
                    ms = round(t * 1000)
                    if ms > series.last:  # RawSeries.append, inlined: this line runs for every sample
                        series.t.append(ms)
                        series.v.append(v)
                        series.last = ms
                        if len(series.t) > max_samples:
                            series.bound(max_samples)
                        continue
                    reason = DropReason.OUT_OF_ORDER
                dropped[reason] = dropped.get(reason, 0) + 1
            if dropped:
                self._count_drops(dropped, round(now * 1000))

    def _series_of(self, s: Sample) -> tuple[RawSeries | None, str]:
        """The series of a sample the fast lookup missed (a new series, or labels in another order), created if
        its name and labels are valid and there is room; else None and why."""
        reason = series_refusal(s)
        if reason is not None:
            return None, reason
        key: SeriesKey = (s.name, tuple(sorted(s.labels.items())))
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.max_series:
                return None, DropReason.SERIES_LIMIT
            foreign = not s.name.startswith(RESERVED_PREFIX)
            if foreign and self._foreign >= self.max_series // 2:
                # Workloads invent label values at will: the other half stays for the series NEMO judges them by.
                return None, DropReason.SERIES_LIMIT
            self._foreign += foreign
            series = RawSeries(s.name, dict(key[1]))
            self._series[key] = series
            self._by_name.setdefault(s.name, {})[key] = series
        if len(self._seen) < 2 * self.max_series:  # label orders a producer uses; bounded against shuffling
            self._seen[(s.name, tuple(s.labels), tuple(s.labels.values()))] = series
        return series, ""

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
            total = float(self._dropped[reason])
            if series.n and series.last >= now_ms:
                series.update_last(total)  # counted again within the same millisecond (or the clock stepped back)
            else:
                series.append(now_ms, total, self.max_samples_per_series)

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
            everything = list(self._series.items())
        empty: list[SeriesKey] = []
        for i in range(0, len(everything), _CHUNK):
            with self._lock:
                for key, series in everything[i : i + _CHUNK]:
                    series.trim(keep_from)
                    if not series.t:
                        empty.append(key)
        with self._lock:
            # a sample may have arrived since: only forget what is still empty
            gone = {id(s) for key in empty if (s := self._series.get(key)) is not None and not s.t}
            if gone:
                self._seen = {k: v for k, v in self._seen.items() if id(v) not in gone}
                for key in empty:
                    quiet = self._series.get(key)
                    if quiet is None or id(quiet) not in gone:
                        continue
                    del self._series[key]
                    self._foreign -= not quiet.name.startswith(RESERVED_PREFIX)
                    by_name = self._by_name.get(quiet.name)
                    if by_name is not None:
                        by_name.pop(key, None)
                        if not by_name:
                            del self._by_name[quiet.name]
            return len(gone)

    # --- out -------------------------------------------------------------------------------------------------

    def select(self, selector: Selector) -> Iterator[RawSeries]:
        """The held series ``selector`` selects (call with the lock held or on a quiescent store)."""
        matching.check(selector)
        if selector.metric:
            groups = [self._by_name.get(selector.metric, {})]
        else:
            # Matchers on the name are checked once per name, not once per series (federation's {__name__=~...}).
            on_name = [m for m in selector.matchers if m.label == "__name__"]
            groups = [g for name, g in self._by_name.items() if all(matching.matches(m, name) for m in on_name)]
            selector = Selector("", tuple(m for m in selector.matchers if m.label != "__name__"))
        for group in groups:
            for series in list(group.values()):
                if matching.selects(selector, series.name, series.labels):
                    yield series

    def evaluate(self, query: MetricsQuery) -> QueryResult:
        """Answer ``query`` now, in the calling thread (``query`` runs it in a worker thread)."""
        selector = query.selector
        if query.aggregation is Aggregation.HISTOGRAM_QUANTILE:
            selector = Selector(selector.metric + "_bucket", selector.matchers)
        now = self.clock()
        grid = Grid.of(query, now)
        with self._lock:
            held = {labels_key(s.labels): s for s in self.select(selector)}
            raw_first = min((s.t[0] for s in held.values() if s.t), default=None)
        histories: dict[str, _Loaded] = {}
        if self.rollups is not None and selector.metric and (raw_first is None or grid.earliest < raw_first):
            histories = self._histories(selector, grid, held)
        if (len(held) + len(histories)) * len(grid.times) > MAX_QUERY_POINTS:
            raise ValueError(
                f"the query would evaluate {len(held) + len(histories)} series at {len(grid.times)} times, more "
                f"than {MAX_QUERY_POINTS:,} points; narrow the selector, shorten the window or widen the step"
            )
        with self._lock:
            spans = [(k, s, _copy(s, grid.earliest, grid.times[-1])) for k, s in held.items()]
        if sum(len(t) for _, _, (t, _) in spans) > MAX_QUERY_SAMPLES:
            raise ValueError(f"the query would read more than {MAX_QUERY_SAMPLES:,} samples; narrow it")
        # Every window of every series with raw samples only at once (metrics.windows); windows reaching into the
        # rollups (history older than the raw retention) one at a time. In the store's order either way.
        agg, q = query.aggregation, query.quantile
        raw_only = [(t, v) for k, _, (t, v) in spans if k not in histories]
        on_grid = iter(over_series(agg, q, raw_only, grid.starts, grid.ends))
        selected: list[OnGrid] = []
        for k, s, (t, v) in spans:
            loaded = histories.pop(k, None)
            present, values = next(on_grid) if loaded is None else _over_history(agg, q, grid, t, v, loaded.history)
            selected.append(OnGrid(s.name, s.labels, present, values))
        for h in histories.values():
            present, values = _over_history(agg, q, grid, _NO_TIMES, _NO_VALUES, h.history)
            selected.append(OnGrid(selector.metric, h.labels, present, values))
        series = evaluate(query, grid, selected)
        return QueryResult(series=series, source=self.source)

    def _histories(self, selector: Selector, grid: Grid, held: Mapping[str, RawSeries]) -> dict[str, _Loaded]:
        """The rollups of the selected series over the query's windows, older than each one's raw samples."""
        assert self.rollups is not None
        since, until = grid.earliest // 1000, grid.times[-1] // 1000 + 1
        rows: dict[str, list[RollupRow]] = {}
        for resolution in RESOLUTIONS:
            for row in self.rollups.load(selector.metric, resolution, since, until):
                rows.setdefault(row[1], []).append(row)
        out: dict[str, _Loaded] = {}
        for key, series_rows in rows.items():
            raw = held.get(key)
            if raw is None:
                labels = json.loads(key)
                if not matching.selects(selector, selector.metric, labels):
                    continue
            else:
                labels = raw.labels
            raw_from = None
            if raw is not None and raw.n:
                # No sample counted twice, none left out: the raw samples of the first minute held were trimmed
                # (retention), so that minute's bucket answers for it and raw samples count from the next minute.
                first = raw.t[0]
                cut = -(-first // (MINUTE * 1000)) * MINUTE * 1000
                # If that bucket is not written yet (a new series), the raw samples answer for it.
                written = any(r[2] == MINUTE and (r[3] + MINUTE) * 1000 == cut for r in series_rows)
                raw_from = cut if written else first
                series_rows = [r for r in series_rows if (r[3] + r[2]) * 1000 <= raw_from]
            if series_rows:
                out[key] = _Loaded(labels, History(series_rows, raw_from))
        return out

    # --- history ---------------------------------------------------------------------------------------------

    def flush(self, now: float | None = None, *, everything: bool = False) -> int:
        """Write the rollups of the samples not yet rolled up, up to the last bucket end at least ``ROLLUP_LAG``
        behind the clock (``everything``: all of them, partial buckets too, e.g. on stop; the store merges the
        rest in later). Returns the rows written; rows the store refused are kept and retried on the next call."""
        if self.rollups is None:
            return 0
        now_ms = round((self.clock() if now is None else now) * 1000)
        minute = RESOLUTIONS[0] * 1000
        cutoff = now_ms + 1 if everything else (now_ms - round(ROLLUP_LAG * 1000)) // minute * minute
        rows = self._pending
        self._pending = []
        with self._lock:
            held = list(self._series.values())
        for i in range(0, len(held), _CHUNK):
            with self._lock:
                for series in held[i : i + _CHUNK]:
                    if series.t and series.last >= series.rolled_until:
                        rows.extend(_roll_up(series, cutoff))
        try:
            self.rollups.save(rows)
        except Exception:
            self._pending = rows[-MAX_PENDING_ROWS:]
            raise
        return len(rows)

    def latest(
        self, selectors: Sequence[Selector], at: float | None = None, *, limit: int | None = None
    ) -> list[Sample]:
        """The newest sample at or before ``at`` (default now), no older than :data:`LOOKBACK`, of every series one
        of ``selectors`` selects (each series once): what ``/federate`` exposes. :class:`TooManySeries` when more
        than ``limit`` series would be answered (found before the answer is built: the lock is held that long)."""
        for selector in selectors:
            matching.check(selector)
        end = round((self.clock() if at is None else at) * 1000)
        start = end - round(LOOKBACK * 1000)
        out: dict[int, Sample] = {}
        with self._lock:
            for selector in selectors:
                for series in self.select(selector):
                    if id(series) not in out:
                        newest = _newest(series, start, end)
                        if newest is not None:
                            out[id(series)] = newest
                            if limit is not None and len(out) > limit:
                                raise TooManySeries(limit)
        return sorted(out.values(), key=lambda s: (s.name, sorted(s.labels.items())))

    async def query(self, query: MetricsQuery) -> QueryResult:
        """The series that answer ``query`` (a ``ValueError`` for a bad regular expression)."""
        return await asyncio.to_thread(self.evaluate, query)


class _Loaded:
    """A series' rollups read for one query."""

    __slots__ = ("history", "labels")

    def __init__(self, labels: Mapping[str, str], history: History) -> None:
        self.labels = labels
        self.history = history


# Numpy views pin a series' buffers (appends would fail): the two helpers below make them and drop them on return,
# under the store's lock.


def _roll_up(series: RawSeries, cutoff: int) -> list[RollupRow]:
    """The rollup rows of a series' samples from where it was rolled up to ``cutoff`` (ms); advances it."""
    times, values = series.since(series.rolled_until, cutoff)
    if not len(times):
        return []
    rows = rollup_rows(series.name, labels_key(series.labels), times, values, series.rolled_value)
    series.rolled_value = float(values[-1])
    # Up to the last sample rolled, not the cutoff: a late sample before the cutoff is rolled next time (its
    # bucket may be written already; the store merges it in).
    series.rolled_until = int(times[-1]) + 1
    return rows


def _copy(series: RawSeries, start: int, end: int) -> tuple[Times, Values]:
    times, values = series.window(start, end)
    return times.copy(), values.copy()


def _newest(series: RawSeries, start: int, end: int) -> Sample | None:
    if series.t and series.last <= end:  # the usual case (``end`` is now): the newest sample, or none in the window
        return Sample(series.name, series.labels, series.v[-1], series.last / 1000) if series.last >= start else None
    times, values = series.window(start, end)
    if not len(times):
        return None
    return Sample(series.name, series.labels, float(values[-1]), int(times[-1]) / 1000)


def _over_history(
    agg: Aggregation, q: float | None, grid: Grid, times: Times, values: Values, history: History
) -> tuple[Mask, Values]:
    present = np.zeros(len(grid.times), dtype=np.bool_)
    out = np.zeros(len(grid.times), dtype=np.float64)
    for i, end in enumerate(grid.times):
        start = end - grid.range_ms
        lo = int(np.searchsorted(times, start, side="left"))
        hi = int(np.searchsorted(times, end, side="right"))
        value = over_history(agg, q, history, times[lo:hi], values[lo:hi], start, end)
        if value is not None:
            present[i], out[i] = True, value
    return present, out
