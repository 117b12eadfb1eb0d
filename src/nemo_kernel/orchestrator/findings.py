"""The findings loop: bottlenecks and anomalies in what the analytics engine collected, recorded as events.

Every ``NEMO_FINDINGS_INTERVAL`` seconds it asks the control plane's reader (embedded store or Prometheus) for a
fixed set of signals over the trailing ``NEMO_ANOMALY_WINDOW``, one range query each, and runs the pure detectors
of :mod:`nemo_kernel.metrics.findings` on every series:

| signal | series | saturation against |
|---|---|---|
| ``replica.cpu`` | rate of ``nemo_replica_cpu_seconds_total`` | the replica's CPU request (its share) |
| ``replica.memory`` | ``nemo_replica_memory_bytes`` | the replica's memory request |
| ``node.cpu`` | rate of ``nemo_node_cpu_seconds_total`` | ``nemo_node_cpu_cores`` |
| ``node.memory`` | ``nemo_node_memory_bytes`` | ``nemo_node_memory_capacity_bytes`` |
| ``workload.requests`` | rate of ``nemo_workload_requests_total`` | (anomalies only) |
| ``workload.error_ratio`` | rate of errors / rate of requests | (anomalies only) |

A ratio at or above ``NEMO_BOTTLENECK_THRESHOLD`` at every point of the last ``NEMO_BOTTLENECK_FOR`` seconds starts
a bottleneck episode: one ``analytics.bottleneck`` event, then one ``analytics.bottleneck_cleared`` when it ends
(the ratio fell, or the series went away). A value outside its robust band starts an anomaly episode: one
``analytics.anomaly``. Events are on the replica's workload (``workload/<ns>/<name>``) or the node's cluster
(``cluster/<name>``), recorded with :func:`~nemo_kernel.store.events.record_event`, so they reach the bus through the
outbox and the reactions see them.

Incremental: cycles are evaluated on one grid of ``step`` seconds (the loop wakes at its next point, and a cycle's
time is snapped to the grid of the one before), and each point of a series aggregates only its own step, so a point
once computed does not change. A cycle therefore asks only for the steps since the last one, and the last one's
newest point again (samples of its step may land after it was read), and keeps the rest of the window from the
cycles before (:class:`_Window`); the whole window is read on the first cycle, after a failed query, when the reader
changed (Prometheus configured) or when the cycle's time is not on the grid of the last one (a jump back, or further
than the window). An idle stack then reads a few points per series every cycle instead of its whole band (and the
rollups in the database only on a whole-window read, while the stack is younger than the window).

Bounded work: at most :data:`MAX_SERIES` series per signal and about :data:`MAX_EVENTS` events per cycle (the
series not judged once it is reached are judged on the next cycle). One bad series
(or one failing query) is logged and skipped; the others go on. Open episodes are kept in memory (bounded by the
series watched) and re-derived from the event log on the first cycle (the newest :data:`RESTORED_EVENTS`
bottleneck events and clears): a bottleneck still going on after a restart is not reported twice, and one whose
series is gone by then is cleared. Anomaly episodes are not re-derived (they have no end event): one still going on
after a restart is reported once more.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from nemo_kernel.config import Settings
from nemo_kernel.domain import EventKind
from nemo_kernel.metrics import (
    MAX_POINTS,
    Aggregation,
    MetricsQuery,
    MetricsReader,
    MetricsUnavailable,
    Selector,
)
from nemo_kernel.metrics import names as n
from nemo_kernel.metrics.findings import AnomalyRule, Episodes, Points, anomaly, saturated
from nemo_kernel.store import Database, events, in_chunks
from nemo_kernel.store.tables import ReplicaRow

log = logging.getLogger(__name__)

MAX_SERIES = 10_000
"""Most series of one signal looked at per cycle (the rest are skipped, with a warning in the log)."""

MAX_EVENTS = 200
"""Most events recorded per cycle; episodes beyond are reported on later cycles."""

RESTORED_EVENTS = 10_000
"""Bottleneck events (and clears) read back on the first cycle to re-open the episodes still going on."""

_MIB = 1 << 20
_ON_GRID = 1e-3  # steps: how far a cycle's time may be from a whole number of steps after the last and be on its grid
_Key = tuple[tuple[str, str], ...]  # a series' identifying labels, in a fixed order
_REPLICA = ("namespace", "workload", "replica", "cluster", "node")
_NODE = ("cluster", "node")
_WORKLOAD = ("namespace", "workload")

#: How far out a value must be for each signal, besides k robust sigmas (the minimum deviations in its unit keep a
#: quiet series' tiny noise from ever alarming).
ANOMALY_RULES: Mapping[str, AnomalyRule] = {
    "replica.cpu": AnomalyRule(min_deviation=0.05),  # cores
    "replica.memory": AnomalyRule(min_deviation=32 * _MIB),
    "node.cpu": AnomalyRule(min_deviation=0.1),
    "node.memory": AnomalyRule(min_deviation=128 * _MIB),
    "workload.requests": AnomalyRule(min_deviation=1.0),  # requests per second
    "workload.error_ratio": AnomalyRule(min_deviation=0.05, min_relative=0.0),
}


_MEASURES = {
    "replica.cpu": "CPU cores",
    "replica.memory": "memory bytes",
    "node.cpu": "CPU cores",
    "node.memory": "memory bytes",
    "workload.requests": "requests/s",
    "workload.error_ratio": "error ratio",
}


@dataclass(frozen=True, slots=True)
class Observation:
    """One series of one signal this cycle: its labels, points and, for saturation, what it is a share of."""

    signal: str
    labels: _Key
    points: Points
    capacity: float | None = None

    @property
    def key(self) -> tuple[str, _Key]:
        """What identifies its episodes."""
        return (self.signal, self.labels)


@dataclass(frozen=True, slots=True)
class Finding:
    """An event to record: its kind, subject, message and data."""

    kind: EventKind
    subject: str
    message: str
    data: dict[str, Any]


class FindingsWatch:
    """Looks for bottlenecks and anomalies every cycle and records them as events (see the module docstring)."""

    def __init__(self, db: Database, reader: Callable[[], MetricsReader], settings: Settings) -> None:
        """``reader`` returns the control plane's current reader (it may switch to Prometheus after this is built)."""
        self._db = db
        self._reader = reader
        self._hold = settings.bottleneck_for
        self._threshold = settings.bottleneck_threshold
        self.window = max(settings.anomaly_window, settings.bottleneck_for + 2 * settings.findings_interval)
        """Seconds each cycle reads: the anomaly band, and at least the saturation's hold."""
        self.step = max(settings.findings_interval, self.window / MAX_POINTS)
        """Seconds between the points of a cycle's series (each point aggregates its step)."""
        self.bottlenecks: Episodes[tuple[str, _Key]] = Episodes()
        self.anomalies: Episodes[tuple[str, _Key]] = Episodes()
        self._restored = False
        self._windows: dict[str, _Window] = {}  # per signal query (series name): what the last cycles read
        self.evaluated_at: float | None = None
        """The time the last cycle was evaluated at (unix seconds, on the grid; None before the first)."""

    async def run(self) -> None:
        """Run a cycle every interval until cancelled; a failing cycle is logged and the next one tried."""
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except MetricsUnavailable as exc:
                log.warning("findings: the metrics backend cannot answer (%s); retrying", exc)
            except Exception:
                log.exception("findings cycle failed; retrying")
            # Until the next point of the grid (see the module docstring), not for a fixed pause: the next cycle is
            # then evaluated at the time it runs, not up to a step before, and reads one new step. The grid's step
            # is the interval (longer only when the window would hold more than MAX_POINTS).
            assert self.evaluated_at is not None  # run_once sets it first
            await asyncio.sleep(max(0.0, self.evaluated_at + self.step - time.time()))

    async def run_once(self, at: float | None = None) -> list[Finding]:
        """One cycle evaluated at ``at`` (default now; snapped back onto the grid of the cycle before, less than
        one step, when it follows it within the window): the findings it recorded as events."""
        at = self._on_grid(time.time() if at is None else at)
        if not self._restored:
            await asyncio.to_thread(self._restore)
            self._restored = True
        observations, watched = await self._observe(at)
        findings: list[Finding] = []
        for judged, observation in enumerate(observations):
            if len(findings) >= MAX_EVENTS:  # the rest keep their episodes as they were: judged next cycle
                log.warning("findings: %d events this cycle; %d series wait", len(findings), len(observations) - judged)
                break
            try:
                findings += self._judge(observation)
            except Exception:  # one bad series never stops the others
                log.exception("findings: series %s %s could not be judged", observation.signal, observation.labels)
        seen = {o.key for o in observations}
        # A signal whose query failed this cycle was not seen, but its series may well be there still.
        for key in self.bottlenecks.end_missing(seen, lambda key: key[0] in watched):
            findings.append(_cleared(key, "its series is gone"))
        self.anomalies.end_missing(seen, lambda key: key[0] in watched)
        if findings:
            await asyncio.to_thread(self._record, findings)
        return findings

    def _on_grid(self, at: float) -> float:
        """``at`` moved back onto the grid of the last cycle (whole steps after it) when it follows it within the
        window; else ``at`` itself, and it starts a new grid."""
        last, self.evaluated_at = self.evaluated_at, at
        if last is not None and last <= at < last + self.window:
            self.evaluated_at = last + math.floor((at - last) / self.step) * self.step
        return self.evaluated_at

    def _judge(self, o: Observation) -> list[Finding]:
        found: list[Finding] = []
        if o.capacity is not None and o.capacity > 0:
            ratios = [(t, v / o.capacity) for t, v in o.points]
            holds = saturated(ratios, self._threshold, self._hold)
            change = self.bottlenecks.update(o.key, holds)
            if change is True:
                found.append(self._bottleneck(o, ratios[-1][1]))
            elif change is False:
                found.append(_cleared(o.key, f"back under {self._threshold:.0%}"))
        outlier = anomaly(o.points, ANOMALY_RULES[o.signal])
        if self.anomalies.update(o.key, outlier is not None) is True and outlier is not None:
            labels = dict(o.labels)
            found.append(
                Finding(
                    EventKind.ANALYTICS_ANOMALY,
                    _subject(o.signal, labels),
                    f"{_who(o.signal, labels)}: {_MEASURES[o.signal]} {outlier.value:.4g}, outside its band"
                    f" {outlier.median:.4g} ± {outlier.band:.4g} of the last {self.window:.0f} s",
                    {
                        "signal": o.signal,
                        "labels": labels,
                        "value": outlier.value,
                        "median": outlier.median,
                        "band": outlier.band,
                        "score": outlier.score if math.isfinite(outlier.score) else None,
                        "window_seconds": self.window,
                    },
                )
            )
        return found

    def _bottleneck(self, o: Observation, ratio: float) -> Finding:
        labels = dict(o.labels)
        resource = "CPU" if o.signal.endswith(".cpu") else "memory"
        of = "request" if o.signal.startswith("replica.") else "capacity"
        return Finding(
            EventKind.ANALYTICS_BOTTLENECK,
            _subject(o.signal, labels),
            f"{_who(o.signal, labels)} used {ratio:.0%} of its {resource} {of} for {self._hold:.0f} s"
            f" (threshold {self._threshold:.0%})",
            {
                "signal": o.signal,
                "labels": labels,
                "ratio": ratio,
                "capacity": o.capacity,
                "threshold": self._threshold,
                "for_seconds": self._hold,
            },
        )

    async def _observe(self, at: float) -> tuple[list[Observation], set[str]]:
        """Every series of every signal this cycle, and the signals whose queries answered."""
        (
            replica_cpu,
            replica_memory,
            node_cpu,
            node_memory,
            node_cores,
            node_bytes,
            requests,
            errors,
        ) = await asyncio.gather(
            self._range(n.REPLICA_CPU, Aggregation.RATE, _REPLICA, at),
            self._range(n.REPLICA_MEMORY, Aggregation.AVG, _REPLICA, at),
            self._range(n.NODE_CPU, Aggregation.RATE, _NODE, at),
            self._range(n.NODE_MEMORY, Aggregation.AVG, _NODE, at),
            self._range(n.NODE_CPU_CORES, Aggregation.LAST, _NODE, at),
            self._range(n.NODE_MEMORY_CAPACITY, Aggregation.LAST, _NODE, at),
            self._range(n.WORKLOAD_REQUESTS, Aggregation.RATE, _WORKLOAD, at),
            self._range(n.WORKLOAD_ERRORS, Aggregation.RATE, _WORKLOAD, at),
        )
        requests_of: dict[str, tuple[float, float]] = {}
        if replica_cpu is not None or replica_memory is not None:
            ids = {dict(k)["replica"] for k in {**(replica_cpu or {}), **(replica_memory or {})}}
            requests_of = await asyncio.to_thread(self._replica_requests, ids)

        def requested(key: _Key, which: int) -> float | None:
            found = requests_of.get(dict(key)["replica"])
            return None if found is None else found[which]

        capacities: dict[str, Callable[[_Key], float | None]] = {
            "replica.cpu": lambda k: requested(k, 0),
            "replica.memory": lambda k: requested(k, 1),
            "node.cpu": lambda k: _latest((node_cores or {}).get(k)),
            "node.memory": lambda k: _latest((node_bytes or {}).get(k)),
            "workload.requests": lambda k: None,
        }
        signals = {
            "replica.cpu": replica_cpu,
            "replica.memory": replica_memory,
            "node.cpu": node_cpu,
            "node.memory": node_memory,
            "workload.requests": requests,
        }
        out: list[Observation] = []
        watched: set[str] = set()
        for signal, found in signals.items():
            if found is None:
                continue
            watched.add(signal)
            out += [Observation(signal, key, points, capacities[signal](key)) for key, points in found.items()]
        if requests is not None and errors is not None:
            watched.add("workload.error_ratio")
            for key, points in requests.items():
                out.append(Observation("workload.error_ratio", key, _error_ratio(points, errors.get(key, ()))))
        return out, watched

    async def _range(
        self, series: n.SeriesName, aggregation: Aggregation, by: tuple[str, ...], at: float
    ) -> dict[_Key, Points] | None:
        """One signal's series over the window, keyed by their ``by`` labels; ``None`` if the query failed.

        Reads only the steps since the signal's last answer (and its newest point again) when that answer is on this
        cycle's grid and from the same reader; else the whole window (see the module docstring)."""
        reader = self._reader()
        known = self._windows.pop(series.name, None)
        whole = math.floor(self.window / self.step)  # steps of the whole window, ending at `at`: on its grid
        after = (at - known.at) / self.step if known is not None and known.reader is reader else -1.0
        if 0 <= after < whole and abs(after - round(after)) < _ON_GRID:
            # A range's grid holds both its ends: the last answer's newest point is read again (samples of its
            # step may have landed after it was read).
            steps = max(1, round(after))
        else:
            steps, known = whole, None
        query = MetricsQuery(Selector(series.name), steps * self.step, aggregation, step=self.step, by=by, at=at)
        try:
            result = await reader.query(query)
        except MetricsUnavailable:
            raise
        except Exception:
            log.exception("findings: query of %s failed; that signal is skipped this cycle", series.name)
            return None
        fresh = {}
        for s in result.series:
            if s.points:
                fresh[tuple((label, s.labels.get(label, "")) for label in by)] = s.points
        window = _Window(reader, at, fresh)
        if known is not None:
            window.series = known.merged(fresh, at - whole * self.step, at - steps * self.step, self.step / 2)
        if len(window.series) > MAX_SERIES:
            log.warning("findings: %s has %d series, looking at %d", series.name, len(window.series), MAX_SERIES)
            window.series = dict(list(window.series.items())[:MAX_SERIES])
        self._windows[series.name] = window
        return window.series

    def _replica_requests(self, ids: set[str]) -> dict[str, tuple[float, float]]:
        """CPU cores and memory bytes each replica requested (what its usage is a share of)."""
        out: dict[str, tuple[float, float]] = {}
        ordered = sorted(ids)
        with self._db.snapshot() as s:  # a read: it waits for no writer
            for chunk in in_chunks(ordered):
                rows = s.execute(
                    select(ReplicaRow.id, ReplicaRow.cpu_request, ReplicaRow.memory_request_mib).where(
                        ReplicaRow.id.in_(chunk)
                    )
                )
                out.update({rid: (cpu, memory * _MIB) for rid, cpu, memory in rows})
        return out

    def _restore(self) -> None:
        """Re-open the bottleneck episodes whose newest event is a bottleneck, not a clear."""
        kinds = (EventKind.ANALYTICS_BOTTLENECK, EventKind.ANALYTICS_BOTTLENECK_CLEARED)
        with self._db.transaction() as s:
            found = events.latest_of_kinds(s, kinds, RESTORED_EVENTS)
        decided: set[tuple[str, _Key]] = set()
        for event in found:  # newest first: the first event of a key says how its episode stands
            signal, labels = event.data.get("signal"), event.data.get("labels")
            if signal not in _MEASURES or not isinstance(labels, dict):
                continue  # not an event this loop wrote; nothing to re-open
            key = (signal, tuple((label, str(labels.get(label, ""))) for label in _labels_of(signal)))
            if key not in decided:
                decided.add(key)
                if event.kind == EventKind.ANALYTICS_BOTTLENECK:
                    self.bottlenecks.update(key, True)

    def _record(self, findings: Sequence[Finding]) -> None:
        with self._db.transaction() as s:
            for f in findings:
                events.record_event(s, f.kind, f.subject, f.message, **f.data)


