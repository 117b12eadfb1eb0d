"""The SLI of each of the 15 SLO kinds (seed section 3.3.2): what is measured, from where, in which unit.

Nine kinds are time series of the analytics engine, asked as :class:`MetricsQuery` (so the embedded store and
the Prometheus reader answer the same question): latency, error rate, throughput, capacity, availability, energy,
packet loss, jitter, bandwidth. Six are facts of the store, computed here by pure functions from what the caller
reads there: security (open security events), incident response (MTTD/MTTR), backup/DR (RPO/RTO), scalability
(time to scale), PRESS compliance (share of replicas in allowed countries) and cost (EUR per hour).

Whatever the source, a reading without data is :attr:`SliReading.no_data`, which the evaluation turns into
``NoData``, never ``Met``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from nemo_kernel.domain.sla import Comparison, SloKind, SloSpec
from nemo_kernel.metrics import names
from nemo_kernel.metrics.model import (
    Aggregation,
    Matcher,
    MatchOp,
    MetricsQuery,
    MetricsReader,
    QueryResult,
    Selector,
)


class Source(StrEnum):
    """Where a kind's SLI comes from."""

    METRICS = "metrics"  # the analytics engine (embedded or PromQL)
    STORE = "store"  # events and rows of the control plane's store
    NONE = "none"  # nothing measures it yet: always NoData


@dataclass(frozen=True, slots=True)
class KindTraits:
    """How a kind is measured: unit, source, whether it is a ratio of good events (judged by the SLO's target,
    not a threshold), its good side, and whether its events are requests (``min_events`` applies)."""

    unit: str
    source: Source
    ratio: bool
    comparison: Comparison
    requests: bool = False


KINDS: Mapping[SloKind, KindTraits] = {
    SloKind.LATENCY: KindTraits("s", Source.METRICS, False, Comparison.AT_MOST, requests=True),
    SloKind.ERROR_RATE: KindTraits("ratio", Source.METRICS, True, Comparison.AT_MOST, requests=True),
    SloKind.THROUGHPUT: KindTraits("req/s", Source.METRICS, False, Comparison.AT_LEAST, requests=True),
    SloKind.CAPACITY: KindTraits("ratio", Source.METRICS, False, Comparison.AT_MOST),
    SloKind.SCALABILITY: KindTraits("s", Source.STORE, False, Comparison.AT_MOST),
    SloKind.AVAILABILITY: KindTraits("ratio", Source.METRICS, True, Comparison.AT_LEAST),
    SloKind.BACKUP_DR: KindTraits("s", Source.STORE, False, Comparison.AT_MOST),
    SloKind.SECURITY: KindTraits("events", Source.STORE, False, Comparison.AT_MOST),
    SloKind.INCIDENT_RESPONSE: KindTraits("s", Source.STORE, False, Comparison.AT_MOST),
    SloKind.PRESS_COMPLIANCE: KindTraits("ratio", Source.STORE, False, Comparison.AT_LEAST),
    SloKind.ENERGY: KindTraits("Wh/h", Source.METRICS, False, Comparison.AT_MOST),
    SloKind.COST: KindTraits("EUR/h", Source.STORE, False, Comparison.AT_MOST),
    SloKind.PACKET_LOSS: KindTraits("ratio", Source.METRICS, False, Comparison.AT_MOST),
    SloKind.BANDWIDTH: KindTraits("Mbit/s", Source.NONE, False, Comparison.AT_LEAST),
    SloKind.JITTER: KindTraits("s", Source.METRICS, False, Comparison.AT_MOST),
}
"""Every kind's traits; ``tests/ppef/test_sli.py`` checks that it names all 15."""

DEFAULT_THRESHOLDS: Mapping[SloKind, float] = {SloKind.SECURITY: 0.0, SloKind.PRESS_COMPLIANCE: 1.0}
"""Thresholds of kinds that have an obvious one (no open security event; every replica compliant)."""


def comparison_of(slo: SloSpec) -> Comparison:
    """The SLO's good side: its own, else its kind's."""
    return slo.comparison or KINDS[slo.kind].comparison


def threshold_of(slo: SloSpec) -> float | None:
    """The SLO's threshold: its own, else its kind's default; None for ratio kinds and when neither is set."""
    if KINDS[slo.kind].ratio:
        return None
    return slo.threshold if slo.threshold is not None else DEFAULT_THRESHOLDS.get(slo.kind)


