"""SLAs in the store: versioned specs and their lifecycle, the status of each SLO, violations, and the audit of the
closed loop. Part A (API, CLI) applies and reads SLAs; part B (evaluation) lists the active ones, records status,
opens and closes violations and records actions, all through these functions.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import ColumnElement, Select, and_, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nemo_kernel.domain import EventKind, utcnow
from nemo_kernel.domain.common import stored_refusal
from nemo_kernel.domain.sla import (
    Comparison,
    SlaAction,
    SlaSpec,
    SlaState,
    SlaStatus,
    SloKind,
    SloState,
    SloStatus,
    Violation,
)
from nemo_kernel.store.errors import Conflict, NotFound
from nemo_kernel.store.events import record_event
from nemo_kernel.store.tables import EventRow, SlaActionRow, SlaRow, SlaViolationRow, SloStatusRow

LIVE_STATES = (SlaState.ACTIVE.value, SlaState.VIOLATED.value)
"""States in which an SLA is evaluated."""

_TRANSITIONS: dict[tuple[SlaState, SlaState], EventKind] = {
    (SlaState.DRAFT, SlaState.ACTIVE): EventKind.SLA_ACTIVATED,
    (SlaState.ACTIVE, SlaState.VIOLATED): EventKind.SLA_VIOLATED,
    (SlaState.VIOLATED, SlaState.ACTIVE): EventKind.SLA_RECOVERED,
    (SlaState.DRAFT, SlaState.TERMINATED): EventKind.SLA_TERMINATED,
    (SlaState.ACTIVE, SlaState.TERMINATED): EventKind.SLA_TERMINATED,
    (SlaState.VIOLATED, SlaState.TERMINATED): EventKind.SLA_TERMINATED,
}
"""The lifecycle ``Draft -> Active -> (Violated <-> Active) -> Terminated``; each allowed step and its event.
Applying a Terminated SLA again is its next version, a Draft again (:func:`apply_sla`, with ``sla.applied``)."""

SORT_KEYS = ("name", "-name", "created", "-created", "updated", "-updated", "state", "-state")
"""What a list of SLAs may be sorted by (``-`` descending); the API refuses anything else."""


def sla_subject(namespace: str, name: str) -> str:
    """Event subject of an SLA."""
    return f"sla/{namespace}/{name}"


@dataclass(frozen=True)
class SlaApplyResult:
    """What applying an SLA did."""

    row: SlaRow
    outcome: Literal["created", "updated", "unchanged"]


def apply_sla(session: Session, spec: SlaSpec) -> SlaApplyResult:
    """Create an SLA as a Draft, or store a changed spec as its next version (state kept; a Terminated SLA
    becomes a Draft again). The caller activates it (:func:`set_sla_state`) when its workload is deployed.

    Concurrent applies of one name each get their own version: the row is locked for the transaction.
    """
    stored = spec.model_dump(mode="json")
    row = _locked_sla(session, spec.namespace, spec.name)
    if row is None:
        created = SlaRow(
            namespace=spec.namespace,
            name=spec.name,
            workload=spec.workload,
            version=1,
            state=SlaState.DRAFT.value,
            spec=stored,
            message="waiting for its workload to be deployed",
        )
        try:
            with session.begin_nested():
                session.add(created)
        except IntegrityError:
            row = _locked_sla(session, spec.namespace, spec.name)
            if row is None:
                raise
        else:
            init_slo_statuses(session, created)
            record_event(
                session,
                EventKind.SLA_APPLIED,
                sla_subject(spec.namespace, spec.name),
                "SLA applied (version 1)",
                version=1,
                workload=spec.workload,
            )
            return SlaApplyResult(created, "created")
    if _same_spec(row.spec, stored) and row.state != SlaState.TERMINATED.value:
        return SlaApplyResult(row, "unchanged")
    row.version += 1
    row.spec = stored
    row.workload = spec.workload
    if row.state == SlaState.TERMINATED.value:
        row.state = SlaState.DRAFT.value
        row.message = "waiting for its workload to be deployed"
        # the statuses of the terminated version describe objectives that may no longer exist
        session.execute(delete(SloStatusRow).where(SloStatusRow.sla_id == row.id))
    else:
        _forget_removed_slos(session, row, spec)
    init_slo_statuses(session, row)
    record_event(
        session,
        EventKind.SLA_APPLIED,
        sla_subject(spec.namespace, spec.name),
        f"new version {row.version} applied",
        version=row.version,
        workload=spec.workload,
    )
    return SlaApplyResult(row, "updated")


def _forget_removed_slos(session: Session, row: SlaRow, spec: SlaSpec) -> None:
    names = [slo.name for slo in spec.slos]
    session.execute(delete(SloStatusRow).where(SloStatusRow.sla_id == row.id, SloStatusRow.slo.not_in(names)))


def _locked_sla(session: Session, namespace: str, name: str) -> SlaRow | None:
    where = (SlaRow.namespace == namespace, SlaRow.name == name)
    if session.get_bind().dialect.name == "sqlite":
        # SQLite has no row locks: a write that changes nothing takes the database's write lock now (as workloads do)
        session.execute(update(SlaRow).where(*where).values(version=SlaRow.version))
    query = select(SlaRow).where(*where).with_for_update().execution_options(populate_existing=True)
    return session.scalar(query)


def _same_spec(stored: dict[str, Any], new: dict[str, Any]) -> bool:
    if stored == new:
        return True
    try:  # fields added to the model since the row was stored are not a change
        return SlaSpec.model_validate(stored).model_dump(mode="json") == new
    except ValidationError:
        return False


def get_sla(session: Session, namespace: str, name: str) -> SlaRow:
    """The SLA ``namespace/name``; :class:`NotFound` otherwise."""
    row = session.scalar(select(SlaRow).where(SlaRow.namespace == namespace, SlaRow.name == name))
    if row is None:
        raise NotFound("sla", f"{namespace}/{name}")
    return row


def sla_spec(row: SlaRow) -> SlaSpec:
    """The stored spec of an SLA, validated again."""
    return SlaSpec.model_validate(row.spec)


def _filtered(
    query: Select[Any],
    *,
    namespace: str | None,
    workload: str | None,
    state: SlaState | None,
    kind: SloKind | None,
) -> Select[Any]:
    conditions: list[ColumnElement[bool]] = []
    if namespace is not None:
        conditions.append(SlaRow.namespace == namespace)
    if workload is not None:
        conditions.append(SlaRow.workload == workload)
    if state is not None:
        conditions.append(SlaRow.state == state.value)
    if kind is not None:
        # every SLO has a status row from the moment it is applied (init_slo_statuses), so its kind is there
        conditions.append(SlaRow.id.in_(select(SloStatusRow.sla_id).where(SloStatusRow.kind == kind.value)))
    return query.where(and_(*conditions)) if conditions else query


def list_slas(
    session: Session,
    *,
    namespace: str | None = None,
    workload: str | None = None,
    state: SlaState | None = None,
    kind: SloKind | None = None,
    sort: str = "name",
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[SlaRow], int]:
    """A page of SLAs matching the filters, and how many match in all."""
    if sort not in SORT_KEYS:
        raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}")
    column = {"name": SlaRow.name, "created": SlaRow.created_at, "updated": SlaRow.updated_at, "state": SlaRow.state}[
        sort.lstrip("-")
    ]
    ordered = column.desc() if sort.startswith("-") else column.asc()
    filters: dict[str, Any] = {"namespace": namespace, "workload": workload, "state": state, "kind": kind}
    query = _filtered(select(SlaRow), **filters).order_by(ordered, SlaRow.namespace, SlaRow.name, SlaRow.id)
    total = session.scalar(_filtered(select(func.count(SlaRow.id)), **filters)) or 0
    return list(session.scalars(query.limit(limit).offset(offset))), total


def active_slas(session: Session) -> list[SlaRow]:
    """Every SLA that is evaluated (Active or Violated), by namespace then name."""
    return list(
        session.scalars(select(SlaRow).where(SlaRow.state.in_(LIVE_STATES)).order_by(SlaRow.namespace, SlaRow.name))
    )


def slas_of_workload(session: Session, namespace: str, workload: str, *, live_only: bool = True) -> list[SlaRow]:
    """The SLAs that bind one workload: those naming it and the namespace-wide ones (``workload`` NULL)."""
    query = select(SlaRow).where(
        SlaRow.namespace == namespace, (SlaRow.workload == workload) | SlaRow.workload.is_(None)
    )
    if live_only:
        query = query.where(SlaRow.state.in_(LIVE_STATES))
    return list(session.scalars(query.order_by(SlaRow.name)))


def set_sla_state(session: Session, row: SlaRow, state: SlaState, message: str = "", **data: Any) -> bool:
    """Move an SLA to ``state`` with the lifecycle's event; False (nothing recorded) when it is already there.

    Raises :class:`Conflict` for a step the lifecycle does not have (e.g. Terminated -> Violated).
    """
    current = SlaState(row.state)
    if current is state:
        return False
    kind = _TRANSITIONS.get((current, state))
    if kind is None:
        raise Conflict(f"SLA {row.namespace}/{row.name} cannot go from {current.value} to {state.value}")
    row.state = state.value
    row.message = message
    record_event(
        session,
        kind,
        sla_subject(row.namespace, row.name),
        message or f"{current.value} -> {state.value}",
        previous=current.value,
        state=state.value,
        version=row.version,
        **data,
    )
    return True


def readable_sla_spec(row: SlaRow) -> SlaSpec:
    """The stored spec of an SLA, validated again; :class:`Conflict` (409) naming the field when this version's
    checks refuse what an older NEMO stored."""
    try:
        return sla_spec(row)
    except ValidationError as exc:
        raise Conflict(f"SLA {row.namespace}/{row.name}: {stored_refusal(exc, 'spec', _REMEDY)}") from None


_REMEDY = "apply it again or delete it"


def to_sla_status(row: SlaRow) -> SlaStatus:
    """Domain view of a stored SLA.

    A spec stored by an older NEMO that this version's checks refuse (a window shorter than NEMO measures) is shown
    as None with the reason in the message, so that listing every SLA still works; the SLO loop records on the SLA
    that it could not be measured, and the SLA can be applied again or deleted."""
    spec: SlaSpec | None
    try:
        spec, message = sla_spec(row), row.message
    except ValidationError as exc:
        spec, message = None, stored_refusal(exc, "spec", _REMEDY)
    return SlaStatus(
        name=row.name,
        namespace=row.namespace,
        workload=row.workload,
        version=row.version,
        state=SlaState(row.state),
        message=message,
        spec=spec,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


# --- SLO status ----------------------------------------------------------------------------------------------------


def init_slo_statuses(session: Session, row: SlaRow) -> None:
    """Give every SLO of the SLA a status row (NoData until evaluated); existing rows are kept."""
    known = {s.slo for s in session.scalars(select(SloStatusRow).where(SloStatusRow.sla_id == row.id))}
    for slo in sla_spec(row).slos:
        if slo.name not in known:
            session.add(
                SloStatusRow(
                    sla_id=row.id,
                    slo=slo.name,
                    kind=slo.kind.value,
                    state=SloState.NO_DATA.value,
                    target=slo.target,
                    burn_rates={},
                    message="not evaluated yet",
                )
            )
        else:  # the kind and target of a new version
            session.execute(
                update(SloStatusRow)
                .where(SloStatusRow.sla_id == row.id, SloStatusRow.slo == slo.name)
                .values(kind=slo.kind.value, target=slo.target)
            )


def record_slo_status(session: Session, row: SlaRow, status: SloStatus) -> None:
    """Store the latest evaluation of one SLO of ``row`` (replaces the previous one)."""
    values = {
        "kind": status.kind.value,
        "state": status.state.value,
        "value": status.value,
        "target": status.target,
        "budget_remaining": status.budget_remaining,
        "burn_rates": dict(status.burn_rates),
        "predicted_breach_at": status.predicted_breach_at,
        "confidence": status.confidence,
        "message": status.message,
        "evaluated_at": status.evaluated_at or utcnow(),
    }
    existing = session.get(SloStatusRow, (row.id, status.slo))
    if existing is None:
        session.add(SloStatusRow(sla_id=row.id, slo=status.slo, **values))
    else:
        for key, value in values.items():
            setattr(existing, key, value)


def slo_statuses(session: Session, row: SlaRow) -> list[SloStatus]:
    """The status of every SLO of ``row``, in the spec's order; an SLO never evaluated is NoData."""
    stored = {s.slo: s for s in session.scalars(select(SloStatusRow).where(SloStatusRow.sla_id == row.id))}
    try:
        slos: list[tuple[str, SloKind, float]] = [(o.name, o.kind, o.target) for o in sla_spec(row).slos]
    except ValidationError:  # stored by an older NEMO and refused now: what was recorded of each SLO is still true
        slos = [(name, SloKind(s.kind), s.target) for name, s in stored.items()]
    out: list[SloStatus] = []
    for name, kind, target in slos:
        found = stored.get(name)
        if found is None or found.evaluated_at is None:
            out.append(SloStatus(slo=name, kind=kind, target=target, message="not evaluated yet"))
            continue
        out.append(
            SloStatus(
                slo=found.slo,
                kind=SloKind(found.kind),
                state=SloState(found.state),
                value=found.value,
                target=found.target,
                budget_remaining=found.budget_remaining,
                burn_rates=found.burn_rates,
                predicted_breach_at=found.predicted_breach_at,
                confidence=found.confidence,
                message=found.message,
                evaluated_at=found.evaluated_at,
            )
        )
    return out


