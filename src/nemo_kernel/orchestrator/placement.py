"""The inventory as the decision engine sees it during one scheduling pass."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from nemo_kernel.domain import ClusterPhase, ClusterSpec, NodeSpec
from nemo_kernel.orchestrator.decision import ClusterCandidate, NodeCandidate, NodeTable
from nemo_kernel.store import clusters as cluster_store

log = logging.getLogger(__name__)


@dataclass
class _Cluster:
    base: ClusterCandidate
    nodes: dict[str, NodeCandidate]


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
    def load(cls, s: Session) -> Inventory:
        """Read every cluster and node (two queries)."""
        clusters: list[_Cluster] = []
        fingerprint: list[object] = []
        leaving: dict[str, str] = {}
        for row in cluster_store.list_clusters(s):
            try:
                spec = ClusterSpec.model_validate(row.spec)
                node_specs = {n.name: NodeSpec.model_validate(n.spec) for n in row.nodes}
            except ValueError as exc:
                # One unreadable cluster must not stop placement everywhere: it is no candidate (the resource
                # manager records the error on it).
                log.warning("cluster %r left out of placement: %s", row.name, exc)
                continue
            ready = row.phase == ClusterPhase.READY.value
            nodes = {
                n.name: NodeCandidate.from_spec(
                    node_specs[n.name],
                    ready=n.ready,
                    allocated_cpu=n.allocated_cpu,
                    allocated_memory_mib=n.allocated_memory_mib,
                )
                for n in row.nodes
            }
            why = cluster_store.leaving_reason(row.phase, row.draining)
            if why is not None:
                leaving[row.name] = why
            excluded = cluster_store.DRAINED if row.draining else None
            base = ClusterCandidate.from_spec(spec, ready=ready, cordoned=row.cordoned, excluded_reason=excluded)
            clusters.append(_Cluster(base, nodes))
            fingerprint.append((row.name, ready, row.cordoned, row.draining))
            fingerprint.extend((n.name, n.ready, round(n.allocated_cpu, 6), n.allocated_memory_mib) for n in row.nodes)
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

    def allocate(self, cluster: str, node: str, cpu: float, memory_mib: int) -> None:
        """Account a replica placed during this pass, so later decisions in the pass see it."""
        c = self._by_name[cluster]
        n = c.nodes[node]
        c.nodes[node] = replace(
            n, allocated_cpu=n.allocated_cpu + cpu, allocated_memory_mib=n.allocated_memory_mib + memory_mib
        )
        if self._table is not None:
            self._table = self._table.with_allocated(cluster, node, cpu, memory_mib)