@dataclass(frozen=True, slots=True)
class SliTarget:
    """What an SLI is measured on: the workload's series labels and what the series alone do not say."""

    namespace: str
    workload: str
    clusters: tuple[str, ...] = ()  # where its replicas run (links of these clusters)
    cpu_request_cores: float | None = None  # total CPU its replicas asked for (capacity)


@dataclass(frozen=True, slots=True)
class SliReading:
    """An SLI over one window: ``value`` in the kind's unit; for ratio kinds ``bad``/``total`` events; ``events``
    what ``min_events`` is compared with (requests; ``inf`` where it does not apply); ``reason`` when no data."""

    value: float | None
    bad: float | None = None
    total: float | None = None
    events: float = math.inf
    reason: str = ""

    @property
    def no_data(self) -> bool:
        """True when there is nothing to judge: the SLO is ``NoData``."""
        return self.value is None or not math.isfinite(self.value)


def no_data(reason: str) -> SliReading:
    """A reading without data, saying why."""
    return SliReading(value=None, reason=reason)


def _workload(target: SliTarget) -> tuple[Matcher, ...]:
    return (Matcher("namespace", MatchOp.EQ, target.namespace), Matcher("workload", MatchOp.EQ, target.workload))


def _links(target: SliTarget) -> tuple[Matcher, ...]:
    return (Matcher("cluster", MatchOp.RE, "|".join(re_escape(c) for c in target.clusters)),)


def re_escape(text: str) -> str:
    """``text`` as a literal in a PromQL (RE2) regular expression."""
    return "".join("\\" + ch if ch in r".^$*+?()[]{}|\-" else ch for ch in text)


def queries_for(slo: SloSpec, target: SliTarget, window: float, at: float | None = None) -> dict[str, MetricsQuery]:
    """The engine queries of a metrics kind's SLI over ``window`` seconds ending at ``at``, by role
    (``value``, ``bad``, ``total``, ``requests``); empty for kinds the engine does not hold."""

    def q(
        series: names.SeriesName, agg: Aggregation, matchers: tuple[Matcher, ...], quantile: float | None = None
    ) -> MetricsQuery:
        return MetricsQuery(Selector(series.name, matchers), window, agg, quantile=quantile, by=(), at=at)

    wl = _workload(target)
    requests = q(names.WORKLOAD_REQUESTS, Aggregation.RATE, wl)
    match slo.kind:
        case SloKind.LATENCY:
            pct = (slo.percentile or 99.0) / 100.0
            return {
                "value": q(names.WORKLOAD_LATENCY, Aggregation.HISTOGRAM_QUANTILE, wl, quantile=pct),
                "requests": requests,
            }
        case SloKind.ERROR_RATE:
            return {"bad": q(names.WORKLOAD_ERRORS, Aggregation.RATE, wl), "total": requests}
        case SloKind.THROUGHPUT:
            return {"value": requests, "requests": requests}
        case SloKind.CAPACITY:
            return {"value": q(names.REPLICA_CPU, Aggregation.RATE, wl)}
        case SloKind.AVAILABILITY:
            return {"value": q(names.REPLICA_UP, Aggregation.AVG, wl)}
        case SloKind.ENERGY:
            return {"value": q(names.REPLICA_ENERGY, Aggregation.RATE, wl)}
        case SloKind.PACKET_LOSS if target.clusters:
            return {"value": q(names.LINK_LOSS, Aggregation.MAX, _links(target))}
        case SloKind.JITTER if target.clusters:
            return {"value": q(names.LINK_JITTER, Aggregation.MAX, _links(target))}
        case _:
            return {}


def _scalar(result: QueryResult) -> float | None:
    """The one value of a ``by=()`` instant query, None when the engine has no sample."""
    for series in result.series:
        if series.points:
            value = series.points[-1][1]
            return value if math.isfinite(value) else None
    return None