# --- Violations ----------------------------------------------------------------------------------------------------


def _worse(a: float | None, b: float | None, comparison: Comparison) -> float | None:
    if a is None or b is None:
        return b if a is None else a
    return max(a, b) if comparison is Comparison.AT_MOST else min(a, b)


def open_violation(
    session: Session,
    row: SlaRow,
    slo: str,
    *,
    value: float | None,
    comparison: Comparison,
    breach_level: str = "violated",
    at: datetime | None = None,
) -> tuple[SlaViolationRow, bool]:
    """The open violation of ``slo`` (its worst value and level updated), or a new one; True when new."""
    current = session.scalar(
        select(SlaViolationRow).where(
            SlaViolationRow.sla_id == row.id, SlaViolationRow.slo == slo, SlaViolationRow.ended_at.is_(None)
        )
    )
    if current is not None:
        current.worst_value = _worse(current.worst_value, value, comparison)
        current.breach_level = breach_level
        return current, False
    created = SlaViolationRow(
        sla_id=row.id, slo=slo, started_at=at or utcnow(), worst_value=value, breach_level=breach_level
    )
    session.add(created)
    session.flush()
    return created, True


def close_violation(session: Session, row: SlaRow, slo: str, *, at: datetime | None = None) -> SlaViolationRow | None:
    """End the open violation of ``slo``; None when there is none."""
    current = session.scalar(
        select(SlaViolationRow).where(
            SlaViolationRow.sla_id == row.id, SlaViolationRow.slo == slo, SlaViolationRow.ended_at.is_(None)
        )
    )
    if current is not None:
        current.ended_at = at or utcnow()
    return current


