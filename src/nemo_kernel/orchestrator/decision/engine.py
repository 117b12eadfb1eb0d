"""The decision engine: filter every cluster and node, score the survivors, place replicas greedily, explain.

Ranking. Replicas are placed one at a time on the best node, then that node's state is updated and it competes
again for the next replica. "Best" is the smallest key

    (replicas of this workload already on the node, -total, cluster name, node name)

so spreading comes first: a node already hosting k replicas of the workload is chosen only when no feasible
node hosts fewer. It is a ranking key rather than a weighted penalty because no weight can promise "never
double up while a free node is left" without depending on how far apart the other scores happen to be. Among
nodes with equal spread the weighted ``total`` decides, and names break exact ties so a decision over the same
inventory is always the same.

Cost. Filtering and scoring are linear in the number of nodes; each placement then costs O(log n) on a heap,
since only the node that took the replica changes (cost and carbon are normalised once per decision, balance
and spread depend only on the node itself). Result models are built once at the end, validated in one call.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nemo_kernel.domain import DeploymentSpec, PlacementDecision, PlacementOutcome, utcnow
from nemo_kernel.orchestrator.decision.explain import summarise
from nemo_kernel.orchestrator.decision.filters import (
    CLUSTER_FILTERS,
    NODE_FILTERS,
    Requirements,
    admissible_runtime,
    all_rejections,
    choose_runtime,
    first_rejection,
    fits,
)
from nemo_kernel.orchestrator.decision.inventory import ClusterCandidate, NodeCandidate
from nemo_kernel.orchestrator.decision.scoring import (
    CRITERIA,
    DEFAULT_WEIGHTS,
    balance,
    checked_weights,
    normalised_lower_is_better,
    replica_carbon_g_hour,
    replica_cost_eur_hour,
    spread,
)


@dataclass(slots=True)
class _Load:
    """What a node holds while this decision places replicas on it (only for nodes that took one)."""

    used_cpu: float
    used_memory_mib: float
    hosted: int
    placed: int = 0


class DecisionEngine:
    """Decides where the replicas of a workload run, and records why.

    Pure: no I/O, no shared state between calls; the caller supplies the inventory and stores the result.
    ``weights`` maps the criteria ``cost``, ``carbon`` and ``balance`` to non-negative weights (a missing one
    weighs 0); ``clock`` stamps ``decided_at`` and is there so tests can pin time.
    """

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._weights = checked_weights(DEFAULT_WEIGHTS if weights is None else weights)
        self._clock = clock

    @property
    def weights(self) -> dict[str, float]:
        """The weights in use, every criterion present."""
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
        some did (the rest wait for capacity), Pending when nothing fits. Raises ValueError if two candidates
        share a cluster name, since assignments name clusters and would become ambiguous.
        """
        req = Requirements.of(spec)
        w_cost, w_carbon, w_balance = (self._weights[c] for c in CRITERIA)
        w_sum = w_cost + w_carbon + w_balance
        rows: list[dict[str, Any]] = []  # verdicts as plain dicts; validated once, at the end
        feasible: list[tuple[ClusterCandidate, NodeCandidate, str]] = []
        feasible_rows: list[int] = []  # where each feasible node's verdict goes in ``rows``, to keep name order
        raw_costs: list[float] = []
        raw_carbons: list[float] = []
        rejections: dict[tuple[str, str], list[str]] = defaultdict(list)  # (level, filter) -> names rejected

        seen: set[str] = set()
        for cluster in sorted(candidates, key=_name):
            if cluster.name in seen:
                raise ValueError(f"cluster {cluster.name!r} appears twice among the candidates")
            seen.add(cluster.name)
            rejected = first_rejection(CLUSTER_FILTERS, cluster, req)
            if rejected is not None:
                rejections["cluster", rejected[0]].append(cluster.name)
                rows.append({"cluster": cluster.name, "rejected_by": rejected[0], "reason": rejected[1]})
                continue
            cost = replica_cost_eur_hour(cluster, req)  # prices are per cluster: once, not per node
            for node in sorted(cluster.nodes, key=_name):
                runtime = admissible_runtime(node, req)
                if runtime is not None:
                    feasible.append((cluster, node, runtime))
                    feasible_rows.append(len(rows))
                    raw_costs.append(cost)
                    raw_carbons.append(replica_carbon_g_hour(cluster, node, req))
                    rows.append(_unchosen_row(cluster.name, node.name, runtime))
                    continue
                found = all_rejections(NODE_FILTERS, node, req)
                assert found, "admissible_runtime and NODE_FILTERS disagree"
                for filter_name, _ in found:
                    rejections["node", filter_name].append(f"{cluster.name}/{node.name}")
                rows.append(
                    {
                        "cluster": cluster.name,
                        "node": node.name,
                        "rejected_by": ", ".join(filter_name for filter_name, _ in found),
                        "reason": "; ".join(reason for _, reason in found),
                        "runtime": choose_runtime(node, req),
                    }
                )

        costs = normalised_lower_is_better(raw_costs)
        carbons = normalised_lower_is_better(raw_carbons)
        weighted = [(w_cost * cost + w_carbon * carbon) for cost, carbon in zip(costs, carbons, strict=True)]
        heap: list[tuple[int, float, str, str, int]] = []
        for index, (cluster, node, _) in enumerate(feasible):
            after = balance(node, node.allocated_cpu + req.cpu, node.allocated_memory_mib + req.memory_mib)
            total = (weighted[index] + w_balance * after) / w_sum
            hosted = node.hosted_replicas_of_workload
            heap.append((hosted, -total, cluster.name, node.name, index))
            # Scores shown are those for the first replica, as the inventory stood before this decision,
            # so every node in the explanation is compared at the same moment.
            row = rows[feasible_rows[index]]
            row["scores"] = {"cost": costs[index], "carbon": carbons[index], "balance": after, "spread": spread(hosted)}
            row["total"] = total
        heapq.heapify(heap)

        assignments: list[dict[str, Any]] = []
        loads: dict[int, _Load] = {}
        winner_total: float | None = None
        for replica in replicas_needed:
            if not heap:
                break
            _, negative_total, _, _, index = heapq.heappop(heap)
            if winner_total is None:
                winner_total = -negative_total
            cluster, node, runtime = feasible[index]
            assignments.append({"index": replica, "cluster": cluster.name, "node": node.name})
            load = loads.get(index)
            if load is None:
                load = loads[index] = _Load(
                    node.allocated_cpu, node.allocated_memory_mib, node.hosted_replicas_of_workload
                )
            load.placed += 1
            load.hosted += 1
            load.used_cpu += req.cpu
            load.used_memory_mib += req.memory_mib
            # Only this node changed, so only it is re-ranked: O(log n) per replica, not a rescan.
            if fits(node.cpu - load.used_cpu, node.memory_mib - load.used_memory_mib, req):
                after = balance(node, load.used_cpu + req.cpu, load.used_memory_mib + req.memory_mib)
                total = (weighted[index] + w_balance * after) / w_sum
                heapq.heappush(heap, (load.hosted, -total, cluster.name, node.name, index))

        for index, load in loads.items():
            row = rows[feasible_rows[index]]
            row["replicas"] = load.placed
            row["reason"] = (
                f"{load.placed} {'replica' if load.placed == 1 else 'replicas'} placed, runtime {feasible[index][2]}"
            )

        needed = len(replicas_needed)
        placed = len(assignments)
        if placed == needed:
            outcome = PlacementOutcome.PLACED
        elif placed:
            outcome = PlacementOutcome.PARTIAL
        else:
            outcome = PlacementOutcome.PENDING
        summary = summarise(
            needed=needed,
            placed_on=[(feasible[i][0].name, feasible[i][1].name, load.placed) for i, load in sorted(loads.items())],
            best_score=winner_total,
            rejections=rejections,
            feasible_nodes=len(feasible),
            clusters=len(seen),
        )
        return PlacementDecision.model_validate(
            {
                "workload": name,
                "namespace": namespace,
                "version": version,
                "outcome": outcome,
                "assignments": assignments,
                "candidates": rows,
                "weights": dict(self._weights),
                "summary": summary,
                "decided_at": self._clock(),
            }
        )


def _name(candidate: ClusterCandidate | NodeCandidate) -> str:
    return candidate.name


def _unchosen_row(cluster: str, node: str, runtime: str) -> dict[str, Any]:
    return {"cluster": cluster, "node": node, "runtime": runtime, "reason": f"feasible, runtime {runtime}; not chosen"}
