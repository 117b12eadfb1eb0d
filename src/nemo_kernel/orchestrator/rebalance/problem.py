"""What the rebalancer plans over and what it returns: pure values, no I/O.

The caller (``orchestrator.commands.rebalance``) reads the store into :class:`WorkloadPlacement` values, one per
workload with running replicas, and a :class:`~nemo_kernel.orchestrator.decision.NodeTable` of the inventory whose
allocations include every running replica; ``solve.plan_rebalance`` returns a :class:`Plan`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from nemo_kernel.domain import DeploymentSpec


@dataclass(frozen=True, slots=True)
class RunningReplica:
    """One running replica of the workload's current version, where it runs."""

    replica: str
    index: int
    cluster: str
    node: str


@dataclass(frozen=True, slots=True)
class WorkloadPlacement:
    """A workload as it runs now. ``spec`` is the one the decision engine would decide with (SLA residency
    already applied). ``pinned`` says why none of its replicas may move in this plan (None: they may)."""

    workload: str
    """``namespace/name``."""
    spec: DeploymentSpec
    replicas: tuple[RunningReplica, ...]
    pinned: str | None = None


@dataclass(frozen=True, slots=True)
class RebalanceLimits:
    """The knobs of one plan (``Settings.rebalance_*``); every number is finite and bounded by the settings."""

    max_moves: int = 50
    move_cost: float = 0.1
    """Objective units one move costs: a tenth of an average replica's weighted cost-and-carbon per hour."""
    min_saving_relative: float = 0.01
    """A plan applies only if it saves at least this share of the objective ..."""
    min_saving_eur_h: float = 0.01
    min_saving_gco2_h: float = 10.0
    """... and at least one of these absolute savings per hour."""
    time_limit_s: float = 30.0
    candidates_per_workload: int = 8
    """The best nodes by the workload's objective kept per workload (besides the ones it runs on)."""
    threads: int = 1
    cost_neutral: bool = True
    """The moved replicas together may not cost more per hour than before (carbon is saved at no extra cost)."""

    def __post_init__(self) -> None:
        for name in ("move_cost", "min_saving_relative", "min_saving_eur_h", "min_saving_gco2_h", "time_limit_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.max_moves < 0 or self.candidates_per_workload < 1:
            raise ValueError("max_moves must be >= 0 and candidates_per_workload >= 1")


class PlanStatus(StrEnum):
    """How the solve ended; only ``optimal`` and ``time_limited`` plans carry moves."""

    OPTIMAL = "optimal"
    TIME_LIMITED = "time_limited"
    """HiGHS stopped at the time limit: its best feasible plan, not proven optimal."""
    INFEASIBLE = "infeasible"
    FAILED = "failed"
    NOTHING_TO_DO = "nothing_to_do"


@dataclass(frozen=True, slots=True)
class Move:
    """One replica to move, and why: what it saves per hour and the criterion that drove it."""

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
    stateful: bool


@dataclass(frozen=True, slots=True)
class Totals:
    """Cost and emissions per hour of every replica the plan considered."""

    eur_h: float
    gco2_h: float
    objective: float


@dataclass(frozen=True, slots=True)
class Plan:
    """A rebalancing plan: the moves, the totals before and after, the solve's status and time, and whether the
    saving clears the hysteresis thresholds (``worth_applying``, with ``message`` saying why or why not)."""

    status: PlanStatus
    moves: tuple[Move, ...]
    before: Totals
    after: Totals
    solve_seconds: float
    worth_applying: bool
    message: str
    pinned: Mapping[str, str] = field(default_factory=dict)
    """Workloads left where they are, with why (policy, cooldown, a migration running, division)."""
    bound: float | None = None
    """A lower bound on the objective of any plan (move costs included; None without an LP): the LP relaxation's
    optimum over every node the filters accept when pricing finished, else the best Lagrangian bound of its rounds,
    valid but loose while pricing is far from done. ``after.objective`` minus this is how far the plan may be from
    the best."""
