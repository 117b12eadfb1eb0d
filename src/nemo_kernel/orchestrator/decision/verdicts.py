"""What the filters conclude for one decision, as arrays over a :class:`~table.NodeTable`, and how a compact
explanation groups it.

Every filter but capacity reads only what a table keeps between its revisions (a cluster's tier and readiness, a
node's runtimes, labels and TEE), so those masks, and the explanation groups they give, are computed once per
table and set of requirements and kept in the table's memo, which ``with_allocated`` and ``with_hosted`` share.
Capacity (allocations change with every placement), and a node filter without a mask (it is handed the node with
its current allocation), run at every decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from nemo_kernel.domain import VerdictGroup
from nemo_kernel.orchestrator.decision.criteria.latency import latency_by_region
from nemo_kernel.orchestrator.decision.filters import CLUSTER_FILTERS, CPU_TOLERANCE, NODE_FILTERS, Requirements
from nemo_kernel.orchestrator.decision.masks import NODE_MASKS, chosen_runtimes, cluster_masks, node_masks
from nemo_kernel.orchestrator.decision.table import Bools, Floats, Ints, NodeTable

_PER_DECISION = frozenset({"capacity"} | {name for name, _ in NODE_FILTERS if name not in NODE_MASKS})
"""Node filters whose verdict can change between two revisions of a table."""
_KEPT_FILTERS = frozenset(name for name, _ in NODE_FILTERS) - _PER_DECISION
_KEPT = 64
"""Requirement sets whose verdicts a table keeps (about 150 KB each at 10,000 nodes); past that the memo starts over."""

Group = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Kept:
    """The verdicts of the filters that do not depend on allocations, for one table and set of requirements."""

    cluster_rejected_by: Ints  # per cluster: index into CLUSTER_FILTERS of its first rejection, -1 if admitted
    admitted_rows: Ints  # rows of the nodes of admitted clusters
    node_rejections: dict[str, Bools]  # per filter not in _PER_DECISION rejecting a node: mask over admitted_rows
    rejected: Bools  # over admitted_rows: rejected by any of those
    groups: dict[tuple[str, str], Group]  # (level, filter) -> its explanation group
    open_clusters: int  # clusters with a node none of those rejects
    open_names: list[str]  # their names


@dataclass(slots=True)
class Verdicts:
    """What the filters concluded for one table allocation and set of requirements, as arrays over the table.

    Shared by the decisions on the same table allocation with the same requirements (``run_filters``): read-only.
    """

    cluster_rejected_by: Ints
    admitted_rows: Ints
    node_rejections: list[tuple[str, Bools]]  # per node filter rejecting any node, in order: mask over admitted_rows
    feasible: Ints  # rows that passed every filter, in name order
    runtime: list[str | None]  # per runtime-list code: the runtime chosen
    kept: _Kept
    feasible_rows: Bools  # over every row of the table: True where ``feasible`` has it
    groups: list[VerdictGroup] | None = None  # the explanation's groups (``explanation_groups``), once asked for


_UNMASKED = _PER_DECISION - {"capacity"}
"""Node filters without a mask: handed each node with the table's allocation and hosted replicas."""


