"""Filters: which clusters and nodes may host a replica, and a human reason when one may not.

Each filter returns ``None`` to let a candidate through, or the reason it is rejected, naming the values
involved so an operator can act on it without reading code. Filters run in the order of the tuples below
and the first rejection wins, so an explanation names the most basic problem first (a cluster that is down
is reported as down, not as being in the wrong country).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from nemo_kernel.domain import (
    RUNTIMES_FOR_ISOLATION,
    DeploymentSpec,
    Division,
    Isolation,
    LatencyMatrix,
    SpreadBy,
    TeeChoice,
    TeeType,
)
from nemo_kernel.orchestrator.decision.candidates import ClusterCandidate, NodeCandidate

# Float sums of fractional CPU requests drift (0.1 * 3 > 0.3); without a tolerance a node filled exactly
# to capacity would reject the last replica.
CPU_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Requirements:
    """What one replica of a workload needs, derived once per decision from its deployment spec."""

    cpu: float
    memory_mib: int
    isolation: Isolation
    runtimes: frozenset[str]
    needs_tee: bool
    tees: frozenset[TeeType]
    tee_source: str
    tiers: frozenset[str]
    regions: frozenset[str]
    countries: frozenset[str]
    clusters: frozenset[str]
    architectures: frozenset[str]
    node_labels: tuple[tuple[str, str], ...]
    users: tuple[tuple[str, float], ...] = ()
    """(region, weight) of the workload's users; empty: latency is no concern."""
    latency: LatencyMatrix = field(default_factory=LatencyMatrix)
    max_latency_ms: float | None = None
    spread: tuple[tuple[SpreadBy, int | None, int | None], ...] = ()
    """(by, min, max) per spread constraint."""
    replicas: int = 1
    """The workload's replicas in all (division shares them out)."""
    division: Division | None = None
    _memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, spec: DeploymentSpec, latency: LatencyMatrix | None = None) -> Requirements:
        """The requirements of one replica of ``spec``; ``latency`` is the matrix its users' latency comes from."""
        where = spec.placement
        return cls(
            cpu=spec.resources.cpu,
            memory_mib=spec.resources.memory_mib,
            isolation=spec.isolation,
            runtimes=RUNTIMES_FOR_ISOLATION[spec.isolation],
            needs_tee=spec.needs_tee,
            tees=spec.accepted_tees,
            tee_source=_tee_source(spec),
            tiers=frozenset(str(t) for t in where.tiers),
            regions=frozenset(where.regions),
            countries=frozenset(where.countries),
            clusters=frozenset(where.clusters),
            architectures=frozenset(where.architectures),
            node_labels=tuple(sorted(where.node_labels.items())),
            users=tuple((u.region, u.weight) for u in where.users),
            latency=latency or _NO_MATRIX,
            max_latency_ms=where.max_latency_ms,
            spread=tuple((c.by, c.min, c.max) for c in where.spread),
            replicas=spec.replicas,
            division=where.division,
        )

    def latency_ms(self, region: str) -> float:
        """The users' weighted mean round-trip time to ``region`` (0.0 without users); memoised per region."""
        found = self._memo.get(("latency", region))
        if found is None:
            if not self.users:
                found = 0.0
            else:
                weighted = sum(weight * self.latency.ms(user, region) for user, weight in self.users)
                found = weighted / sum(weight for _, weight in self.users)
            self._memo["latency", region] = found
        return cast(float, found)

    def derived(self, key: str, inputs: tuple[object, ...], make: Callable[[], _T]) -> _T:
        """A value computed once per decision from ``inputs`` (e.g. the node table and the feasible rows), so that
        criteria sharing an intermediate (carbon is energy times intensity) compute it once.

        The inputs are kept and compared by identity, so a value is never served for other objects.
        """
        found = self._memo.get(key)
        if (
            found is not None
            and len(found[0]) == len(inputs)
            and all(a is b for a, b in zip(found[0], inputs, strict=True))
        ):
            return cast(_T, found[1])
        value = make()
        self._memo[key] = (inputs, value)
        return value


_NO_MATRIX = LatencyMatrix()
"""The matrix of a decision given none; one for all (never changed), as building a model costs a validation."""


