"""Placement criteria: what the decision engine scores feasible nodes on, each a plugin in its own module.

Adding a criterion: a module here with a class implementing :class:`Criterion` (or :class:`LoadCriterion`), and for
speed its vectorised form (:class:`VectorCriterion`, :class:`VectorLoadCriterion`), one
line in :data:`DEFAULT_CRITERIA`, and its weight's name in ``domain.PlacementWeights`` (what ``NEMO_WEIGHTS`` and a
workload's ``placement.weights`` may name). A test keeps the registry and the domain's names equal.
"""

from nemo_kernel.orchestrator.decision.criteria.balance import Balance
from nemo_kernel.orchestrator.decision.criteria.base import (
    AnyCriterion,
    Criterion,
    LoadColumns,
    LoadCriterion,
    NodeLoad,
    VectorCriterion,
    VectorLoadCriterion,
)
from nemo_kernel.orchestrator.decision.criteria.carbon import CarbonPerHour
from nemo_kernel.orchestrator.decision.criteria.cost import CostPerHour
from nemo_kernel.orchestrator.decision.criteria.energy import EnergyWatts
from nemo_kernel.orchestrator.decision.criteria.latency import LatencyMs

DEFAULT_CRITERIA: tuple[AnyCriterion, ...] = (
    CostPerHour(),
    CarbonPerHour(),
    Balance(),
    LatencyMs(),
    EnergyWatts(),
)
"""The criteria of every decision, in the order their scores are reported (and summed)."""

__all__ = [
    "DEFAULT_CRITERIA",
    "AnyCriterion",
    "Balance",
    "CarbonPerHour",
    "CostPerHour",
    "Criterion",
    "EnergyWatts",
    "LatencyMs",
    "LoadColumns",
    "LoadCriterion",
    "NodeLoad",
    "VectorCriterion",
    "VectorLoadCriterion",
]