def list_violations(
    session: Session,
    *,
    namespace: str | None = None,
    sla: str | None = None,
    slo: str | None = None,
    open_only: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Violation], int]:
    """A page of violations, newest first, and how many match in all."""
    conditions: list[ColumnElement[bool]] = []
    if namespace is not None:
        conditions.append(SlaRow.namespace == namespace)
    if sla is not None:
        conditions.append(SlaRow.name == sla)
    if slo is not None:
        conditions.append(SlaViolationRow.slo == slo)
    if open_only:
        conditions.append(SlaViolationRow.ended_at.is_(None))
    joined = select(SlaViolationRow, SlaRow.namespace, SlaRow.name).join(SlaRow, SlaRow.id == SlaViolationRow.sla_id)
    counted = select(func.count(SlaViolationRow.id)).join(SlaRow, SlaRow.id == SlaViolationRow.sla_id)
    if conditions:
        joined = joined.where(and_(*conditions))
        counted = counted.where(and_(*conditions))
    rows = session.execute(
        joined.order_by(SlaViolationRow.started_at.desc(), SlaViolationRow.id.desc()).limit(limit).offset(offset)
    )
    out = [
        Violation(
            id=v.id,
            namespace=ns,
            sla=name,
            slo=v.slo,
            started_at=v.started_at,
            ended_at=v.ended_at,
            worst_value=v.worst_value,
            breach_level=v.breach_level,
        )
        for v, ns, name in rows
    ]
    return out, session.scalar(counted) or 0


