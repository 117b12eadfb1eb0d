"""The analytics engine's vocabulary: samples in, queries and their results out.

Every producer (the collector that asks cluster drivers, the gateway scrape, link probes) hands
:class:`Sample` batches to a :class:`MetricSink`; every consumer (the API, the CLI, PPEF, the decision engine's
criteria) asks a :class:`MetricsReader`. The embedded store and the Prometheus reader implement the same reader, so
a query means the same thing on both: :class:`MetricsQuery` is defined by the PromQL it translates to
(:func:`nemo_kernel.metrics.promql.to_promql`), and the embedded store computes that PromQL's answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
"""Prometheus metric names (full match)."""

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
"""Prometheus label names (full match); names starting with ``__`` are reserved."""

TARGET_LABELS: tuple[str, ...] = ("namespace", "workload", "replica", "cluster", "node", "tier", "region")
"""Labels NEMO itself puts on the samples of a replica, node or cluster (those that apply)."""

MAX_WINDOW_SECONDS = 31 * 24 * 3600.0
"""The longest window a query may ask for (a monthly SLO period)."""

MAX_POINTS = 11_000
"""Most points one series of a range query may return (Prometheus' own limit)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one series at one time (unix seconds)."""

    name: str
    labels: Mapping[str, str]
    value: float
    timestamp: float


class MetricSink(Protocol):
    """Where samples go (the embedded store; a test's list)."""

    def ingest(self, samples: Sequence[Sample]) -> None:
        """Keep ``samples``; a sample with a bad name, label or a non-finite timestamp is dropped and counted,
        never raised: one bad sample must not lose the batch."""


class MatchOp(StrEnum):
    """Label matchers, as PromQL's."""

    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


@dataclass(frozen=True, slots=True)
class Matcher:
    """``label op value``; regular expressions match the whole value (PromQL anchors them)."""

    label: str
    op: MatchOp
    value: str


@dataclass(frozen=True, slots=True)
class Selector:
    """``metric{matchers}``."""

    metric: str
    matchers: tuple[Matcher, ...] = ()


class Aggregation(StrEnum):
    """What a query computes per series over each window (then across series, see :class:`MetricsQuery`)."""

    AVG = "avg"  # avg_over_time
    MAX = "max"  # max_over_time
    MIN = "min"  # min_over_time
    SUM = "sum"  # sum_over_time
    LAST = "last"  # last_over_time
    RATE = "rate"  # rate (counters; resets handled, extrapolated as Prometheus does)
    QUANTILE = "quantile"  # quantile_over_time(q, ...)
    HISTOGRAM_QUANTILE = "histogram_quantile"  # histogram_quantile(q, sum by (le, by...) (rate(<m>_bucket[w])))


@dataclass(frozen=True, slots=True)
class MetricsQuery:
    """A question to the analytics engine, defined by the PromQL it translates to.

    - ``step is None``: an instant query at ``at`` (default now): one value per series, ``agg(selector[window])``.
    - ``step`` set: a range query over ``[at - window, at]`` every ``step``, each point ``agg(selector[step])``.
    - ``by`` set: series are then combined across, grouped by those labels (``sum by`` for sum and rate,
      ``avg by``/``max by``/``min by`` for those, ``max by`` for last and quantile); ``by=()`` combines everything
      into one series; ``by=None`` keeps every series.
    """

    selector: Selector
    window: float
    aggregation: Aggregation = Aggregation.AVG
    step: float | None = None
    quantile: float | None = None
    by: tuple[str, ...] | None = None
    at: float | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.window) or not 0 < self.window <= MAX_WINDOW_SECONDS:
            raise ValueError(f"window must be in (0, {MAX_WINDOW_SECONDS:.0f}] seconds")
        if self.step is not None:
            if not math.isfinite(self.step) or self.step <= 0:
                raise ValueError("step must be a positive number of seconds")
            if self.window / self.step > MAX_POINTS:
                raise ValueError(f"window / step must be at most {MAX_POINTS} points")
        needs_q = self.aggregation in (Aggregation.QUANTILE, Aggregation.HISTOGRAM_QUANTILE)
        if needs_q and (self.quantile is None or not 0 <= self.quantile <= 1):
            raise ValueError("quantile must be in [0, 1] for a quantile aggregation")


@dataclass(frozen=True, slots=True)
class Series:
    """One result series: its labels and its points ``(unix seconds, value)``, oldest first."""

    labels: Mapping[str, str]
    points: Sequence[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class QueryResult:
    """The answer to a :class:`MetricsQuery`, and which backend gave it (``embedded`` or ``prometheus``)."""

    series: Sequence[Series]
    source: str
    warnings: Sequence[str] = field(default_factory=tuple)


class MetricsUnavailable(Exception):
    """The backend cannot answer now (Prometheus down or timing out); the API answers 503 with the reason."""


class MetricsReader(Protocol):
    """Answers :class:`MetricsQuery` questions; raises :class:`MetricsUnavailable` or ``ValueError`` (bad query)."""

    async def query(self, query: MetricsQuery) -> QueryResult:
        """The series that answer ``query``."""