async def read_metric_sli(
    reader: MetricsReader, slo: SloSpec, target: SliTarget, window: float, at: float | None = None
) -> SliReading:
    """The SLI of a metrics kind over ``window`` seconds ending at ``at``, through any :class:`MetricsReader`.
    Raises :class:`~nemo_kernel.metrics.MetricsUnavailable` when the backend cannot answer."""
    if KINDS[slo.kind].source is not Source.METRICS:
        return no_data(f"{slo.kind.value} is not a time series")
    qs = queries_for(slo, target, window, at)
    if not qs:
        return no_data(f"{slo.kind.value} needs the clusters the workload runs on")
    got = {role: _scalar(await reader.query(query)) for role, query in qs.items()}
    requests = got.get("requests")
    events = requests * window if requests is not None else (math.inf if "requests" not in qs else 0.0)
    match slo.kind:
        case SloKind.ERROR_RATE:
            bad, total = got["bad"], got["total"]
            if total is None or total <= 0:
                return no_data("no requests in the window")
            bad_events = (bad or 0.0) * window  # no error series yet: no request has failed
            return SliReading(bad_events / (total * window), bad_events, total * window, total * window)
        case SloKind.AVAILABILITY:
            up = got["value"]
            if up is None:
                return no_data("no replica reported up or down in the window")
            return SliReading(up, (1.0 - up) * window, window)  # bad and total in replica-seconds, per replica
        case SloKind.CAPACITY:
            used = got["value"]
            if used is None or not target.cpu_request_cores:
                return no_data("no CPU series or no CPU request")
            return SliReading(used / target.cpu_request_cores)
        case SloKind.ENERGY:
            watts = got["value"]
            return no_data("no energy series") if watts is None else SliReading(watts)  # J/s = Wh per hour
        case _:
            value = got.get("value")
            if value is None:
                return no_data(f"no {slo.kind.value} series in the window")
            return SliReading(value, events=events)


# --- the kinds the store knows: pure functions of what the caller read there -----------------------------


def security_sli(open_security_events: int) -> SliReading:
    """Open runtime security events against the workload (good: at most the threshold, 0 by default)."""
    return SliReading(float(open_security_events))


@dataclass(frozen=True, slots=True)
class Incident:
    """An incident of the workload: when it started (the first failure event), was detected (the first alert or
    violation) and resolved (recovered); None where it has not happened yet."""

    started: float
    detected: float | None
    resolved: float | None


def incident_sli(incidents: Sequence[Incident], *, measure: str = "mttr") -> SliReading:
    """Mean time to detect (``mttd``) or to resolve (``mttr``) over ``incidents``, seconds. An incident not yet
    detected (resolved) does not count; none counts: no data."""
    if measure not in ("mttd", "mttr"):
        raise ValueError("measure must be mttd or mttr")
    ends = [i.detected if measure == "mttd" else i.resolved for i in incidents]
    spans = [end - i.started for i, end in zip(incidents, ends, strict=True) if end is not None]
    if not spans:
        return no_data("no incident closed in the window")
    return SliReading(sum(spans) / len(spans))


def backup_sli(now: float, last_backup: float | None, last_restore_seconds: float | None, *, rto: bool) -> SliReading:
    """Recovery point (age of the newest backup, seconds) or, with ``rto``, recovery time (seconds the last
    restore took); no backup (or no restore drill) yet: no data."""
    if rto:
        return (
            no_data("no restore has been timed") if last_restore_seconds is None else SliReading(last_restore_seconds)
        )
    return no_data("no backup yet") if last_backup is None else SliReading(max(0.0, now - last_backup))


def scalability_sli(scale_durations: Sequence[float]) -> SliReading:
    """The slowest scale-out of the window: seconds from its decision to the new replicas running."""
    return SliReading(max(scale_durations)) if scale_durations else no_data("no scale-out in the window")


def press_sli(replica_countries: Sequence[str], allowed: Sequence[str]) -> SliReading:
    """Share of the running replicas inside the SLA's data-residency countries (no clause: all are inside)."""
    if not replica_countries:
        return no_data("no replica runs")
    if not allowed:
        return SliReading(1.0)
    inside = sum(1 for c in replica_countries if c in set(allowed))
    return SliReading(inside / len(replica_countries))


@dataclass(frozen=True, slots=True)
class ReplicaCost:
    """What one running replica asked for and what its cluster charges."""

    cpu: float
    memory_mib: float
    cpu_hour_eur: float
    gib_hour_eur: float


def cost_sli(replicas: Sequence[ReplicaCost]) -> SliReading:
    """EUR per hour of the running replicas: requests times their cluster's prices."""
    if not replicas:
        return no_data("no replica runs")
    return SliReading(sum(r.cpu * r.cpu_hour_eur + r.memory_mib / 1024.0 * r.gib_hour_eur for r in replicas))
