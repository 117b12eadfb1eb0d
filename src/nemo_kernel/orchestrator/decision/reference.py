"""The reference decision engine: the rules of a decision written plainly, one Python object at a time.

This is the engine as it was before the vectorised one (``decide.DecisionEngine``), kept as the definition of a
correct decision: tests check that the fast engine decides exactly as this one does on seeded random inventories,
and the benchmark runs it as the baseline. It calls each criterion's scalar ``raw()``/``score()``.

A decision runs in three steps: ``_verdicts`` (the filters, per cluster and node), ``_rank`` (each criterion's
scores, normalised, weighted into a ``total``) and ``_assign`` (replicas onto the best nodes, re-ranking the node
that took one).

Ranking. Replicas are placed one at a time on the best node, then that node's state is updated and it competes
again for the next replica. "Best" is the smallest key

    (replicas of this workload already on the node, -total, cluster name, node name)

so spreading comes first: a node already hosting k replicas of the workload is chosen only when no feasible
node hosts fewer. It is a ranking key rather than a weighted penalty because no weight can promise "never
double up while a free node is left" without depending on how far apart the other scores happen to be. Among
nodes with equal spread the weighted ``total`` decides, and names break exact ties so a decision over the same
inventory is always the same.

Cost. Filtering and scoring are linear in the number of nodes; each placement then costs O(log n) on a heap,
since only the node that took the replica changes (criteria such as cost and carbon are normalised once per
decision; load criteria such as balance, and spread, depend only on the node itself). Result models are built once
at the end, validated in one call.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nemo_kernel.domain import DeploymentSpec, LatencyMatrix, PlacementDecision, PlacementOutcome, SpreadBy, utcnow
from nemo_kernel.orchestrator.decision.candidates import ClusterCandidate, NodeCandidate
from nemo_kernel.orchestrator.decision.criteria import (
    DEFAULT_CRITERIA,
    AnyCriterion,
    Criterion,
    LoadCriterion,
    NodeLoad,
)
from nemo_kernel.orchestrator.decision.explain import summarise
from nemo_kernel.orchestrator.decision.filters import (
    CLUSTER_FILTERS,
    CPU_TOLERANCE,
    NODE_FILTERS,
    Requirements,
    admissible_runtime,
    all_rejections,
    choose_runtime,
    first_rejection,
    fits,
)
from nemo_kernel.orchestrator.decision.scoring import (
    checked_weights,
    default_weights,
    division_targets,
    normalised,
    spread,
    spread_group,
    workload_weights,
)

_Feasible = tuple[ClusterCandidate, NodeCandidate, str]  # a node that passed every filter, with its runtime
_HeapEntry = tuple[int, float, str, str, int]  # (replicas hosted, -total, cluster, node, index into feasible)


@dataclass(slots=True)
class _Verdicts:
    """What the filters concluded: the explanation's rows (plain dicts, validated once at the end) and the survivors."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    feasible: list[_Feasible] = field(default_factory=list)
    feasible_rows: list[int] = field(default_factory=list)  # where each feasible node's row is, to keep name order
    rejections: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    clusters: int = 0
    clusters_seen: list[ClusterCandidate] = field(default_factory=list)


@dataclass(slots=True)
class _Ranking:
    """The feasible nodes ranked for the first replica, and what ``_assign`` needs to re-rank one."""

    weights: Mapping[str, float]
    total_weight: float
    fixed: list[float]  # per feasible node: the weighted sum of the criteria that do not depend on load
    load_weights: list[float]  # the weights of the load criteria, in their order
    loads: list[NodeLoad]  # per feasible node
    heap: list[_HeapEntry]

    def totals(self, live: Sequence[Sequence[float]]) -> list[float]:
        """``total`` of every node at once, summed in the same order, given a column of scores per load criterion."""
        if self.total_weight <= 0.0:
            return [0.0] * len(self.fixed)
        weighted = self.fixed
        for weight, scores in zip(self.load_weights, live, strict=True):
            weighted = [acc + weight * score for acc, score in zip(weighted, scores, strict=True)]
        return [acc / self.total_weight for acc in weighted]

    def total(self, index: int, live: Sequence[float]) -> float:
        """The weighted mean of a node's scores: its fixed part plus its load criteria's scores as they stand."""
        if self.total_weight <= 0.0:
            return 0.0  # only a workload can weigh everything 0: no preference
        weighted = self.fixed[index]
        for weight, score in zip(self.load_weights, live, strict=True):
            weighted += weight * score
        return weighted / self.total_weight


