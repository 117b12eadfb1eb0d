"""Rebalancing plans in the store: the plan, its moves and where each is, and the cooldown they imply."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nemo_kernel.domain import (
    MOVES_PAGE,
    EventKind,
    MoveState,
    RebalanceMove,
    RebalanceState,
    RebalanceStatus,
    RebalanceTotals,
)
from nemo_kernel.store.errors import NotFound
from nemo_kernel.store.events import record_event
from nemo_kernel.store.tables import RebalanceMoveRow, RebalanceRow

STARTED = (MoveState.MOVING.value, MoveState.DONE.value, MoveState.FAILED.value)
"""A move in one of these states started a migration: its workload's cooldown runs from ``started_at``."""


def subject(rebalance_id: int) -> str:
    """The event subject of a plan."""
    return f"rebalance/{rebalance_id}"


def create_rebalance(
    s: Session,
    row: RebalanceRow,
    moves: Sequence[RebalanceMoveRow],
    *,
    event: EventKind,
    data: Mapping[str, Any],
) -> RebalanceRow:
    """Store a plan and its moves, and record ``event`` (``rebalance.planned`` or ``rebalance.failed``)."""
    s.add(row)
    s.flush()  # the id is in the moves and the event
    for move in moves:
        move.rebalance_id = row.id
        s.add(move)
    record_event(s, event, subject(row.id), row.message, rebalance=row.id, **data)
    return row


def applying(s: Session) -> RebalanceRow | None:
    """The plan being applied, if any (there is at most one)."""
    return s.scalar(select(RebalanceRow).where(RebalanceRow.state == RebalanceState.APPLYING.value).limit(1))


def get_rebalance(s: Session, rebalance_id: int) -> RebalanceRow:
    """One plan; NotFound naming it."""
    row = s.get(RebalanceRow, rebalance_id)
    if row is None:
        raise NotFound("rebalance", str(rebalance_id))
    return row


def recent(s: Session, limit: int) -> list[RebalanceRow]:
    """The latest plans, newest first."""
    return list(s.scalars(select(RebalanceRow).order_by(RebalanceRow.id.desc()).limit(limit)))


def moves_of(s: Session, rebalance_id: int, offset: int = 0, limit: int | None = None) -> list[RebalanceMoveRow]:
    """The moves of a plan, in plan order: all of them, or ``limit`` from the ``offset``-th."""
    query = select(RebalanceMoveRow).where(RebalanceMoveRow.rebalance_id == rebalance_id)
    return list(s.scalars(query.order_by(RebalanceMoveRow.id).offset(offset).limit(limit)))


def count_moves(s: Session, rebalance_id: int) -> int:
    """How many moves a plan has."""
    query = select(func.count()).where(RebalanceMoveRow.rebalance_id == rebalance_id)
    return int(s.scalar(query) or 0)


def status_of(s: Session, row: RebalanceRow, offset: int = 0, limit: int = MOVES_PAGE) -> RebalanceStatus:
    """The API's view of a stored plan with a page of its moves (``limit`` from the ``offset``-th)."""
    return to_status(row, moves_of(s, row.id, offset, limit), count_moves(s, row.id))


def cooling_down(s: Session, since: datetime) -> set[int]:
    """Ids of the workloads the rebalancer started moving at or after ``since`` (their cooldown runs)."""
    query = select(RebalanceMoveRow.workload_id).where(
        RebalanceMoveRow.state.in_(STARTED), RebalanceMoveRow.started_at >= since
    )
    return set(s.scalars(query.distinct()))


def to_status(row: RebalanceRow, moves: Sequence[RebalanceMoveRow], total: int) -> RebalanceStatus:
    """The API's view of a stored plan, ``moves`` being a page of its ``total``."""
    return RebalanceStatus(
        id=row.id,
        state=RebalanceState(row.state),
        apply=row.apply,
        solver_status=row.solver_status,
        message=row.message,
        before=RebalanceTotals.model_validate(row.totals["before"]),
        after=RebalanceTotals.model_validate(row.totals["after"]),
        solve_seconds=row.solve_seconds,
        moves=[
            RebalanceMove(
                workload=m.workload,
                replica=m.replica,
                index=m.index,
                from_cluster=m.from_cluster,
                from_node=m.from_node,
                to_cluster=m.to_cluster,
                to_node=m.to_node,
                saving_eur_h=m.saving_eur_h,
                saving_gco2_h=m.saving_gco2_h,
                criterion=m.criterion,
                state=MoveState(m.state),
                migration=m.migration_id,
                reason=m.reason,
            )
            for m in moves
        ],
        moves_total=total,
        pinned=dict(row.pinned),
        requested_by=row.requested_by,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )
