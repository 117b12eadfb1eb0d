"""The filters of ``filters.py`` as boolean masks over a :class:`~table.NodeTable`: True where a filter rejects.

One function per filter, under the filter's name, computing exactly what the scalar filter decides (a test checks
them against each other on random inventories); the scalar filters still word the reasons. A filter added to
``CLUSTER_FILTERS`` or ``NODE_FILTERS`` without a mask here still works: ``cluster_masks``/``node_masks`` run the
scalar filter per candidate instead, which is slower.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np

from nemo_kernel.orchestrator.decision.criteria.latency import latency_by_region
from nemo_kernel.orchestrator.decision.filters import (
    CLUSTER_FILTERS,
    CPU_TOLERANCE,
    NODE_FILTERS,
    Requirements,
)
from nemo_kernel.orchestrator.decision.table import Bools, Ints, NodeTable, Objects

Mask = Callable[[NodeTable, Requirements], Bools | None]
"""A filter as a mask; None when the filter rejects nothing for these requirements (it is then skipped)."""


def _none(size: int) -> Bools:
    return np.zeros(size, dtype=bool)


def _cluster_health(t: NodeTable, req: Requirements) -> Bools | None:
    result: Bools = ~t.cluster_ready | ~t.cluster_has_nodes
    return result


def _cordon(t: NodeTable, req: Requirements) -> Bools | None:
    return t.cluster_cordoned


def _excluded(t: NodeTable, req: Requirements) -> Bools | None:
    return t.cluster_excluded


def _cluster_allowlist(t: NodeTable, req: Requirements) -> Bools | None:
    if not req.clusters:
        return None
    index: dict[str, int] = t.memo("cluster-index", lambda: {n: i for i, n in enumerate(t.cluster_names.tolist())})
    allowed = _none(len(t.clusters))
    allowed[[index[name] for name in req.clusters if name in index]] = True
    result: Bools = ~allowed
    return result


def _tier(t: NodeTable, req: Requirements) -> Bools | None:
    if not req.tiers:
        return None
    result: Bools = ~t.tiers.lookup(req.tiers)[t.cluster_tier]
    return result


def _region(t: NodeTable, req: Requirements) -> Bools | None:
    if not req.regions:
        return None
    result: Bools = ~t.regions.lookup(req.regions)[t.cluster_region]
    return result


def _data_residency(t: NodeTable, req: Requirements) -> Bools | None:
    if not req.countries:
        return None
    result: Bools = ~t.countries.lookup(req.countries)[t.cluster_country]
    return result


def _latency(t: NodeTable, req: Requirements) -> Bools | None:
    if req.max_latency_ms is None:
        return None
    result: Bools = (latency_by_region(t, req) > req.max_latency_ms)[t.cluster_region]
    return result


def _node_health(t: NodeTable, req: Requirements) -> Bools | None:
    result: Bools = ~t.ready
    return result


def _architecture(t: NodeTable, req: Requirements) -> Bools | None:
    if not req.architectures:
        return None
    result: Bools = ~t.architectures.lookup(req.architectures)[t.architecture]
    return result


def chosen_runtimes(t: NodeTable, req: Requirements) -> list[str | None]:
    """Per runtime-list code, the runtime a node offering that list would use for ``req`` (None: none fits)."""

    def choose() -> list[str | None]:
        return [next((r for r in runtimes if r in req.runtimes), None) for runtimes in t.runtime_lists.names]

    chosen: list[str | None] = t.memo(("runtime", req.runtimes), choose)
    return chosen


def _runtime(t: NodeTable, req: Requirements) -> Bools | None:
    offered = np.array([r is None for r in chosen_runtimes(t, req)], dtype=bool)
    if not offered.any():
        return None
    result: Bools = offered[t.runtimes]
    return result


def _tee(t: NodeTable, req: Requirements) -> Bools | None:
    if not req.needs_tee:
        return None
    # req.tees never holds TeeType.NONE, so a node without a TEE is rejected too, as the scalar filter does.
    if not t.tees.names:
        return None
    result: Bools = ~t.tees.lookup(req.tees)[t.tee]
    return result


def label_column(t: NodeTable, key: str) -> Objects:
    """Every node's value of label ``key`` (None where it has none), computed once per table."""

    def make() -> Objects:
        column = np.empty(len(t.nodes), dtype=object)
        column[:] = [n.labels.get(key) for n in t.nodes]
        return column

    column: Objects = t.memo(("label", key), make)
    return column


def _node_labels(t: NodeTable, req: Requirements) -> Bools | None:
    if not req.node_labels:
        return None
    rejected = _none(len(t))
    for key, wanted in req.node_labels:
        rejected |= label_column(t, key) != wanted
    return rejected


def _capacity(t: NodeTable, req: Requirements) -> Bools | None:
    fits = (t.free_cpu + CPU_TOLERANCE >= req.cpu) & (t.free_memory_mib >= req.memory_mib)
    result: Bools = ~fits
    return result


CLUSTER_MASKS: dict[str, Mask] = {
    "cluster-health": _cluster_health,
    "cordon": _cordon,
    "excluded": _excluded,
    "cluster-allowlist": _cluster_allowlist,
    "tier": _tier,
    "region": _region,
    "data-residency": _data_residency,
    "latency": _latency,
}

NODE_MASKS: dict[str, Mask] = {
    "node-health": _node_health,
    "architecture": _architecture,
    "runtime": _runtime,
    "tee": _tee,
    "node-labels": _node_labels,
    "capacity": _capacity,
}


def cluster_masks(t: NodeTable, req: Requirements) -> list[tuple[str, Bools | None]]:
    """Per cluster filter, in order: which clusters it rejects (whether or not an earlier filter did); None: none."""
    out: list[tuple[str, Bools | None]] = []
    for name, check in CLUSTER_FILTERS:
        mask = CLUSTER_MASKS.get(name)
        if mask is not None:
            out.append((name, mask(t, req)))
        else:
            out.append((name, np.array([check(c, req) is not None for c in t.clusters], dtype=bool)))
    return out


def node_masks(
    t: NodeTable, req: Requirements, rows: Ints, names: Collection[str] | None = None
) -> list[tuple[str, Bools]]:
    """Per node filter (of ``names``, default all) that may reject a node here, in order: which of ``rows`` it
    rejects."""
    out = []
    every = len(rows) == len(t)  # rows are distinct and sorted: they are all the rows, no need to gather
    for name, check in NODE_FILTERS:
        if names is not None and name not in names:
            continue
        mask = NODE_MASKS.get(name)
        if mask is not None:
            found = mask(t, req)
            if found is not None:
                out.append((name, found if every else np.take(found, rows)))
        else:
            out.append((name, np.array([check(t.node(int(r)), req) is not None for r in rows], dtype=bool)))
    return out
