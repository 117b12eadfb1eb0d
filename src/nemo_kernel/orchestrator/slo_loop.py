"""The SLO evaluation loop: every ``NEMO_SLO_INTERVAL`` seconds, each live SLA is measured, judged and recorded.

One pass (:meth:`SloLoop.evaluate_once`):

1. reads the live SLAs (Active or Violated; at most :data:`MAX_SLAS_PER_PASS`);
2. measures each SLO's SLI (``ppef.sli``): through the analytics engine, or from the workload's running replicas
   for ``press_compliance`` (their clusters' countries) and ``cost`` (requests x their clusters' prices), or from
   the SLA's own records for ``incident_response`` (MTTR: mean open time of its other SLOs' violations closed in
   the window) and ``scalability`` (the slowest of its scale-outs in the window, decision to ``workload.running``);
   security and backup/DR are ``NoData`` with their reason until their sources exist;
3. judges all SLOs at once (``ppef.evaluate``) and forecasts the threshold kinds (``ppef.predict``);
4. records, one transaction per SLA: each SLO's status, ``sla.breach_predicted`` when a forecast starts (with the
   predicted time and confidence), violations opened and closed, and the SLA's state ``Active <-> Violated``
   (``sla.violated``, ``sla.recovered``).

One SLA that fails (a query refused, a bad spec) is recorded with its error and the pass goes on. What the loop keeps
in memory, each SLO's recent values, is bounded (:data:`HISTORY_POINTS`) and re-derivable: after a restart the
forecasts and timeslice budgets start from the engine's data again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from nemo_kernel.domain import EventKind, Prices, ReplicaPhase
from nemo_kernel.domain.sla import (
    Comparison,
    SlaSpec,
    SlaState,
    SloKind,
    SloSpec,
    SloState,
    SloStatus,
    duration_seconds,
)
from nemo_kernel.metrics import MetricsReader
from nemo_kernel.ppef.evaluate import N_COLS, Col, SloBatch, evaluate_batch, slice_counts, state_of, windows_for
from nemo_kernel.ppef.predict import PredictorSettings, forecast
from nemo_kernel.ppef.sli import (
    KINDS,
    Incident,
    ReplicaCost,
    SliReading,
    SliTarget,
    comparison_of,
    cost_sli,
    incident_sli,
    press_sli,
    read_metric_sli,
    scalability_sli,
    threshold_of,
)
from nemo_kernel.store import Database
from nemo_kernel.store import slas as store
from nemo_kernel.store.events import record_event
from nemo_kernel.store.tables import ClusterRow, ReplicaRow, SlaRow, WorkloadRow

log = logging.getLogger(__name__)

MAX_SLAS_PER_PASS = 2_000
"""SLAs evaluated in one pass; the rest wait for the next (bounded work)."""

HISTORY_POINTS = 2_880
"""Recent values kept per SLO (12 h at 15 s; 46 KB): the forecast's input and the timeslices' record. A threshold
kind's slices older than that are not counted: its period budget covers at most these points."""

FORECAST_POINTS = 40


MAX_REPLICAS_READ = 1_000
"""Running replicas read per workload for the store kinds (a workload has at most 1,000)."""


@dataclass(frozen=True, slots=True)
class _Running:
    cluster: str
    country: str
    cpu: float
    cost: ReplicaCost