@dataclass(slots=True)
class _Window:
    """One signal query's series over the trailing window as of ``at``, and the reader that answered it."""

    reader: MetricsReader
    at: float
    series: dict[_Key, Points]

    def merged(self, fresh: Mapping[_Key, Points], start: float, since: float, slack: float) -> dict[_Key, Points]:
        """The series with the points of ``fresh`` (read from ``since`` on) instead of those kept from ``since``
        on, and without the points before ``start`` (out of the window now); a series left with none is gone.
        Grid times are sums of floats: they are compared with ``slack`` (half a step)."""
        out: dict[_Key, Points] = {}
        for key in sorted(self.series.keys() | fresh.keys()):  # the order of a whole-window answer
            kept = [p for p in self.series.get(key, ()) if start - slack <= p[0] < since - slack]
            points = kept + list(fresh.get(key, ()))
            if points:
                out[key] = points
        return out


def _labels_of(signal: str) -> tuple[str, ...]:
    """The labels a signal's series are grouped by, in the order of its keys."""
    if signal.startswith("replica."):
        return _REPLICA
    return _NODE if signal.startswith("node.") else _WORKLOAD


def _latest(points: Points | None) -> float | None:
    return points[-1][1] if points else None


def _error_ratio(requests: Points, errors: Points) -> Points:
    """Errors per request at each time both have (no requests: no ratio)."""
    by_time = dict(errors)
    return [(t, by_time.get(t, 0.0) / r) for t, r in requests if r > 0]


def _subject(signal: str, labels: Mapping[str, str]) -> str:
    if signal.startswith("node."):
        return events.cluster_subject(labels["cluster"])
    return events.workload_subject(labels["namespace"], labels["workload"])


def _who(signal: str, labels: Mapping[str, str]) -> str:
    if signal.startswith("node."):
        return f"node {labels['cluster']}/{labels['node']}"
    if signal.startswith("replica."):
        return f"replica {labels['replica']} of {labels['namespace']}/{labels['workload']}"
    return f"workload {labels['namespace']}/{labels['workload']}"


def _cleared(key: tuple[str, _Key], why: str) -> Finding:
    signal, pairs = key
    labels = dict(pairs)
    return Finding(
        EventKind.ANALYTICS_BOTTLENECK_CLEARED,
        _subject(signal, labels),
        f"{_who(signal, labels)}: {'CPU' if signal.endswith('.cpu') else 'memory'} bottleneck over, {why}",
        {"signal": signal, "labels": labels},
    )
