"""The one-line summary of a decision, as shown by ``nemo workload explain`` and stored with it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nemo_kernel.orchestrator.decision.filters import CLUSTER_FILTERS, NODE_FILTERS

# A decision for hundreds of replicas would otherwise produce a summary nobody reads; the full list is in
# the assignments.
_NODES_SHOWN = 5


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _names(names: Sequence[str]) -> str:
    shown = list(names[:_NODES_SHOWN])
    if len(names) > _NODES_SHOWN:
        shown.append(f"and {len(names) - _NODES_SHOWN} more")
    return ", ".join(shown)


def rejection_counts(rejections: Mapping[tuple[str, str], Sequence[str]]) -> str:
    """'2 clusters rejected: tier (a, b); 3 nodes rejected: runtime (c/n1, c/n2), tee (c/n1, c/n3)'.

    ``rejections`` maps (level, filter) to the clusters or nodes that filter rejected. A node can be named
    under several filters: every filter that rejected it is named, in the order filters run.
    """
    parts: list[str] = []
    for level, filters in (("cluster", CLUSTER_FILTERS), ("node", NODE_FILTERS)):
        groups = [(f, rejections[level, f]) for f, _ in filters if rejections.get((level, f))]
        if groups:
            rejected = len({name for _, names in groups for name in names})
            listed = ", ".join(f"{f} ({_names(names)})" for f, names in groups)
            parts.append(f"{_count(rejected, level)} rejected: {listed}")
    return "; ".join(parts)


def summarise(
    *,
    needed: int,
    placed_on: Sequence[tuple[str, str, int]],
    best_score: float | None,
    rejections: Mapping[tuple[str, str], Sequence[str]],
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
    # Spreading ranks before the score: a node already hosting a replica of the workload can score higher than
    # the one chosen, so say how the choice was made.
    how = "nodes with fewer replicas of the workload first, then the highest score"
    if best_score is not None:
        how += f" (first pick scored {best_score:.2f})"
    if placed == needed:
        return f"{_count(placed, 'replica')} placed on {where}; chosen by {how}"
    text = f"{placed} of {needed} replicas placed on {where}; {needed - placed} wait for capacity; chosen by {how}"
    elsewhere = rejection_counts(rejections)
    return f"{text}; elsewhere {elsewhere}" if elsewhere else text
