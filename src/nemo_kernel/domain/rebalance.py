"""Rebalancing: a global re-optimisation of where running replicas are, planned by ``orchestrator.rebalance`` and
applied as migrations (make-before-break), one per workload at a time."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from nemo_kernel.domain.common import Model, Name, Spec

MAX_MOVES = 10_000
MOVES_PAGE = 100
"""Moves a plan's answer holds unless asked for another page (``GET /rebalance/{id}?offset=&limit=``)."""
MAX_MOVES_PAGE = 1_000
"""Most moves one plan may make (``max_moves``); a plan is applied one migration per workload at a time."""

MAX_NAMESPACES = 100


class RebalancePolicy(StrEnum):
    """``placement.rebalance``: whether the rebalancer may move the workload's replicas."""

    NEVER = "never"
    ALLOWED = "allowed"


class RebalanceRequest(Spec):
    """``POST /api/v1/rebalance``: plan (and with ``apply``, carry out) a rebalance."""

    apply: bool = False
    max_moves: int | None = Field(
        default=None, ge=1, le=MAX_MOVES, description="most replicas this plan moves (default NEMO_REBALANCE_MAX_MOVES)"
    )
    namespaces: list[Name] | None = Field(
        default=None, min_length=1, max_length=MAX_NAMESPACES, description="only these namespaces' workloads move"
    )


class RebalanceState(StrEnum):
    """Where a plan is."""

    PLANNED = "planned"  # a dry run, or a plan whose saving is below the thresholds: nothing moves
    APPLYING = "applying"  # its moves are being carried out
    APPLIED = "applied"  # every move ended (done or skipped with a reason)
    FAILED = "failed"  # the solve failed or was infeasible: nothing moved


class MoveState(StrEnum):
    """Where one move of a plan is."""

    QUEUED = "queued"  # waits for its workload's previous migration
    MOVING = "moving"  # its migration runs
    DONE = "done"
    SKIPPED = "skipped"  # not started: stale (a filter or capacity refuses it now) or refused; ``reason`` says why
    FAILED = "failed"  # its migration failed or rolled back


class RebalanceMove(Model):
    """One move of a plan, why, and how it went."""

    workload: str
    replica: str
    index: int
    from_cluster: str
    from_node: str
    to_cluster: str
    to_node: str
    saving_eur_h: float
    saving_gco2_h: float
    criterion: str
    state: MoveState
    migration: int | None = None
    reason: str = ""


class RebalanceTotals(Model):
    """Cost and emissions per hour of the replicas the plan considered."""

    eur_h: float
    gco2_h: float


class RebalanceStatus(Model):
    """A stored plan as the API answers it."""

    id: int
    state: RebalanceState
    apply: bool
    solver_status: str
    """optimal, time_limited (HiGHS' best plan at the time limit), infeasible, failed or nothing_to_do."""
    message: str
    before: RebalanceTotals
    after: RebalanceTotals
    solve_seconds: float
    moves: list[RebalanceMove] = Field(
        description="a page of the plan's moves, in plan order: the first MOVES_PAGE unless asked "
        "(GET /rebalance/{id}?offset=&limit=)"
    )
    moves_total: int = Field(ge=0, description="moves in the plan; more than in ``moves`` when it is a page")
    pinned: dict[str, str] = Field(default_factory=dict, description="workloads kept in place, with why")
    requested_by: str
    created_at: datetime
    finished_at: datetime | None = None
