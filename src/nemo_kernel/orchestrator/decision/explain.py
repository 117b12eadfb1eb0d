"""The one-line summary of a decision, as shown by ``nemo workload explain`` and stored with it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from nemo_kernel.orchestrator.decision.filters import CLUSTER_FILTERS, NODE_FILTERS

# A decision for hundreds of replicas would otherwise produce a summary nobody reads; the full list is in
# the assignments.
_NODES_SHOWN = 5


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def rejection_counts(rejections: Counter[tuple[str, str]]) -> str:
    """'2 clusters rejected by tier, 3 nodes by capacity': counts per filter, in the order filters run."""
    parts: list[str] = []
    for level, filters in (("cluster", CLUSTER_FILTERS), ("node", NODE_FILTERS)):
        for filter_name, _ in filters:
            n = rejections.get((level, filter_name), 0)
            if n:
                verb = " rejected by " if not parts else " by "
                parts.append(_count(n, level) + verb + filter_name)
    return ", ".join(parts)


def summarise(
    *,
    needed: int,
    placed_on: Sequence[tuple[str, str, int]],
    best_score: float | None,
    rejections: Counter[tuple[str, str]],
    feasible_nodes: int,
    clusters: int,
) -> str:
    """Summary of a decision: where replicas went and the winning score, or why they fit nowhere.

    ``placed_on`` lists (cluster, node, replicas placed) for nodes that took replicas, in name order.
    """
    if needed == 0:
        return f"no replicas to place; {_count(feasible_nodes, 'feasible node')}"
    placed = sum(n for *_, n in placed_on)
    if placed == 0:
        if clusters == 0:
            return "fits nowhere: no clusters to choose from"
        return "fits nowhere: " + rejection_counts(rejections)

    # Most-loaded nodes first, so a truncated list still shows where the bulk went.
    ordered = sorted(placed_on, key=lambda p: -p[2])
    shown = [f"{c}/{n}" + (f" (x{k})" if k > 1 else "") for c, n, k in ordered[:_NODES_SHOWN]]
    if len(ordered) > _NODES_SHOWN:
        shown.append(f"and {len(ordered) - _NODES_SHOWN} more nodes")
    where = ", ".join(shown)
    score = f"best score {best_score:.2f}" if best_score is not None else ""
    if placed == needed:
        return f"{_count(placed, 'replica')} placed on {where}; {score}"
    text = f"{placed} of {needed} replicas placed on {where}; {needed - placed} wait for capacity; {score}"
    elsewhere = rejection_counts(rejections)
    return f"{text}; elsewhere {elsewhere}" if elsewhere else text