class _History:
    """One SLO's last :data:`HISTORY_POINTS` values and their times, in a ring of two arrays (16 bytes a point)."""

    __slots__ = ("_full", "_next", "_times", "_values", "predicted")

    def __init__(self) -> None:
        self._times = np.zeros(HISTORY_POINTS)
        self._values = np.zeros(HISTORY_POINTS)
        self._next = 0
        self._full = False
        self.predicted = False  # whether the last pass forecast a breach (a new forecast is an event)

    def append(self, t: float, value: float) -> None:
        self._times[self._next] = t
        self._values[self._next] = value
        self._next = (self._next + 1) % HISTORY_POINTS
        self._full = self._full or self._next == 0

    def arrays(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Times and values, oldest first."""
        if not self._full:
            return self._times[: self._next], self._values[: self._next]
        order = np.r_[self._next : HISTORY_POINTS, 0 : self._next]
        return self._times[order], self._values[order]


@dataclass
class _Measured:
    sla_id: int
    namespace: str
    name: str
    spec: SlaSpec
    slo: SloSpec
    reading: SliReading
    bad: np.ndarray
    total: np.ndarray
    events: np.ndarray
    allowed_bad: float
    history: _History


class SloLoop:
    """Evaluates the live SLAs on a timer; :meth:`evaluate_once` is one pass (tests call it directly).
    ``metrics`` gives the reader to ask at each pass (the control plane may swap the embedded store for
    Prometheus)."""

    def __init__(
        self,
        db: Database,
        metrics: Callable[[], MetricsReader],
        interval: float,
        *,
        clock: Callable[[], float] = time.time,
        predictor: PredictorSettings | None = None,
    ) -> None:
        self._db = db
        self._metrics = metrics
        self._interval = interval
        self._clock = clock
        self._predictor = predictor or PredictorSettings()
        self._histories: dict[tuple[int, str], _History] = {}

    async def run(self) -> None:
        """Evaluate every ``interval`` seconds until cancelled; a failed pass is logged and the next one runs."""
        while True:
            try:
                await self.evaluate_once()
            except Exception:
                log.exception("SLO evaluation pass failed; retrying")
            await asyncio.sleep(self._interval)  # the evaluation period, not a synchronisation

    async def evaluate_once(self, now: float | None = None) -> int:
        """One pass at ``now`` (default: the clock); returns how many SLOs were judged."""
        at = self._clock() if now is None else now
        slas = await asyncio.to_thread(self._live_slas)
        measured: list[_Measured] = []
        for sla_id, namespace, name, stored in slas:
            try:  # the stored spec is validated again here, so that a bad one stays this SLA's problem
                measured += await self._measure(sla_id, namespace, name, SlaSpec.model_validate(stored), at)
            except Exception as exc:  # one bad SLA never stops the pass
                log.warning("SLA %s/%s could not be measured: %s", namespace, name, exc)
                await asyncio.to_thread(self._record_failure, sla_id, f"not measured: {exc}")
        if not measured:
            return 0
        statuses = self._judge(measured, at)
        by_sla: dict[int, list[tuple[_Measured, SloStatus, bool]]] = {}
        for m, (status, starts_prediction) in zip(measured, statuses, strict=True):
            by_sla.setdefault(m.sla_id, []).append((m, status, starts_prediction))
        for sla_id, items in by_sla.items():
            try:
                await asyncio.to_thread(self._record, sla_id, items, at)
            except Exception as exc:
                log.warning("SLA %s could not be recorded: %s", sla_id, exc)
        live = {sla_id for sla_id, *_ in slas}
        for key in [k for k in self._histories if k[0] not in live]:
            del self._histories[key]  # SLAs terminated or deleted
        return len(measured)

    # --- reading -------------------------------------------------------------------------------------------

    def _live_slas(self) -> list[tuple[int, str, str, dict[str, Any]]]:
        with self._db.transaction() as s:
            rows = store.active_slas(s)[:MAX_SLAS_PER_PASS]
            return [(r.id, r.namespace, r.name, r.spec) for r in rows]

    async def _measure(self, sla_id: int, namespace: str, name: str, spec: SlaSpec, at: float) -> list[_Measured]:
        facts = None if spec.workload is None else await asyncio.to_thread(self._facts, namespace, spec.workload)
        target = None
        if facts is not None and spec.workload is not None:
            cpu = sum(r.cpu for r in facts) or None
            target = SliTarget(namespace, spec.workload, tuple(sorted({r.cluster for r in facts})), cpu)
        period = duration_seconds(spec.period)
        out = []
        for slo in spec.slos:
            history = self._histories.setdefault((sla_id, slo.name), _History())
            window = duration_seconds(slo.window)
            windows = windows_for(window, period, shortest=2 * self._interval)
            if target is None or facts is None:
                reading = SliReading(None, reason="namespace-wide SLAs are not measured yet")
            elif slo.kind is SloKind.PRESS_COMPLIANCE:
                reading = press_sli([r.country for r in facts], spec.press.data_residency)
            elif slo.kind is SloKind.COST:
                reading = cost_sli([r.cost for r in facts])
            elif slo.kind in (SloKind.SCALABILITY, SloKind.INCIDENT_RESPONSE):
                reading = await asyncio.to_thread(self._recorded_sli, sla_id, slo, window, at)
            else:
                reading = await read_metric_sli(self._metrics(), slo, target, window, at)
            bad = np.zeros(N_COLS)
            total = np.zeros(N_COLS)
            events = np.full(N_COLS, math.inf)
            allowed_bad = math.nan
            if not reading.no_data:
                history.append(at, float(reading.value))  # type: ignore[arg-type]
            if KINDS[slo.kind].ratio and target is not None:
                for col, w in enumerate(windows):
                    r = reading if col == Col.WINDOW else await read_metric_sli(self._metrics(), slo, target, w, at)
                    bad[col] = r.bad or 0.0
                    total[col] = r.total or 0.0
                    events[col] = r.events if math.isfinite(r.events) else r.total or 0.0
            else:
                threshold = threshold_of(slo)
                if threshold is not None:
                    slice_len = duration_seconds(slo.timeslice) if slo.timeslice else self._interval
                    at_most = comparison_of(slo) is Comparison.AT_MOST
                    bad, total = slice_counts(
                        *history.arrays(),
                        threshold,
                        at_most,
                        at,
                        windows,
                    )
                    events = total.copy()
                    events[Col.WINDOW] = reading.events
                    total[Col.WINDOW] = 0.0 if reading.no_data else max(total[Col.WINDOW], 1.0)
                    allowed_bad = (1.0 - slo.target) * period / slice_len
            out.append(_Measured(sla_id, namespace, name, spec, slo, reading, bad, total, events, allowed_bad, history))
        return out

    # --- judging -------------------------------------------------------------------------------------------

    def _judge(self, measured: list[_Measured], at: float) -> list[tuple[SloStatus, bool]]:
        n = len(measured)
        thresholds = np.array([threshold_of(m.slo) if threshold_of(m.slo) is not None else math.nan for m in measured])
        at_most = np.array([comparison_of(m.slo) is Comparison.AT_MOST for m in measured])
        values = np.array([m.reading.value if not m.reading.no_data else math.nan for m in measured], dtype=float)
        batch = SloBatch(
            bad=np.stack([m.bad for m in measured]),
            total=np.stack([m.total for m in measured]),
            events=np.stack([m.events for m in measured]),
            value=values,
            threshold=thresholds,
            at_most=at_most,
            is_ratio=np.array([KINDS[m.slo.kind].ratio for m in measured]),
            target=np.array([m.slo.target for m in measured]),
            min_events=np.array([float(m.slo.min_events) for m in measured]),
            allowed_bad=np.array([m.allowed_bad for m in measured]),
        )
        status = evaluate_batch(batch)
        # forecasts: the threshold kinds' recent values on one time grid (one point per pass, NaN where missing)
        grid = np.array([at - self._interval * (FORECAST_POINTS - 1 - i) for i in range(FORECAST_POINTS)])
        hist = np.full((n, FORECAST_POINTS), math.nan)
        for i, m in enumerate(measured):
            times, values = m.history.arrays()
            for t, v in zip(times[-FORECAST_POINTS:], values[-FORECAST_POINTS:], strict=True):
                slot = round((t - grid[0]) / self._interval)
                if 0 <= slot < FORECAST_POINTS:
                    hist[i, slot] = v
        f = forecast(grid, hist, np.nan_to_num(thresholds, nan=math.inf), at_most, at, self._predictor)
        out = []
        names = [c.name.lower() for c in Col]
        for i, m in enumerate(measured):
            state = state_of(int(status.state[i]))
            alarm = bool(f.alarm[i]) and not math.isnan(thresholds[i]) and state is not SloState.VIOLATED
            starts = alarm and not m.history.predicted
            m.history.predicted = alarm
            if alarm and state is SloState.MET:
                state = SloState.AT_RISK
            breach_at = datetime.fromtimestamp(at + float(f.time_to_breach[i]), UTC) if alarm else None
            burn = {names[c]: float(status.burn[i, c]) for c in range(N_COLS) if math.isfinite(status.burn[i, c])}
            budget = float(status.budget_remaining[i])
            message = m.reading.reason
            out.append(
                (
                    SloStatus(
                        slo=m.slo.name,
                        kind=m.slo.kind,
                        state=state,
                        value=None if m.reading.no_data else m.reading.value,
                        target=m.slo.target,
                        budget_remaining=max(min(budget, 1.0), -1e9) if math.isfinite(budget) else None,
                        burn_rates=burn,
                        predicted_breach_at=breach_at,
                        confidence=float(f.confidence[i]) if alarm else None,
                        message=message,
                        evaluated_at=datetime.fromtimestamp(at, UTC),
                    ),
                    starts,
                )
            )
        return out

    # --- recording -----------------------------------------------------------------------------------------

    def _record(self, sla_id: int, items: list[tuple[_Measured, SloStatus, bool]], at: float) -> None:
        when = datetime.fromtimestamp(at, UTC)
        with self._db.transaction() as s:
            row = s.get(SlaRow, sla_id)
            if row is None or row.state not in store.LIVE_STATES:
                return  # terminated while it was measured
            subject = store.sla_subject(row.namespace, row.name)
            violated = []
            for m, status, starts_prediction in items:
                store.record_slo_status(s, row, status)
                if starts_prediction and status.predicted_breach_at is not None:
                    record_event(
                        s,
                        EventKind.SLA_BREACH_PREDICTED,
                        subject,
                        f"SLO {m.slo.name} predicted to breach at {status.predicted_breach_at.isoformat()}",
                        slo=m.slo.name,
                        slo_kind=m.slo.kind.value,
                        value=status.value,
                        threshold=threshold_of(m.slo),
                        predicted_at=status.predicted_breach_at.isoformat(),
                        confidence=status.confidence,
                    )
                if status.state is SloState.VIOLATED:
                    violated.append(m.slo.name)
                    store.open_violation(
                        s, row, m.slo.name, value=status.value, comparison=comparison_of(m.slo), at=when
                    )
                else:
                    store.close_violation(s, row, m.slo.name, at=when)
            self._follow_up(s, row, {m.slo.name: st for m, st, _ in items}, when)
            if violated:
                store.set_sla_state(s, row, SlaState.VIOLATED, f"SLO {', '.join(violated)} violated", slos=violated)
            else:
                store.set_sla_state(s, row, SlaState.ACTIVE, "every SLO within its objective")

    @staticmethod
    def _follow_up(s: Session, row: SlaRow, statuses: dict[str, SloStatus], when: datetime) -> None:
        """Complete the audit of the closed loop: an action's SLO back to Met (or the SLA's SLOs all Met, for an
        action on no particular SLO) is what happened after it."""
        for action in store.list_actions(s, row, pending_followup=True, limit=50):
            watched = [statuses[action.slo]] if action.slo in statuses else list(statuses.values())
            if watched and all(st.state is SloState.MET for st in watched):
                at = action.at if action.at.tzinfo else action.at.replace(tzinfo=UTC)
                store.record_followup(
                    s,
                    action.id,
                    {
                        "slo_state": SloState.MET.value,
                        "value": watched[0].value,
                        "met_after_seconds": max(0.0, (when - at).total_seconds()),
                    },
                    at=when,
                )

    def _facts(self, namespace: str, workload: str) -> list[_Running]:
        """The workload's running replicas: where (cluster, country) and what they cost (requests x prices)."""
        with self._db.transaction() as s:
            rows = s.execute(
                select(ReplicaRow, ClusterRow.country, ClusterRow.spec)
                .join(WorkloadRow, WorkloadRow.id == ReplicaRow.workload_id)
                .join(ClusterRow, ClusterRow.name == ReplicaRow.cluster)
                .where(
                    WorkloadRow.namespace == namespace,
                    WorkloadRow.name == workload,
                    ReplicaRow.phase == ReplicaPhase.RUNNING.value,
                )
                .limit(MAX_REPLICAS_READ)
            )
            out = []
            for replica, country, cluster_spec in rows:
                prices = Prices.model_validate(cluster_spec.get("prices", {}))
                cost = ReplicaCost(
                    replica.cpu_request, replica.memory_request_mib, prices.cpu_hour_eur, prices.gib_hour_eur
                )
                out.append(_Running(replica.cluster, country, replica.cpu_request, cost))
            return out

    def _recorded_sli(self, sla_id: int, slo: SloSpec, window: float, at: float) -> SliReading:
        """An SLI of the SLA's own records over ``window`` seconds ending at ``at``: scale-out times or MTTR."""
        since = datetime.fromtimestamp(at - window, UTC)
        with self._db.snapshot() as s:
            row = s.get(SlaRow, sla_id)
            if row is None:
                return SliReading(None, reason="the SLA was deleted")
            if slo.kind is SloKind.SCALABILITY:
                return scalability_sli(store.scale_out_spans(s, row, since, datetime.fromtimestamp(at, UTC)))
            spans = store.resolved_violations(s, row, since, besides=slo.name)
            # a violation is detected when it opens (the SLO loop opens it), so it starts and is detected then
            return incident_sli([Incident(start, start, end) for start, end in spans], measure="mttr")

    def _record_failure(self, sla_id: int, message: str) -> None:
        with self._db.transaction() as s:
            row = s.get(SlaRow, sla_id)
            if row is not None:
                row.message = message[:1000]
