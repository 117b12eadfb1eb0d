"""Workload views: status, pages of workloads, why they run where they run, decision and event history."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from pydantic import Field

from nemo_kernel.domain import (
    CandidateVerdict,
    Detail,
    Event,
    Model,
    PlacementDecision,
    ReplicaPhase,
    WorkloadStatus,
)
from nemo_kernel.orchestrator.decision import DecisionEngine
from nemo_kernel.orchestrator.placement import Inventory
from nemo_kernel.store import Database, events, workloads
from nemo_kernel.store.tables import ReplicaRow


class ReplicaPlacement(Model):
    """Where one replica runs, and the decision that put it there."""

    replica: str
    index: int
    version: int
    cluster: str
    node: str
    phase: ReplicaPhase
    decision: int | None = Field(description="id of the decision that placed it (see .../decisions)")
    decided_at: datetime | None = None
    verdict: CandidateVerdict | None = Field(
        default=None, description="that decision's verdict about the node: scores, total, reason"
    )


class PlacementExplanation(PlacementDecision):
    """The latest placement decision, and every replica's current placement with the decision behind it.

    After a partial decision (a drain, a move) the latest decision covers only some replicas; ``replicas`` shows
    all of them.
    """

    id: int = Field(description="id of the latest decision")
    replicas: list[ReplicaPlacement]


class StoredDecision(PlacementDecision):
    """A stored placement decision with its id (the cursor of the history)."""

    id: int


class WorkloadViews:
    """Reads of workloads, their replicas, placement decisions and history."""

    def __init__(self, db: Database, decisions: DecisionEngine | None = None) -> None:
        self._db = db
        self._decisions = decisions or DecisionEngine()

    def status(self, namespace: str, name: str) -> WorkloadStatus:
        """Desired against actual replicas, per cluster and node, with their URLs; ``NotFound`` if unknown."""
        with self._db.snapshot() as s:
            row = workloads.get_workload(s, namespace, name)
            replicas = workloads.replicas_by_workload(s, [row.id]).get(row.id, [])
            return workloads.to_workload_status(row, replicas, workloads.unobserved_clusters(s))

    def page(self, namespace: str | None = None, *, limit: int = 100, offset: int = 0) -> list[WorkloadStatus]:
        """A page of workloads by namespace then name (all namespaces unless one is given)."""
        with self._db.snapshot() as s:
            rows = workloads.list_workloads(s, namespace, limit=limit, offset=offset)
            replicas = workloads.replicas_by_workload(s, [r.id for r in rows])
            unobserved = workloads.unobserved_clusters(s)
            return [workloads.to_workload_status(r, replicas.get(r.id, []), unobserved) for r in rows]

    def placement(self, namespace: str, name: str) -> PlacementExplanation | None:
        """Each current replica's placement with the decision behind it, and the latest decision with its
        explanation; ``None`` before the first decision, ``NotFound`` for an unknown workload."""
        with self._db.snapshot() as s:
            row = workloads.get_workload(s, namespace, name)
            latest = workloads.latest_decision(s, row)
            current = [r for r in workloads.replicas_by_workload(s, [row.id]).get(row.id, []) if r.desired]
            placed_by = workloads.placing_decisions(s, row, current)
            if latest is None:
                return None
            replicas = [_placement(r, placed_by.get(r.id)) for r in current]
        latest_id, decision = latest
        return PlacementExplanation(**decision.model_dump(), id=latest_id, replicas=replicas)

    def node_verdicts(self, namespace: str, name: str) -> PlacementDecision | None:
        """Every cluster's and node's verdict for the workload as the inventory stands now, with each feasible
        node's scores: what the decision engine would decide for the replicas it still needs, computed on request
        and not stored (a stored decision over many nodes keeps its verdicts compactly). ``None`` for a catalogue
        entry (nothing to place); ``NotFound`` for an unknown workload."""
        with self._db.snapshot() as s:
            row = workloads.get_workload(s, namespace, name)
            spec = workloads.readable_descriptor(row).deployment
            if spec is None:
                return None
            inventory = Inventory.load(s)
            current = [
                r
                for r in workloads.replicas_by_workload(s, [row.id]).get(row.id, [])
                if r.desired and r.version == row.version and r.cluster not in inventory.leaving
            ]
            version = row.version
        hosted: dict[tuple[str, str], int] = defaultdict(int)
        for r in current:
            hosted[(r.cluster, r.node)] += 1
        missing = sorted(set(range(spec.replicas)) - {r.index for r in current})
        return self._decisions.decide(
            namespace, name, version, spec, missing, inventory.candidates(hosted), detail=Detail.NODES
        )

    def decisions(self, namespace: str, name: str, *, after: int = 0, limit: int = 100) -> list[StoredDecision]:
        """The stored placement decisions after the id ``after``, oldest first; ``NotFound`` if unknown."""
        with self._db.snapshot() as s:
            found = workloads.decision_history(s, workloads.get_workload(s, namespace, name), after=after, limit=limit)
        return [StoredDecision(**d.model_dump(), id=i) for i, d in found]

    def history(self, namespace: str, name: str, *, after: int = 0, limit: int = 500) -> list[Event]:
        """Events of a workload after the id ``after``, oldest first; kept after the workload is deleted."""
        with self._db.snapshot() as s:
            return events.history(s, events.workload_subject(namespace, name), after_id=after, limit=limit)


def _placement(r: ReplicaRow, placed_by: tuple[int, PlacementDecision] | None) -> ReplicaPlacement:
    decision_id, decision = placed_by if placed_by is not None else (None, None)
    verdict = None
    if decision is not None:
        verdict = next((c for c in decision.candidates if (c.cluster, c.node) == (r.cluster, r.node)), None)
    return ReplicaPlacement(
        replica=r.id,
        index=r.index,
        version=r.version,
        cluster=r.cluster,
        node=r.node,
        phase=ReplicaPhase(r.phase),
        decision=decision_id,
        decided_at=None if decision is None else decision.decided_at,
        verdict=verdict,
    )
