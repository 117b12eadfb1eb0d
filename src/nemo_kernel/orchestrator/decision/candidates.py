"""What the decision engine decides over: clusters and nodes as the resource manager sees them right now.

These are plain frozen dataclasses, not pydantic models: a decision reads ~5,000 of them and must not pay for
validation. The resource manager builds them from already-validated domain models (see the ``from_*`` helpers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nemo_kernel.domain import (
    ClusterPhase,
    ClusterSpec,
    ClusterStatus,
    NodeSpec,
    NodeStatus,
    PowerModel,
    Prices,
    TeeType,
    Tier,
)


@dataclass(frozen=True, slots=True)
class NodeCandidate:
    """A node that might host replicas, with what is already placed on it."""

    name: str
    cpu: float
    memory_mib: int
    architecture: str = "amd64"
    runtimes: Sequence[str] = ("runc",)
    tee: TeeType = TeeType.NONE
    labels: Mapping[str, str] = field(default_factory=dict)
    power: PowerModel = field(default_factory=PowerModel)
    ready: bool = True
    allocated_cpu: float = 0.0
    allocated_memory_mib: int = 0
    hosted_replicas_of_workload: int = 0
    """Replicas of the workload being decided that already run here; the engine spreads away from them."""

    @classmethod
    def from_spec(
        cls,
        spec: NodeSpec,
        *,
        ready: bool = True,
        allocated_cpu: float = 0.0,
        allocated_memory_mib: int = 0,
        hosted_replicas_of_workload: int = 0,
    ) -> NodeCandidate:
        """A candidate from a registered node spec plus its current accounting."""
        return cls(
            name=spec.name,
            cpu=spec.cpu,
            memory_mib=spec.memory_mib,
            architecture=spec.architecture,
            runtimes=tuple(spec.runtimes),
            tee=spec.tee,
            labels=spec.labels,
            power=spec.power,
            ready=ready,
            allocated_cpu=allocated_cpu,
            allocated_memory_mib=allocated_memory_mib,
            hosted_replicas_of_workload=hosted_replicas_of_workload,
        )

    @classmethod
    def from_status(cls, status: NodeStatus, *, hosted_replicas_of_workload: int = 0) -> NodeCandidate:
        """A candidate from the resource manager's view of a node."""
        return cls.from_spec(
            status.spec,
            ready=status.ready,
            allocated_cpu=status.allocated_cpu,
            allocated_memory_mib=status.allocated_memory_mib,
            hosted_replicas_of_workload=hosted_replicas_of_workload,
        )


@dataclass(frozen=True, slots=True)
class ClusterCandidate:
    """A cluster that might host replicas: where it is, what it costs, whether it takes work, and its nodes."""

    name: str
    tier: Tier
    region: str
    country: str
    labels: Mapping[str, str] = field(default_factory=dict)
    prices: Prices = field(default_factory=Prices)
    carbon_intensity: float = 300.0
    """Grid carbon intensity, gCO2/kWh."""
    ready: bool = True
    cordoned: bool = False
    excluded_reason: str | None = None
    """Set when the caller rules the cluster out for this decision, e.g. the engine is moving replicas off it."""
    nodes: Sequence[NodeCandidate] = ()

    @classmethod
    def from_spec(
        cls,
        spec: ClusterSpec,
        *,
        ready: bool = True,
        cordoned: bool = False,
        excluded_reason: str | None = None,
        nodes: Sequence[NodeCandidate] | None = None,
    ) -> ClusterCandidate:
        """A candidate from a registered cluster spec; ``nodes`` defaults to its spec nodes, empty and ready."""
        return cls(
            name=spec.name,
            tier=spec.tier,
            region=spec.region,
            country=spec.country,
            labels=spec.labels,
            prices=spec.prices,
            carbon_intensity=spec.carbon_intensity,
            ready=ready,
            cordoned=cordoned,
            excluded_reason=excluded_reason,
            nodes=tuple(NodeCandidate.from_spec(n) for n in spec.nodes) if nodes is None else nodes,
        )

    @classmethod
    def from_status(
        cls,
        status: ClusterStatus,
        nodes: Sequence[NodeCandidate],
        *,
        excluded_reason: str | None = None,
    ) -> ClusterCandidate:
        """A candidate from the resource manager's view of a cluster and of its nodes."""
        if status.spec is None:  # stored by an older NEMO and refused now: the cluster is not managed
            raise ValueError(f"cluster {status.name} is no candidate: {status.message}")
        return cls.from_spec(
            status.spec,
            ready=status.phase is ClusterPhase.READY,
            cordoned=status.cordoned,
            excluded_reason=excluded_reason,
            nodes=nodes,
        )
