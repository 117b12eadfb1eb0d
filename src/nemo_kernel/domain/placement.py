"""Placement decisions and their explanations."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator

from nemo_kernel.domain.common import Model, Spec

MAX_REGIONS = 512
"""Regions in a latency matrix: its pairs grow with the square of this."""


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


class Detail(StrEnum):
    """How much of a decision's explanation is kept."""

    COMPACT = "compact"
    """``candidates``: the chosen nodes and the best others; ``verdicts``: every cluster, grouped by filter."""
    NODES = "nodes"
    """``candidates``: one verdict per cluster rejected as a whole and per node of every other cluster."""


class VerdictGroup(Model):
    """Clusters (or their nodes) one filter rejected, or that had a feasible node (``filter`` None).

    ``level`` is ``cluster`` when the filter rejected whole clusters, ``node`` when it rejected nodes: then
    ``clusters`` names the clusters those nodes are in and ``nodes`` counts them. A node rejected by several filters
    is counted under each.

    Frozen, its clusters a tuple: the engine keeps a table's groups and hands the same ones to every decision on
    it (thousands of cluster names, which copying per decision cost a tenth of the decision), so none may change.
    """

    model_config = ConfigDict(frozen=True)

    level: Literal["cluster", "node"]
    filter: str | None = Field(default=None, description="the filter; None for the clusters with a feasible node")
    clusters: tuple[str, ...] = Field(description="the clusters, in name order")
    nodes: int = Field(default=0, description="nodes counted (node level, and feasible nodes)")
    example: str = Field(default="", description="the reason given for the first of them")


class PlacementDecision(Model):
    """A decision of the decision engine, stored with its explanation (compact, or every node's verdict)."""

    workload: str
    namespace: str
    version: int
    outcome: PlacementOutcome
    assignments: list[Assignment]
    candidates: list[CandidateVerdict]
    weights: dict[str, float]
    summary: str
    decided_at: datetime
    detail: Detail = Field(default=Detail.NODES, description="how much of the explanation ``candidates`` holds")
    verdicts: list[VerdictGroup] = Field(
        default_factory=list, description="every candidate cluster's verdict, grouped by filter (compact decisions)"
    )


class LatencyMatrix(Spec):
    """Round-trip times between regions, in ms, for the latency criterion and ``placement.max_latency_ms``.

    Symmetric: ``regions[a][b]`` gives a-b and b-a (given twice, the two must agree). A region to itself costs
    ``same_region_ms``; a pair the matrix lacks costs ``unknown_ms``, so an unknown region counts as far away.
    """

    same_region_ms: float = Field(default=1.0, ge=0, le=60_000)
    unknown_ms: float = Field(default=300.0, ge=0, le=60_000)
    regions: dict[
        Annotated[str, Field(min_length=1, max_length=64)],
        dict[Annotated[str, Field(min_length=1, max_length=64)], Annotated[float, Field(ge=0, le=60_000)]],
    ] = Field(default_factory=dict, max_length=MAX_REGIONS)

    @field_validator("regions")
    @classmethod
    def _symmetric(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for a, row in value.items():
            if len(row) > MAX_REGIONS:
                raise ValueError(f"region {a!r} lists more than {MAX_REGIONS} regions")
            for b, ms in row.items():
                other = value.get(b, {}).get(a)
                if other is not None and other != ms:
                    raise ValueError(f"{a} -> {b} is {ms:g} ms but {b} -> {a} is {other:g} ms")
        return value

    def ms(self, a: str, b: str) -> float:
        """The round-trip time between regions ``a`` and ``b``."""
        if a == b:
            return self.regions.get(a, {}).get(b, self.same_region_ms)
        found = self.regions.get(a, {}).get(b)
        if found is None:
            found = self.regions.get(b, {}).get(a)
        return self.unknown_ms if found is None else found
