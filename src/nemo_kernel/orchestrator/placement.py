"""The inventory as the decision engine sees it during one scheduling pass."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from sqlalchemy import Row, Text, cast, select
from sqlalchemy.orm import Session

from nemo_kernel.domain import ClusterPhase, ClusterSpec, NodeSpec
from nemo_kernel.orchestrator.decision import ClusterCandidate, NodeCandidate, NodeTable
from nemo_kernel.store import clusters as cluster_store
from nemo_kernel.store.tables import ClusterRow, NodeRow

log = logging.getLogger(__name__)


# The specs as their stored JSON text: compared with what was validated last time, so an unchanged spec (every
# spec but one in a pass after a registration) is neither decoded nor validated again.
_CLUSTERS = select(
    ClusterRow.id,
    ClusterRow.name,
    ClusterRow.phase,
    ClusterRow.cordoned,
    ClusterRow.draining,
    cast(ClusterRow.spec, Text).label("spec"),
).order_by(ClusterRow.name)
_NODES = select(
    NodeRow.cluster_id,
    NodeRow.name,
    NodeRow.ready,
    NodeRow.allocated_cpu,
    NodeRow.allocated_memory_mib,
    cast(NodeRow.spec, Text).label("spec"),
).order_by(NodeRow.cluster_id, NodeRow.name)


class ParsedSpecs:
    """Validated cluster specs and node candidates by the stored text (and accounting) they were built from, kept
    between inventory loads.

    Bounded: each load keeps only the clusters it read (one spec per registered cluster and node); re-derived
    from the store, as an entry is used only while the stored text is the one it was validated from.
    """

    def __init__(self) -> None:
        # name -> (stored text, spec, its nodes by name: (the document they were validated from, the node spec))
        self._clusters: dict[str, tuple[str, ClusterSpec, dict[str, tuple[object, NodeSpec]]]] = {}
        self._nodes: dict[tuple[str, str], tuple[tuple[str, bool, float, int], NodeCandidate, NodeSpec]] = {}

    def cluster(self, name: str, text: str) -> ClusterSpec:
        """The cluster spec stored as ``text``; raises ValueError when it is not a valid one."""
        kept = self._clusters.get(name)
        if kept is not None and kept[0] == text:
            return kept[1]
        document = json.loads(text)
        spec = ClusterSpec.model_validate(document)
        nodes = dict(zip((n.name for n in spec.nodes), zip(document["nodes"], spec.nodes, strict=True), strict=True))
        self._clusters[name] = (text, spec, nodes)
        return spec

    def node(self, cluster: str, row: Row[int, str, bool, float, int, str]) -> NodeCandidate:
        """The candidate of a node row of ``_NODES`` (kept while its spec text and accounting stay the same: most
        nodes between two loads); raises ValueError when its spec is not a valid one."""
        key = (row.spec, row.ready, row.allocated_cpu, row.allocated_memory_mib)
        kept = self._nodes.get((cluster, row.name))
        if kept is not None and kept[0] == key:
            return kept[1]
        spec = kept[2] if kept is not None and kept[0][0] == row.spec else self._node_spec(cluster, row.name, row.spec)
        candidate = NodeCandidate.from_spec(
            spec, ready=row.ready, allocated_cpu=row.allocated_cpu, allocated_memory_mib=row.allocated_memory_mib
        )
        self._nodes[(cluster, row.name)] = (key, candidate, spec)
        return candidate

    def _node_spec(self, cluster: str, name: str, text: str) -> NodeSpec:
        """The node spec stored as ``text``: the one validated with its cluster's spec when the node row holds the
        same document (as registration stores it), so a first load validates each node once, not twice."""
        document = json.loads(text)
        of_cluster = self._clusters.get(cluster)
        validated = of_cluster[2].get(name) if of_cluster is not None else None
        if validated is not None and validated[0] == document:
            return validated[1]
        return NodeSpec.model_validate(document)

    def keep(self, clusters: set[str]) -> None:
        """Forget the specs of clusters not in ``clusters`` (removed ones)."""
        self._clusters = {n: v for n, v in self._clusters.items() if n in clusters}
        self._nodes = {k: v for k, v in self._nodes.items() if k[0] in clusters}


@dataclass
class _Cluster:
    base: ClusterCandidate
    nodes: dict[str, NodeCandidate]


@dataclass(frozen=True)
class Allocations:
    """An inventory's accounting at one moment (:meth:`Inventory.allocations`)."""

    nodes: dict[str, dict[str, NodeCandidate]]
    table: NodeTable | None