def run_filters(table: NodeTable, req: Requirements) -> Verdicts:
    """Run the filters as masks: the first rejection of each cluster, every rejection of each admitted node.

    Kept by the table for the next decision with the same requirements while its allocation (what capacity reads)
    is the same (``NodeTable.derived``): a scheduler retrying workloads that fit nowhere, or deciding several
    before placing, filters once.
    """
    key, kept = _kept(table, req)
    # free_cpu and free_memory_mib follow the allocation (cpu - allocated).
    inputs: tuple[object, ...] = (kept, table.allocated_cpu, table.allocated_memory_mib)
    if _UNMASKED:
        inputs += (table.hosted,)

    def still(was: tuple[object, ...], found: Verdicts) -> bool:
        """After ``with_allocated`` placed replicas on feasible nodes that still fit one more, every verdict holds:
        capacity rejects the same nodes, with the same reasons."""
        if _UNMASKED or was[0] is not kept:
            return False
        rows = table.changed_since(cast(Floats, was[1]), cast(Floats, was[2]))
        if rows is None:
            return False
        # Feasible before, and still fitting one more by the capacity mask's own comparisons, at those rows (free
        # capacity row by row: the same floats as the table's columns).
        return all(
            found.feasible_rows[r]
            and float(table.cpu[r]) - float(table.allocated_cpu[r]) + CPU_TOLERANCE >= req.cpu
            and float(table.memory_mib[r]) - float(table.allocated_memory_mib[r]) >= req.memory_mib
            for r in rows
        )

    return table.derived(("verdicts", key, req.cpu, req.memory_mib), inputs, lambda: _verdicts(table, req, kept), still)


def _verdicts(table: NodeTable, req: Requirements, kept: _Kept) -> Verdicts:
    rejected = kept.rejected
    node_rejections = []
    dynamic = dict(node_masks(table, req, kept.admitted_rows, _PER_DECISION))
    for name, _ in NODE_FILTERS:
        mask = kept.node_rejections.get(name)
        if mask is None:
            mask = dynamic.get(name)
            if mask is None or not mask.any():
                continue
            mask.setflags(write=False)
            rejected = rejected | mask
        node_rejections.append((name, mask))
    feasible = (
        np.flatnonzero(~rejected)  # every row admitted: the same rows, without gathering them
        if len(kept.admitted_rows) == len(table)
        else np.compress(~rejected, kept.admitted_rows)
    )
    feasible.setflags(write=False)
    feasible_rows = np.zeros(len(table), dtype=bool)
    feasible_rows[feasible] = True
    feasible_rows.setflags(write=False)
    return Verdicts(
        cluster_rejected_by=kept.cluster_rejected_by,
        admitted_rows=kept.admitted_rows,
        node_rejections=node_rejections,
        feasible=feasible,
        runtime=chosen_runtimes(table, req),
        feasible_rows=feasible_rows,
        kept=kept,
    )


def _key(table: NodeTable, req: Requirements) -> tuple[object, ...]:
    """Every requirement a filter other than capacity reads (the latency filter's as the latency to each region)."""
    latency = None
    if req.max_latency_ms is not None:
        latency = (req.max_latency_ms, tuple(latency_by_region(table, req).tolist()))
    return (
        req.runtimes,
        req.needs_tee,
        req.tees,
        req.tiers,
        req.regions,
        req.countries,
        req.clusters,
        req.architectures,
        req.node_labels,
        latency,
    )


def _kept(table: NodeTable, req: Requirements) -> tuple[tuple[object, ...], _Kept]:
    kept: dict[tuple[object, ...], _Kept] = table.memo("verdicts", dict)
    key = _key(table, req)
    found = kept.get(key)
    if found is None:
        if len(kept) >= _KEPT:
            kept.clear()
        found = kept[key] = _compute(table, req)
    return key, found


def _compute(table: NodeTable, req: Requirements) -> _Kept:
    rejected_by = np.full(len(table.clusters), -1, dtype=np.int64)
    groups: dict[tuple[str, str], Group] = {}
    for position, (_, mask) in enumerate(cluster_masks(table, req)):
        if mask is not None:
            rejected_by[(rejected_by < 0) & mask] = position
    for position, (name, check) in enumerate(CLUSTER_FILTERS):
        clusters = np.flatnonzero(rejected_by == position)
        if len(clusters):
            first = table.clusters[int(clusters[0])]
            groups["cluster", name] = {
                "level": "cluster",
                "filter": name,
                "clusters": table.cluster_names[clusters].tolist(),
                "example": f"{first.name}: {check(first, req)}",
            }
    admitted = rejected_by < 0
    admitted_rows = np.flatnonzero(admitted[table.cluster_of]) if len(table) else np.zeros(0, dtype=np.int64)
    node_rejections = {n: m for n, m in node_masks(table, req, admitted_rows, _KEPT_FILTERS) if m.any()}
    rejected = np.zeros(len(admitted_rows), dtype=bool)
    for name, mask in node_rejections.items():
        rejected |= mask
        groups["node", name] = node_group(table, req, name, admitted_rows[mask])
    open_clusters = _clusters_of(table, admitted_rows[~rejected])
    for array in (rejected_by, admitted_rows, rejected, *node_rejections.values()):
        array.setflags(write=False)  # shared by every decision on the table
    return _Kept(
        cluster_rejected_by=rejected_by,
        admitted_rows=admitted_rows,
        node_rejections=node_rejections,
        rejected=rejected,
        groups=groups,
        open_clusters=len(open_clusters),
        open_names=table.cluster_names[open_clusters].tolist(),
    )