class ReferenceEngine:
    """Decides where the replicas of a workload run, and records why.

    Pure: no I/O, no shared state between calls; the caller supplies the inventory and stores the result.
    ``criteria`` are the plugins nodes are scored on (:data:`DEFAULT_CRITERIA`); ``weights`` maps their names to
    weights from 0 to 1000 (a missing one weighs 0; ``None``: each weighs ``DEFAULT_WEIGHT``); a workload's
    ``placement.weights`` override them for its decisions. Explanations list the scores of the criteria
    ``raw()`` in their order, then those ``score()``-ed by load, then spread. ``clock`` stamps ``decided_at``, so
    tests can pin time.
    """

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        *,
        criteria: Sequence[AnyCriterion] = DEFAULT_CRITERIA,
        latency: LatencyMatrix | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        names = [c.name for c in criteria]
        if len(set(names)) != len(names):
            raise ValueError(f"criteria must have different names, got {names}")
        for criterion in criteria:
            if isinstance(criterion, Criterion) == isinstance(criterion, LoadCriterion):
                raise TypeError(f"criterion {criterion.name!r} must implement raw() or score(), and only one")
        self._fixed = tuple(c for c in criteria if isinstance(c, Criterion))
        self._by_load = tuple(c for c in criteria if isinstance(c, LoadCriterion))
        self._weights = checked_weights(default_weights(names) if weights is None else weights, names)
        self._latency = latency
        self._clock = clock

    @property
    def weights(self) -> dict[str, float]:
        """The weights in use unless a workload overrides them, every criterion present."""
        return dict(self._weights)

    def decide(
        self,
        namespace: str,
        name: str,
        version: int,
        spec: DeploymentSpec,
        replicas_needed: Sequence[int],
        candidates: Sequence[ClusterCandidate],
    ) -> PlacementDecision:
        """Place the replicas with the given indexes on the candidate clusters' nodes.

        Every candidate cluster appears in the explanation: one verdict for a cluster rejected as a whole,
        otherwise one verdict per node. The outcome is Placed when every index got a node, Partial when only
        some did (the rest wait for capacity), Pending when nothing fits. The weights are the engine's with the
        workload's ``placement.weights`` over them, and are stored with the decision; a workload that weighs every
        criterion 0 has no preference (every total is 0, spreading and names decide). Raises ValueError if two
        candidates share a cluster name, since assignments name clusters and would become ambiguous, or if the
        workload weighs a criterion the engine does not have.
        """
        req = Requirements.of(spec, self._latency)
        found = self._verdicts(candidates, req)
        ranking = self._rank(found, req, workload_weights(self._weights, spec))
        assignments, best_total = self._assign(found, ranking, req, replicas_needed)

        needed, placed = len(replicas_needed), len(assignments)
        summary = summarise(
            needed=needed,
            placed_on=_explain_placements(found, ranking),
            best_score=best_total,
            rejections=found.rejections,
            feasible_nodes=len(found.feasible),
            clusters=found.clusters,
        )
        return PlacementDecision.model_validate(
            {
                "workload": name,
                "namespace": namespace,
                "version": version,
                "outcome": _outcome(needed, placed),
                "assignments": assignments,
                "candidates": found.rows,
                "weights": dict(ranking.weights),
                "summary": summary,
                "decided_at": self._clock(),
            }
        )

    def _verdicts(self, candidates: Sequence[ClusterCandidate], req: Requirements) -> _Verdicts:
        """Run the filters on every cluster, then on every node of the clusters that pass (all in name order)."""
        found = _Verdicts()
        rows, seen = found.rows, set[str]()
        for cluster in sorted(candidates, key=_name):
            if cluster.name in seen:
                raise ValueError(f"cluster {cluster.name!r} appears twice among the candidates")
            seen.add(cluster.name)
            found.clusters_seen.append(cluster)
            rejected = first_rejection(CLUSTER_FILTERS, cluster, req)
            if rejected is not None:
                found.rejections["cluster", rejected[0]].append(cluster.name)
                rows.append({"cluster": cluster.name, "rejected_by": rejected[0], "reason": rejected[1]})
                continue
            for node in sorted(cluster.nodes, key=_name):
                runtime = admissible_runtime(node, req)
                if runtime is not None:
                    found.feasible.append((cluster, node, runtime))
                    found.feasible_rows.append(len(rows))
                    rows.append(_unchosen_row(cluster.name, node.name, runtime))
                    continue
                rejections = all_rejections(NODE_FILTERS, node, req)
                assert rejections, "admissible_runtime and NODE_FILTERS disagree"
                for filter_name, _ in rejections:
                    found.rejections["node", filter_name].append(f"{cluster.name}/{node.name}")
                rows.append(
                    {
                        "cluster": cluster.name,
                        "node": node.name,
                        "rejected_by": ", ".join(filter_name for filter_name, _ in rejections),
                        "reason": "; ".join(reason for _, reason in rejections),
                        "runtime": choose_runtime(node, req),
                    }
                )
        found.clusters = len(seen)
        return found

    def _rank(self, found: _Verdicts, req: Requirements, weights: Mapping[str, float]) -> _Ranking:
        """Score every feasible node on every criterion and rank them for the first replica.

        Column by column (one criterion over every node), which is what normalising needs and faster than per node.
        """
        feasible = found.feasible
        columns = {
            c.name: normalised([c.raw(cl, node, req) for cl, node, _ in feasible], lower_is_better=c.lower_is_better)
            for c in self._fixed
        }
        fixed = [0.0] * len(feasible)
        for name, scores in columns.items():
            weight = weights[name]
            fixed = [acc + weight * score for acc, score in zip(fixed, scores, strict=True)]
        loads = [
            NodeLoad(n.allocated_cpu, n.allocated_memory_mib, n.hosted_replicas_of_workload) for _, n, _ in feasible
        ]
        ranking = _Ranking(weights, sum(weights.values()), fixed, [weights[c.name] for c in self._by_load], loads, [])
        for c in self._by_load:
            columns[c.name] = [
                c.score(cl, node, load, req) for (cl, node, _), load in zip(feasible, loads, strict=True)
            ]
        totals = ranking.totals([columns[c.name] for c in self._by_load])
        ranking.heap = [
            (load.hosted, -total, cluster.name, node.name, index)
            for index, ((cluster, node, _), load, total) in enumerate(zip(feasible, loads, totals, strict=True))
        ]
        heapq.heapify(ranking.heap)
        # Scores shown are those for the first replica, as the inventory stood before this decision,
        # so every node in the explanation is compared at the same moment.
        rows = found.rows
        for index, (row_index, load, total) in enumerate(zip(found.feasible_rows, loads, totals, strict=True)):
            row = rows[row_index]
            row["scores"] = shown = {name: column[index] for name, column in columns.items()}
            shown["spread"] = spread(load.hosted)
            row["total"] = total
        return ranking

    def _assign(
        self, found: _Verdicts, ranking: _Ranking, req: Requirements, replicas_needed: Sequence[int]
    ) -> tuple[list[dict[str, Any]], float | None]:
        """Place each replica on the best node, then re-rank that node; the assignments and the first pick's total."""
        if req.spread or req.division:
            return self._assign_spread(found, ranking, req, replicas_needed)
        heap = ranking.heap
        assignments: list[dict[str, Any]] = []
        best_total: float | None = None
        for replica in replicas_needed:
            if not heap:
                break
            _, negative_total, _, _, index = heapq.heappop(heap)
            if best_total is None:
                best_total = -negative_total
            cluster, node, _ = found.feasible[index]
            assignments.append({"index": replica, "cluster": cluster.name, "node": node.name})
            load = ranking.loads[index]
            load.placed += 1
            load.hosted += 1
            load.used_cpu += req.cpu
            load.used_memory_mib += req.memory_mib
            # Only this node changed, so only it is re-ranked: O(log n) per replica, not a rescan.
            if fits(node.cpu - load.used_cpu, node.memory_mib - load.used_memory_mib, req):
                total = ranking.total(index, [c.score(cluster, node, load, req) for c in self._by_load])
                heapq.heappush(heap, (load.hosted, -total, cluster.name, node.name, index))
        return assignments, best_total

    def _assign_spread(
        self, found: _Verdicts, ranking: _Ranking, req: Requirements, replicas_needed: Sequence[int]
    ) -> tuple[list[dict[str, Any]], float | None]:
        """``_assign`` under ``placement.spread`` or ``placement.division``: a node whose group is at its max is
        skipped; nodes of a group below its min come first, then those of a cluster below its division share, so
        the key is (below a min ? 0 : 1, below its share ? 0 : 1, hosted, -total, cluster, node). Groups fill as
        replicas land, so this rescans the live nodes per replica instead of keeping a heap."""
        counts = _spread_counts(found.clusters_seen, req)
        per_cluster = {c.name: sum(n.hosted_replicas_of_workload for n in c.nodes) for c in found.clusters_seen}
        rooms: dict[str, int] = {}
        for cluster, node, _ in found.feasible:
            room = math.floor(
                min(
                    (node.cpu - node.allocated_cpu + CPU_TOLERANCE) / req.cpu,
                    (node.memory_mib - node.allocated_memory_mib) / req.memory_mib,
                )
            )
            rooms[cluster.name] = rooms.get(cluster.name, 0) + room
        targets = division_targets(req, list(rooms.items()))
        live = {index: -negative for _, negative, _, _, index in ranking.heap}
        assignments: list[dict[str, Any]] = []
        best_total: float | None = None
        for replica in replicas_needed:
            keys = []
            for index, total in live.items():
                cluster, node, _ = found.feasible[index]
                groups = [(by, spread_group(cluster, by), low, high) for by, low, high in req.spread]
                if any(high is not None and counts[by][g] >= high for by, g, _, high in groups):
                    continue
                below = any(low is not None and counts[by][g] < low for by, g, low, _ in groups)
                short = per_cluster[cluster.name] < targets.get(cluster.name, 0)
                keys.append(
                    (
                        0 if below else 1,
                        0 if short else 1,
                        ranking.loads[index].hosted,
                        -total,
                        cluster.name,
                        node.name,
                        index,
                    )
                )
            if not keys:
                break
            *_, negative_total, _, _, index = min(keys)
            if best_total is None:
                best_total = -negative_total
            cluster, node, _ = found.feasible[index]
            assignments.append({"index": replica, "cluster": cluster.name, "node": node.name})
            for by, _, _ in req.spread:
                counts[by][spread_group(cluster, by)] += 1
            per_cluster[cluster.name] += 1
            load = ranking.loads[index]
            load.placed += 1
            load.hosted += 1
            load.used_cpu += req.cpu
            load.used_memory_mib += req.memory_mib
            if fits(node.cpu - load.used_cpu, node.memory_mib - load.used_memory_mib, req):
                live[index] = ranking.total(index, [c.score(cluster, node, load, req) for c in self._by_load])
            else:
                del live[index]
        return assignments, best_total


