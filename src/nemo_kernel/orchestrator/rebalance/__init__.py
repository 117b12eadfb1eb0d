"""The global rebalancer: an integer program over the running replicas (``solve``), its inputs and plan
(``problem``). Pure; the command that reads the store and applies a plan is ``orchestrator.commands.rebalance``."""

from nemo_kernel.orchestrator.rebalance.problem import (
    Move,
    Plan,
    PlanStatus,
    RebalanceLimits,
    RunningReplica,
    Totals,
    WorkloadPlacement,
)
from nemo_kernel.orchestrator.rebalance.solve import feasible_rows, plan_rebalance

__all__ = [
    "Move",
    "Plan",
    "PlanStatus",
    "RebalanceLimits",
    "RunningReplica",
    "Totals",
    "WorkloadPlacement",
    "feasible_rows",
    "plan_rebalance",
]