# --- Audit of the closed loop --------------------------------------------------------------------------------------


def record_action(
    session: Session,
    row: SlaRow,
    *,
    slo: str | None,
    trigger: str,
    predicted: dict[str, Any],
    action: str,
    outcome: str,
    at: datetime | None = None,
    pending: bool = False,
) -> SlaActionRow:
    """Store one act of the closed loop with an ``sla.action`` event; its id is set on return. A ``pending`` act is
    carried out later by the SLA action runner, which records its outcome with :func:`complete_action`."""
    created = SlaActionRow(
        pending=pending,
        sla_id=row.id,
        slo=slo,
        trigger=trigger,
        predicted=predicted,
        action=action,
        outcome=outcome,
        at=at or utcnow(),
        followup=None,
    )
    session.add(created)
    session.flush()
    record_event(
        session,
        EventKind.SLA_ACTION,
        sla_subject(row.namespace, row.name),
        f"{action} on {trigger}: {outcome}",
        action_id=created.id,
        slo=slo,
        trigger=trigger,
        action=action,
        outcome=outcome,
        pending=pending,
    )
    return created


def pending_actions(session: Session, *, limit: int = 50, lock: bool = True) -> list[tuple[SlaRow, SlaActionRow]]:
    """Acts decided but not carried out yet, oldest first, with their SLA; ``lock`` locks them where the database
    can, so that two control planes do not both carry one out (a look in a snapshot passes False)."""
    query = (
        select(SlaRow, SlaActionRow)
        .join(SlaActionRow, SlaActionRow.sla_id == SlaRow.id)
        .where(SlaActionRow.pending.is_(True))
        .order_by(SlaActionRow.id)
        .limit(limit)
    )
    if lock:
        query = query.with_for_update(of=SlaActionRow, skip_locked=True)
    return [(sla, action) for sla, action in session.execute(query)]


