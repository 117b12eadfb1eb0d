"""Placement decisions and their explanations."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from nemo_kernel.domain.common import Model


class PlacementOutcome(StrEnum):
    """Whether every replica found a node."""

    PLACED = "Placed"
    PARTIAL = "Partial"  # some replicas placed, the rest wait for capacity
    PENDING = "Pending"  # fits nowhere


class CandidateVerdict(Model):
    """What the decision engine concluded about one candidate (a cluster, or a node in it).

    ``node`` is None when a cluster-level filter (tier, region, country, cordon, health) rejected the
    whole cluster, so explanations stay one line per cluster for clusters that never qualified.
    """

    cluster: str
    node: str | None = None
    rejected_by: str | None = Field(default=None, description="name of the filter that rejected it")
    reason: str = ""
    scores: dict[str, float] = Field(default_factory=dict, description="score per criterion, each in [0, 1]")
    total: float | None = None
    replicas: int = Field(default=0, description="replicas of this decision placed here")
    runtime: str | None = Field(
        default=None, description="runtime class the workload would run with on this node (node verdicts only)"
    )


class Assignment(Model):
    """A replica index bound to a node."""

    index: int
    cluster: str
    node: str


class PlacementDecision(Model):
    """A decision of the decision engine, stored with its full explanation."""

    workload: str
    namespace: str
    version: int
    outcome: PlacementOutcome
    assignments: list[Assignment]
    candidates: list[CandidateVerdict]
    weights: dict[str, float]
    summary: str
    decided_at: datetime