def _tee_source(spec: DeploymentSpec) -> str:
    # What to blame in a rejection: the setting that narrowed the TEE types, else the one that asked for a TEE.
    if spec.placement.tee not in (None, TeeChoice.ANY):
        return "placement.tee"
    if spec.isolation is Isolation.CONFIDENTIAL:
        return "confidential isolation"
    return "tee_required" if spec.tee_required else "placement.tee"


def _listed(values: Iterable[str]) -> str:
    return "[" + ", ".join(sorted(values)) + "]"


def _num(value: float) -> str:
    return f"{value:.4g}"


_T = TypeVar("_T")

ClusterFilter = Callable[[ClusterCandidate, Requirements], str | None]
NodeFilter = Callable[[NodeCandidate, Requirements], str | None]


def cluster_health(cluster: ClusterCandidate, req: Requirements) -> str | None:
    """Reject a cluster that stopped answering heartbeats, or that has no nodes to place on."""
    if not cluster.ready:
        return "cluster is not ready"
    if not cluster.nodes:
        return "cluster reports no nodes"
    return None


def cordon(cluster: ClusterCandidate, req: Requirements) -> str | None:
    """Reject a cluster an operator cordoned: it keeps what it runs but takes nothing new."""
    return "cluster is cordoned" if cluster.cordoned else None


def excluded(cluster: ClusterCandidate, req: Requirements) -> str | None:
    """Reject a cluster the caller ruled out for this decision (e.g. replicas are being moved off it)."""
    return None if cluster.excluded_reason is None else f"excluded: {cluster.excluded_reason}"


def cluster_allowlist(cluster: ClusterCandidate, req: Requirements) -> str | None:
    """Reject a cluster not named in ``placement.clusters``, when the workload names any."""
    if req.clusters and cluster.name not in req.clusters:
        return f"cluster {cluster.name} not in {_listed(req.clusters)}"
    return None


def tier(cluster: ClusterCandidate, req: Requirements) -> str | None:
    """Reject a cluster in a tier of the continuum the workload does not accept."""
    if req.tiers and str(cluster.tier) not in req.tiers:
        return f"tier {cluster.tier} not in {_listed(req.tiers)}"
    return None


def region(cluster: ClusterCandidate, req: Requirements) -> str | None:
    """Reject a cluster outside the workload's regions."""
    if req.regions and cluster.region not in req.regions:
        return f"region {cluster.region} not in {_listed(req.regions)}"
    return None


def data_residency(cluster: ClusterCandidate, req: Requirements) -> str | None:
    """Reject a cluster in a country where the workload's data may not reside."""
    if req.countries and cluster.country not in req.countries:
        return f"country {cluster.country} not in {_listed(req.countries)} (data residency)"
    return None


def latency(cluster: ClusterCandidate, req: Requirements) -> str | None:
    """Reject a cluster farther from the workload's users than ``placement.max_latency_ms``."""
    if req.max_latency_ms is not None and (ms := req.latency_ms(cluster.region)) > req.max_latency_ms:
        limit = _num(req.max_latency_ms)
        return f"users' mean latency to region {cluster.region} is {_num(ms)} ms > max_latency_ms {limit}"
    return None


def node_health(node: NodeCandidate, req: Requirements) -> str | None:
    """Reject a node that is not ready."""
    return None if node.ready else "node is not ready"


def architecture(node: NodeCandidate, req: Requirements) -> str | None:
    """Reject a node whose CPU architecture the workload does not accept."""
    if req.architectures and node.architecture not in req.architectures:
        return f"architecture {node.architecture} not in {_listed(req.architectures)}"
    return None


def choose_runtime(node: NodeCandidate, req: Requirements) -> str | None:
    """The runtime the workload would use on ``node``: the node's first listed runtime giving its isolation.

    The node's order wins over ours because it is the operator's stated preference for that node.
    """
    for name in node.runtimes:
        if name in req.runtimes:
            return name
    return None


def runtime(node: NodeCandidate, req: Requirements) -> str | None:
    """Reject a node with no runtime providing the workload's isolation level."""
    if choose_runtime(node, req) is None:
        return f"no {req.isolation} runtime: node offers {_listed(node.runtimes)}, needs one of {_listed(req.runtimes)}"
    return None