def action_with_sla(session: Session, action_id: int) -> tuple[SlaRow, SlaActionRow] | None:
    """One act of the closed loop and its SLA; None when the SLA was deleted since."""
    action = session.get(SlaActionRow, action_id)
    if action is None:
        return None
    sla = session.get(SlaRow, action.sla_id)
    return None if sla is None else (sla, action)


def complete_action(session: Session, sla: SlaRow, action: SlaActionRow, outcome: str, **data: Any) -> None:
    """Record what the runner did for a pending act, with an ``sla.action`` event (``data`` goes into it)."""
    action.pending = False
    action.outcome = outcome[:4000]
    record_event(
        session,
        EventKind.SLA_ACTION,
        sla_subject(sla.namespace, sla.name),
        f"{action.action} on {action.trigger}: {action.outcome}",
        action_id=action.id,
        slo=action.slo,
        trigger=action.trigger,
        action=action.action,
        outcome=action.outcome,
        **data,
    )


def record_followup(session: Session, action_id: int, followup: dict[str, Any], *, at: datetime | None = None) -> None:
    """Record what happened after an action (e.g. the SLO's state some time later)."""
    found = session.get(SlaActionRow, action_id)
    if found is None:
        raise NotFound("sla action", str(action_id))
    found.followup = followup
    found.followup_at = at or utcnow()


def list_actions(
    session: Session, row: SlaRow, *, pending_followup: bool = False, limit: int = 100, offset: int = 0
) -> list[SlaAction]:
    """The audit of one SLA, newest first; ``pending_followup``: only actions whose follow-up is not recorded."""
    query = select(SlaActionRow).where(SlaActionRow.sla_id == row.id)
    if pending_followup:
        # an act still pending has not happened: nothing followed it yet
        query = query.where(SlaActionRow.followup_at.is_(None), SlaActionRow.pending.is_(False))
    rows = session.scalars(query.order_by(SlaActionRow.at.desc(), SlaActionRow.id.desc()).limit(limit).offset(offset))
    return [
        SlaAction(
            id=a.id,
            namespace=row.namespace,
            sla=row.name,
            slo=a.slo,
            trigger=a.trigger,
            predicted=a.predicted,
            action=a.action,
            outcome=a.outcome,
            at=a.at,
            followup=a.followup,
            followup_at=a.followup_at,
            pending=a.pending,
        )
        for a in rows
    ]


# --- Store facts some SLO kinds measure ----------------------------------------------------------------------------