def _spread_counts(clusters: Sequence[ClusterCandidate], req: Requirements) -> dict[SpreadBy, dict[str, int]]:
    """Replicas of the workload already in each group of each spread constraint, on any candidate node."""
    counts: dict[SpreadBy, dict[str, int]] = {by: defaultdict(int) for by, _, _ in req.spread}
    for cluster in clusters:
        hosted = sum(node.hosted_replicas_of_workload for node in cluster.nodes)
        for by, _, _ in req.spread:
            counts[by][spread_group(cluster, by)] += hosted
    return counts


def _explain_placements(found: _Verdicts, ranking: _Ranking) -> list[tuple[str, str, int]]:
    """Say in each chosen node's row how many replicas it took; (cluster, node, replicas) for each, in name order."""
    placed_on: list[tuple[str, str, int]] = []
    for index, load in enumerate(ranking.loads):
        if load.placed:
            cluster, node, runtime = found.feasible[index]
            placed_on.append((cluster.name, node.name, load.placed))
            row = found.rows[found.feasible_rows[index]]
            row["replicas"] = load.placed
            row["reason"] = f"{load.placed} {'replica' if load.placed == 1 else 'replicas'} placed, runtime {runtime}"
    return placed_on


def _outcome(needed: int, placed: int) -> PlacementOutcome:
    if placed == needed:
        return PlacementOutcome.PLACED
    return PlacementOutcome.PARTIAL if placed else PlacementOutcome.PENDING


def _name(candidate: ClusterCandidate | NodeCandidate) -> str:
    return candidate.name


def _unchosen_row(cluster: str, node: str, runtime: str) -> dict[str, Any]:
    return {"cluster": cluster, "node": node, "runtime": runtime, "reason": f"feasible, runtime {runtime}; not chosen"}