class Inventory:
    """Clusters and nodes with their capacity accounting, updated as a pass places replicas."""

    def __init__(self, clusters: list[_Cluster], generation: int, leaving: dict[str, str] | None = None) -> None:
        self._clusters = clusters
        self.leaving = leaving or {}
        """Clusters whose replicas are being replaced elsewhere, with why (drained, not answering)."""
        self._by_name = {c.base.name: c for c in clusters}
        self.generation = generation
        self._table: NodeTable | None = None
        """Changes whenever health, schedulability or free capacity change, so pending work is retried only then."""

    @classmethod
    def load(cls, s: Session, specs: ParsedSpecs | None = None) -> Inventory:
        """Read every cluster and node (two queries of plain tuples). ``specs``: validated specs kept from an
        earlier load (the reconcile pass keeps one), so only a spec whose stored text changed is validated again."""
        specs = specs if specs is not None else ParsedSpecs()
        nodes_of: dict[int, list[Row[int, str, bool, float, int, str]]] = defaultdict(list)
        for node in s.execute(_NODES):
            nodes_of[node.cluster_id].append(node)
        clusters: list[_Cluster] = []
        fingerprint: list[object] = []
        leaving: dict[str, str] = {}
        for row in s.execute(_CLUSTERS).all():
            rows = nodes_of.get(row.id, [])
            try:
                spec = specs.cluster(row.name, row.spec)
                nodes = {n.name: specs.node(row.name, n) for n in rows}
            except ValueError as exc:
                # One unreadable cluster must not stop placement everywhere: it is no candidate (the resource
                # manager records the error on it).
                log.warning("cluster %r left out of placement: %s", row.name, exc)
                continue
            ready = row.phase == ClusterPhase.READY.value
            why = cluster_store.leaving_reason(row.phase, row.draining)
            if why is not None:
                leaving[row.name] = why
            excluded = cluster_store.DRAINED if row.draining else None
            # its nodes are the stored ones (``nodes``), set per workload by candidates()
            base = ClusterCandidate.from_spec(
                spec, ready=ready, cordoned=row.cordoned, excluded_reason=excluded, nodes=()
            )
            clusters.append(_Cluster(base, nodes))
            fingerprint.append((row.name, ready, row.cordoned, row.draining))
            fingerprint.extend((n.name, n.ready, round(n.allocated_cpu, 6), n.allocated_memory_mib) for n in rows)
        specs.keep({c.base.name for c in clusters})
        return cls(clusters, hash(tuple(fingerprint)), leaving)

    def candidates(self, hosted: Mapping[tuple[str, str], int]) -> list[ClusterCandidate]:
        """Candidates for one workload; ``hosted`` counts its replicas already on each (cluster, node)."""
        out = []
        for c in self._clusters:
            nodes = tuple(
                replace(n, hosted_replicas_of_workload=hosted[(c.base.name, n.name)])
                if (c.base.name, n.name) in hosted
                else n
                for n in c.nodes.values()
            )
            out.append(replace(c.base, nodes=nodes))
        return out

    def table(self, hosted: Mapping[tuple[str, str], int]) -> NodeTable:
        """The decision engine's node table for one workload (``hosted``: its replicas per (cluster, node)).

        Built once per pass and kept up to date by :meth:`allocate`, so each decision of the pass costs numpy
        work over the table instead of a Python object per node.
        """
        if self._table is None:
            self._table = NodeTable.build(self.candidates({}))
        return self._table.with_hosted(hosted) if hosted else self._table

    def allocations(self) -> Allocations:
        """What :meth:`allocate` changes, to put back with :meth:`restore` (a pass whose writes were rolled back)."""
        return Allocations({c.base.name: dict(c.nodes) for c in self._clusters}, self._table)

    def restore(self, saved: Allocations) -> None:
        """The accounting as it was when ``saved`` was taken by :meth:`allocations`."""
        for c in self._clusters:
            c.nodes = dict(saved.nodes[c.base.name])
        self._table = saved.table

    def allocate(self, nodes: Sequence[tuple[str, str]], cpu: float, memory_mib: int) -> None:
        """Account the replicas a decision placed during this pass, one on each of ``nodes`` ((cluster, node); a
        node named twice took two), so later decisions in the pass see them."""
        for cluster, node in nodes:
            c = self._by_name[cluster]
            n = c.nodes[node]
            c.nodes[node] = replace(
                n, allocated_cpu=n.allocated_cpu + cpu, allocated_memory_mib=n.allocated_memory_mib + memory_mib
            )
        if self._table is not None:
            self._table = self._table.with_allocated(nodes, cpu, memory_mib)