MAX_FACTS = 500
"""Violations or scale-outs read per SLO and pass (the newest): bounded work whatever the window."""


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def resolved_violations(session: Session, row: SlaRow, since: datetime, *, besides: str) -> list[tuple[float, float]]:
    """(started, ended) POSIX times of the SLA's violations that ended since ``since``, of every SLO but
    ``besides`` (an incident-response SLO does not time its own violations)."""
    query = (
        select(SlaViolationRow.started_at, SlaViolationRow.ended_at)
        .where(
            SlaViolationRow.sla_id == row.id,
            SlaViolationRow.slo != besides,
            SlaViolationRow.ended_at.is_not(None),
            SlaViolationRow.ended_at >= since,
        )
        .order_by(SlaViolationRow.ended_at.desc())
        .limit(MAX_FACTS)
    )
    return [(_aware(a).timestamp(), _aware(b).timestamp()) for a, b in session.execute(query) if b is not None]


def scale_out_spans(session: Session, row: SlaRow, since: datetime, now: datetime) -> list[float]:
    """Seconds each scale-out of the SLA decided since ``since`` took: from the decision (its ``sla_actions`` row)
    to the workload's next ``workload.running`` event, i.e. serving every replica it asked for; one still waiting
    counts its time so far (a scale-out that never ends must breach, not be NoData)."""
    if row.workload is None:
        return []
    decided = session.scalars(
        select(SlaActionRow.at)
        .where(
            SlaActionRow.sla_id == row.id,
            SlaActionRow.action == "scale_out",
            SlaActionRow.outcome.like("scaled out%"),
            SlaActionRow.at >= since,
        )
        .order_by(SlaActionRow.at.desc())
        .limit(MAX_FACTS)
    ).all()
    subject = f"workload/{row.namespace}/{row.workload}"
    spans = []
    for at in decided:
        running = session.scalar(
            select(func.min(EventRow.created_at)).where(
                EventRow.subject == subject,
                EventRow.kind == EventKind.WORKLOAD_RUNNING.value,
                EventRow.created_at >= at,
            )
        )
        end = now if running is None else _aware(running)
        spans.append(max(0.0, (end - _aware(at)).total_seconds()))
    return spans


def residency_of_workload(session: Session, namespace: str, workload: str) -> list[str] | None:
    """The countries the SLAs of a workload allow (their ``press.data_residency`` intersected), or None when none
    restricts them; an empty list means no country at all. Drafts count: an SLA waiting for its workload to be
    deployed constrains that very first placement. Terminated SLAs do not."""
    return residency_of_workloads(session, [(namespace, workload)])[(namespace, workload)]


def residency_of_workloads(
    session: Session, workloads: Collection[tuple[str, str]]
) -> dict[tuple[str, str], list[str] | None]:
    """:func:`residency_of_workload` of many workloads ((namespace, name) each) in one query, for a pass that places
    many; the caller bounds how many (each name is a bound parameter)."""
    restricting: dict[tuple[str, str | None], list[set[str]]] = {}  # (namespace, workload or None) -> residencies
    if workloads:
        query = select(SlaRow.namespace, SlaRow.workload, SlaRow.spec).where(
            SlaRow.namespace.in_({ns for ns, _ in workloads}),
            SlaRow.workload.in_({name for _, name in workloads}) | SlaRow.workload.is_(None),
            SlaRow.state != SlaState.TERMINATED.value,
        )
        for namespace, workload, spec in session.execute(query):
            countries = (spec.get("press") or {}).get("data_residency") or []
            if countries:
                restricting.setdefault((namespace, workload), []).append(set(countries))
    found: dict[tuple[str, str], list[str] | None] = {}
    for namespace, name in workloads:
        sets = restricting.get((namespace, name), []) + restricting.get((namespace, None), [])
        found[(namespace, name)] = sorted(set.intersection(*sets)) if sets else None
    return found


__all__: Sequence[str] = (
    "LIVE_STATES",
    "SORT_KEYS",
    "SlaApplyResult",
    "action_with_sla",
    "active_slas",
    "apply_sla",
    "close_violation",
    "complete_action",
    "get_sla",
    "init_slo_statuses",
    "list_actions",
    "list_slas",
    "list_violations",
    "open_violation",
    "pending_actions",
    "readable_sla_spec",
    "record_action",
    "record_followup",
    "record_slo_status",
    "residency_of_workload",
    "residency_of_workloads",
    "resolved_violations",
    "scale_out_spans",
    "set_sla_state",
    "sla_spec",
    "sla_subject",
    "slas_of_workload",
    "slo_statuses",
    "to_sla_status",
)