def node_group(table: NodeTable, req: Requirements, name: str, rows: Ints) -> Group:
    """The explanation group of node filter ``name``, which rejected ``rows`` (at least one)."""
    first_row = int(rows[0])
    check = dict(NODE_FILTERS)[name]
    return {
        "level": "node",
        "filter": name,
        "clusters": table.cluster_names[_clusters_of(table, rows)].tolist(),
        "nodes": len(rows),
        "example": f"{table.node_names[first_row]}: {check(table.node(first_row), req)}",
    }


def _clusters_of(table: NodeTable, rows: Ints) -> Ints:
    """The clusters of ``rows``, each once, in name order (a count per cluster is cheaper than sorting the rows)."""
    return np.flatnonzero(np.bincount(table.cluster_of[rows], minlength=len(table.clusters)))


def explanation_groups(table: NodeTable, found: Verdicts, req: Requirements) -> list[VerdictGroup]:
    """Every cluster's verdict, compactly: per filter the clusters it rejected (or whose nodes it rejected), with
    the reason given for the first of them; then the clusters with a feasible node."""
    if found.groups is None:
        # Built from the filters' own results, so valid by construction: validating each of thousands of cluster
        # names again would cost more than the rest of the decision.
        found.groups = [
            VerdictGroup.model_construct(**{**group, "clusters": tuple(group["clusters"])})
            for group in _groups(table, found, req)
        ]
    # Groups are frozen: every decision on these verdicts shares them; the list is its own.
    return list(found.groups)


def _groups(table: NodeTable, found: Verdicts, req: Requirements) -> list[Group]:
    kept = found.kept
    out = [group for (level, _), group in kept.groups.items() if level == "cluster"]
    for name, mask in found.node_rejections:
        group = kept.groups.get(("node", name))
        out.append(group if group is not None else node_group(table, req, name, found.admitted_rows[mask]))
    feasible = found.feasible
    if len(feasible):
        # Rows are in cluster order: a cluster starts wherever the cluster changes.
        of = np.take(table.cluster_of, feasible)
        starts = np.flatnonzero(of[1:] != of[:-1])
        names = (
            kept.open_names  # capacity emptied no cluster: the clusters are those the other filters left
            if len(starts) + 1 == kept.open_clusters
            else table.cluster_names[np.concatenate((of[:1], of[starts + 1]))].tolist()
        )
        out.append({"level": "node", "filter": None, "clusters": names, "nodes": len(feasible), "example": "feasible"})
    return out


def rejected_names(table: NodeTable, found: Verdicts) -> dict[tuple[str, str], list[str]]:
    """(level, filter) -> the clusters or nodes it rejected, in name order, from the masks."""
    out: dict[tuple[str, str], list[str]] = {}
    for position, (filter_name, _) in enumerate(CLUSTER_FILTERS):
        names = table.cluster_names[found.cluster_rejected_by == position].tolist()
        if names:
            out["cluster", filter_name] = names
    for filter_name, mask in found.node_rejections:
        names = table.node_names[found.admitted_rows[mask]].tolist()
        if names:
            out["node", filter_name] = names
    return out