def tee(node: NodeCandidate, req: Requirements) -> str | None:
    """Reject a node without a trusted execution environment when the workload needs one."""
    if req.needs_tee and node.tee is TeeType.NONE:
        return f"node has no TEE ({req.tee_source} needs {_tees(req.tees)})"
    if req.needs_tee and node.tee not in req.tees:
        return f"node's TEE is {node.tee} ({req.tee_source} needs {_tees(req.tees)})"
    return None


def _tees(tees: frozenset[TeeType]) -> str:
    names = sorted(tees)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def node_labels(node: NodeCandidate, req: Requirements) -> str | None:
    """Reject a node missing one of the labels the workload selects on."""
    for key, wanted in req.node_labels:
        actual = node.labels.get(key)
        if actual is None:
            return f"label {key} missing (wants {key}={wanted})"
        if actual != wanted:
            return f"label {key}={actual} (wants {key}={wanted})"
    return None


def fits(free_cpu: float, free_memory_mib: float, req: Requirements) -> bool:
    """Whether one more replica fits in the given free capacity."""
    return free_cpu + CPU_TOLERANCE >= req.cpu and free_memory_mib >= req.memory_mib


def capacity(node: NodeCandidate, req: Requirements) -> str | None:
    """Reject a node whose free CPU or memory is below one replica's request."""
    free_cpu = node.cpu - node.allocated_cpu
    free_memory = node.memory_mib - node.allocated_memory_mib
    if fits(free_cpu, free_memory, req):
        return None
    return (
        f"needs {_num(req.cpu)} cpu, {req.memory_mib} MiB; "
        f"free {_num(max(free_cpu, 0.0))} cpu, {max(free_memory, 0)} MiB"
    )


def admissible_runtime(node: NodeCandidate, req: Requirements) -> str | None:
    """The runtime ``node`` would use if it passes every node filter, else ``None``.

    The same rules as ``NODE_FILTERS`` without building reasons: the engine runs this on every node of every
    admitted cluster and formats a reason only for the nodes it rejects. A test keeps the two in agreement.
    """
    if not node.ready or (req.needs_tee and node.tee not in req.tees):
        return None
    if req.architectures and node.architecture not in req.architectures:
        return None
    if (
        node.cpu - node.allocated_cpu + CPU_TOLERANCE < req.cpu
        or node.memory_mib - node.allocated_memory_mib < req.memory_mib
    ):
        return None
    if req.node_labels:
        labels = node.labels
        for key, wanted in req.node_labels:
            if labels.get(key) != wanted:
                return None
    return choose_runtime(node, req)


CLUSTER_FILTERS: tuple[tuple[str, ClusterFilter], ...] = (
    ("cluster-health", cluster_health),
    ("cordon", cordon),
    ("excluded", excluded),
    ("cluster-allowlist", cluster_allowlist),
    ("tier", tier),
    ("region", region),
    ("data-residency", data_residency),
    ("latency", latency),
)
"""Cluster-level filters, in the order they run: a rejection here yields one verdict for the whole cluster."""

NODE_FILTERS: tuple[tuple[str, NodeFilter], ...] = (
    ("node-health", node_health),
    ("architecture", architecture),
    ("runtime", runtime),
    ("tee", tee),
    ("node-labels", node_labels),
    ("capacity", capacity),
)
"""Node-level filters, in the order they run, for nodes of clusters that passed every cluster filter."""


_C = TypeVar("_C", ClusterCandidate, NodeCandidate)


def first_rejection(
    filters: tuple[tuple[str, Callable[[_C, Requirements], str | None]], ...], candidate: _C, req: Requirements
) -> tuple[str, str] | None:
    """The first filter rejecting ``candidate`` and its reason, or ``None`` when every filter lets it through."""
    for name, check in filters:
        reason = check(candidate, req)
        if reason is not None:
            return name, reason
    return None


def all_rejections(
    filters: tuple[tuple[str, Callable[[_C, Requirements], str | None]], ...], candidate: _C, req: Requirements
) -> list[tuple[str, str]]:
    """Every filter rejecting ``candidate`` with its reason, in filter order (empty when all let it through).

    Used for nodes, so an explanation names everything an operator would have to change on a node, not only
    the first problem.
    """
    return [(name, reason) for name, check in filters if (reason := check(candidate, req)) is not None]
