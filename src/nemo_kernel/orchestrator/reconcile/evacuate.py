"""Evacuate: running replicas on a drained or NotReady cluster, or on a NotReady node, move through the migration
service.

Each move is a stored migration (``store.migration_records.plan_migration``, carried out by the migration loop), so
a drain inherits make-before-break, the state hand-off of stateful workloads and the gateway switch. The target is
chosen here by the decision engine, with the same filters and scores as placement (a drained or NotReady cluster and
a NotReady node are rejected by them), and the decision is stored, so the placement view explains where each replica
runs after its move.

Bounds: at most ``concurrency`` evacuations run at once (``NEMO_EVACUATION_CONCURRENCY``), so a drain of a cluster
with 500 replicas does not start 500 moves. The replicas of one workload move one after the other: the migration
service runs one migration per workload, which keeps its rule that two movers never act on one workload's state (a
drain waits for a user's migration of the workload; a user's is refused with a 409 naming the drain's while it
runs), and a workload runs at most one extra replica at a time.

A move that ends without moving the replica (its target did not run, the hand-off failed) is tried again, with a
new decision, up to ``EVACUATION_ATTEMPTS`` times. Not moved here: a replica that does not run (nothing to hand
over), a stateless one on a NotReady cluster (nothing to hand over either), and one whose evacuation the engine gave
up (its NotReady cluster could not export the state, or the attempts are spent): the reschedule path replaces them
with fresh replicas (:func:`phases.left_to_placement`), saying that no state was handed over. A replica that fits
nowhere else keeps serving where it is, and its workload says why.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from functools import partial

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from nemo_kernel.domain import (
    ACTIVE_PHASES,
    ClusterPhase,
    Detail,
    EventKind,
    MigrationMode,
    PlacementDecision,
    ReplicaPhase,
    WorkloadDescriptor,
)
from nemo_kernel.orchestrator.decision import ClusterCandidate, DecisionEngine, NodeTable
from nemo_kernel.orchestrator.placement import Inventory, ParsedSpecs
from nemo_kernel.orchestrator.reconcile.phases import DESCRIPTOR_TEXT, StoredReplica, is_stateful, stored_replicas
from nemo_kernel.orchestrator.reconcile.records import isolated, replica_event
from nemo_kernel.ppef.press import residency_constrained
from nemo_kernel.store import Database, workloads
from nemo_kernel.store.clusters import DRAINED
from nemo_kernel.store.events import record_event, workload_subject
from nemo_kernel.store.migration_records import evacuations_in_flight, given_up_evacuations, plan_migration
from nemo_kernel.store.tables import ClusterRow, MigrationRow, NodeRow, ReplicaRow, WorkloadRow

NOT_READY = "not ready"
"""The reason of a move off a NotReady cluster or node (``drained`` for a drain)."""

REQUESTED_BY = "nemo:evacuation"
"""``requested_by`` of the migrations this step starts."""

DETAIL_UP_TO = 500
"""Decisions over at most this many nodes keep every node's verdict (as placement's)."""


class Evacuation:
    """The step after rescheduling: starts a migration for the running replicas that must leave their place.

    Remembers, per replica waiting to leave that fitted nowhere, the inventory generation it was tried at (so it is
    tried again only when the inventory changes); pruned every pass to the replicas still waiting, so it holds at
    most one entry per replica on a leaving cluster or node.
    """

    def __init__(
        self,
        db: Database,
        decisions: DecisionEngine,
        concurrency: int,
        started: Callable[[], None],
        specs: ParsedSpecs | None = None,
    ) -> None:
        """``concurrency`` bounds the evacuations in flight; ``started`` is called after a pass started some (it
        wakes the migration loop); ``specs``: the validated cluster specs the pass's inventory loads share."""
        self._db = db
        self._specs = specs if specs is not None else ParsedSpecs()
        self._decisions = decisions
        self._concurrency = concurrency
        self._started = started
        self.tried: dict[str, int] = {}

    def __call__(self) -> None:
        """Run the step once; see the module docstring."""
        started = 0
        with self._db.transaction() as s:
            waiting = _waiting(s)
            ids = {r.id for r, _, _ in waiting}
            self.tried = {rid: g for rid, g in self.tried.items() if rid in ids}
            budget = self._concurrency - evacuations_in_flight(s)
            if not waiting or budget <= 0:
                return
            owners = {r.workload_id for r, _, _ in waiting}
            # One that does not read counts as stateful: its move is tried and records why on the workload.
            descriptors = s.execute(_DESCRIPTORS.where(WorkloadRow.id.in_(owners)))
            stateful = {wid: is_stateful(d, unreadable=True) for wid, d in descriptors}
            # Placement replaces a stateless replica of a NotReady cluster (see phases.left_to_placement): no state
            # to hand over. Nothing is loaded for those (all the replicas of a failed cluster, most often).
            waiting = [
                (r, why, silent)
                for r, why, silent in waiting
                if not silent or why == DRAINED or stateful[r.workload_id]
            ]
            if not waiting:
                return
            inventory = Inventory.load(s, self._specs)
            owners = {r.workload_id for r, _, _ in waiting}
            ws = {w.id: w for w in s.scalars(select(WorkloadRow).where(WorkloadRow.id.in_(owners)))}
            replicas = stored_replicas(s, ws)
            moved: set[int] = set()
            for source, reason, _ in waiting:
                w = ws[source.workload_id]
                if budget <= 0:
                    break
                if w.id in moved or self.tried.get(source.id) == inventory.generation:
                    continue  # one move per workload at a time; one that fitted nowhere waits for a change
                mine = [r for r in replicas.get(w.id, []) if r.desired and r.version == w.version]
                if any(r.index == source.index and r.id != source.id for r in mine):
                    continue  # its index already has a replacement (placement's): phases release one of the two
                ok = isolated(s, w, "evacuation", partial(self._move, s, w, source, reason, mine, inventory))
                if ok:
                    moved.add(w.id)
                    budget -= 1
                    started += 1
                elif ok is False:
                    self.tried[source.id] = inventory.generation
        if started:
            self._started()

    def _move(
        self,
        s: Session,
        w: WorkloadRow,
        source: ReplicaRow,
        reason: str,
        mine: list[StoredReplica],
        inventory: Inventory,
    ) -> bool:
        """Start a migration of ``source`` to where the decision engine places its index; False if nothing fits."""
        spec = WorkloadDescriptor.model_validate(w.descriptor).deployment
        constrained = residency_constrained(s, w.namespace, w.name, spec) if spec is not None else None
        if spec is None or constrained is None:
            return self._stays(s, w, source, reason, "no country is allowed by its placement and its SLAs")
        hosted: dict[tuple[str, str], int] = defaultdict(int)
        for r in mine:
            if r.id != source.id:
                hosted[(r.cluster, r.node)] += 1
        candidates: list[ClusterCandidate] | NodeTable = inventory.table(hosted)
        if spec.stateful:
            # The state is handed over as the application wrote it: only to a node of the same architecture.
            candidates = _same_architecture(inventory.candidates(hosted), source)
        detail = Detail.NODES if _size(candidates) <= DETAIL_UP_TO else Detail.COMPACT
        decision = self._decisions.decide(
            w.namespace, w.name, w.version, constrained, [source.index], candidates, detail=detail
        )
        if not decision.assignments:
            return self._stays(s, w, source, reason, decision.summary)
        a = decision.assignments[0]
        workloads.store_decision(s, w, decision)
        subject = workload_subject(w.namespace, w.name)
        record_event(
            s, EventKind.PLACEMENT_DECIDED, subject, decision.summary, version=w.version,
            outcome=decision.outcome.value, assignments=[a.model_dump()],
        )  # fmt: skip
        inventory.allocate([(a.cluster, a.node)], spec.resources.cpu, spec.resources.memory_mib)
        mode = MigrationMode.STATEFUL if spec.stateful else MigrationMode.STATELESS
        target = (a.cluster, a.node, _runtime(decision, a.cluster, a.node))
        row = plan_migration(s, w, source, mode, target, REQUESTED_BY, reason)
        replica_event(
            s,
            EventKind.REPLICA_RESCHEDULED,
            subject,
            source,
            f"replica {source.id} leaves {source.cluster}/{source.node} ({reason}): migration {row.id} ({mode.value}) "
            f"moves it to {a.cluster}/{a.node}; it serves until the switch",
            reason=reason,
            migration=row.id,
            target=f"{a.cluster}/{a.node}",
        )
        return True

    @staticmethod
    def _stays(s: Session, w: WorkloadRow, source: ReplicaRow, reason: str, why: str) -> bool:
        message = (
            f"replica {source.id} cannot leave {source.cluster}/{source.node} ({reason}) and keeps serving there: {why}"
        )
        if w.message != message:  # recorded once per distinct reason, not on every pass
            w.message = message
            record_event(
                s,
                EventKind.PLACEMENT_PENDING,
                workload_subject(w.namespace, w.name),
                message,
                version=w.version,
                replica=source.id,
                reason=reason,
            )
        return False


def _waiting(s: Session) -> list[tuple[ReplicaRow, str, bool]]:
    """Running replicas of current versions on a drained or NotReady cluster or a NotReady node, with the reason
    and whether their cluster is NotReady; not those of a workload being deleted or already moving, nor those whose
    evacuation gave up. Oldest workloads first, lowest index first."""
    drained = ClusterRow.draining.is_(True)
    not_ready = or_(ClusterRow.phase == ClusterPhase.NOT_READY.value, NodeRow.ready.is_(False))
    # The clusters that can hold such a replica, first (a few rows): the replicas are then read through their cluster
    # index instead of joining every replica of the store to its cluster and node (0.5 s a pass at 100,000).
    suspects = set(
        s.scalars(select(ClusterRow.name).where(or_(drained, ClusterRow.phase == ClusterPhase.NOT_READY.value)))
    )
    suspects.update(s.scalars(select(ClusterRow.name).join(NodeRow).where(NodeRow.ready.is_(False))))
    if not suspects:
        return []
    moving = select(MigrationRow.workload_id).where(MigrationRow.phase.in_(ACTIVE_PHASES))
    query = (
        select(ReplicaRow, ClusterRow.draining, ClusterRow.phase)
        .join(WorkloadRow, WorkloadRow.id == ReplicaRow.workload_id)
        .join(ClusterRow, ClusterRow.name == ReplicaRow.cluster)
        .join(NodeRow, and_(NodeRow.cluster_id == ClusterRow.id, NodeRow.name == ReplicaRow.node))
        .where(
            ReplicaRow.cluster.in_(sorted(suspects)),
            ReplicaRow.desired.is_(True),
            ReplicaRow.version == WorkloadRow.version,
            ReplicaRow.phase == ReplicaPhase.RUNNING.value,
            WorkloadRow.deleting.is_(False),
            WorkloadRow.id.not_in(moving),
            or_(drained, not_ready),
        )
        .order_by(ReplicaRow.workload_id, ReplicaRow.index)
    )
    given_up = given_up_evacuations(s)
    return [
        (r, DRAINED if draining else NOT_READY, phase == ClusterPhase.NOT_READY.value)
        for r, draining, phase in s.execute(query)
        if r.id not in given_up
    ]


_DESCRIPTORS = select(WorkloadRow.id, DESCRIPTOR_TEXT)


def _same_architecture(candidates: list[ClusterCandidate], source: ReplicaRow) -> list[ClusterCandidate]:
    arch = next(
        (n.architecture for c in candidates if c.name == source.cluster for n in c.nodes if n.name == source.node),
        None,
    )
    return [replace(c, nodes=tuple(n for n in c.nodes if n.architecture == arch)) for c in candidates]


def _size(candidates: list[ClusterCandidate] | NodeTable) -> int:
    return len(candidates) if isinstance(candidates, NodeTable) else sum(len(c.nodes) for c in candidates)


def _runtime(decision: PlacementDecision, cluster: str, node: str) -> str | None:
    return next((v.runtime for v in decision.candidates if v.cluster == cluster and v.node == node), None)
