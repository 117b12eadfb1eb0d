"""Schedule: the decision engine places a replica for every index a queued workload has none for.

Each decision is stored with its replicas in the workload's own savepoint; a workload that fits nowhere is not
tried again until the inventory (health, schedulability, free capacity) or its version changes; one whose
placement failed is tried again on the next pass.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nemo_kernel.domain import Detail, EventKind, ReplicaPhase, WorkloadDescriptor
from nemo_kernel.orchestrator.decision import DecisionEngine
from nemo_kernel.orchestrator.placement import Inventory, ParsedSpecs
from nemo_kernel.orchestrator.reconcile.phases import StoredReplica, left_to_placement, stored_replicas, update_phases
from nemo_kernel.orchestrator.reconcile.records import isolated_together, replica_event
from nemo_kernel.ppef.press import narrowed
from nemo_kernel.store import Database, slas, workloads
from nemo_kernel.store.clusters import NOT_ANSWERING
from nemo_kernel.store.events import record_event, workload_subject
from nemo_kernel.store.migration_records import given_up_evacuations
from nemo_kernel.store.tables import ReplicaRow, WorkloadRow

NODE_DETAIL_UP_TO = 500
"""Decisions over at most this many nodes are stored with every node's verdict; larger ones compactly (every
cluster's verdict grouped by filter, the chosen and best other nodes), so a 10,000-node continuum does not store
10,000 verdicts per decision."""

SCHEDULE_BATCH = 200
"""Queued workloads considered per pass, by id; also the bound of what the step remembers between passes."""


@dataclass
class _Batch:
    """What the placements of one pass share."""

    inventory: Inventory
    given_up: set[str]
    residency: dict[tuple[str, str], list[str] | None]
    """The countries each workload's SLAs allow, by (namespace, name) (``store.slas.residency_of_workloads``)."""
    after: dict[int, list[StoredReplica]] = field(default_factory=dict)
    """Each placed workload's replicas after its placement (those read before and those it bound), so the phases
    are computed without reading them again. Set, not appended: a part run again in its own savepoint
    (``isolated_together``) replaces what its rolled-back run left."""


class Scheduling:
    """The third step of a pass: placement of queued workloads."""

    def __init__(self, db: Database, decisions: DecisionEngine, specs: ParsedSpecs | None = None) -> None:
        """``specs``: the validated cluster specs the pass's inventory loads share."""
        self._db = db
        self._specs = specs if specs is not None else ParsedSpecs()
        self._decisions = decisions
        self.decisions = decisions
        """The decision engine, for views that explain what it would decide now."""
        # Workload id -> (inventory generation, version) when it last fitted nowhere. Kept only for
        # the workloads of the current batch: one deleted, placed or no longer queued is forgotten on the next
        # pass, so this holds at most SCHEDULE_BATCH entries.
        self.tried: dict[int, tuple[int, int]] = {}

    def __call__(self) -> None:
        """Run the step once; see the module docstring."""
        with self._db.transaction() as s:
            queue = list(
                s.scalars(
                    select(WorkloadRow)
                    .where(WorkloadRow.needs_placement.is_(True), WorkloadRow.deleting.is_(False))
                    .order_by(WorkloadRow.id)
                    .limit(SCHEDULE_BATCH)
                )
            )
            queued = {w.id for w in queue}
            self.tried = {wid: t for wid, t in self.tried.items() if wid in queued}
            if not queue:
                return
            inventory = Inventory.load(s, self._specs)
            replicas = stored_replicas(s, queued)
            # Not those that fitted nowhere at this inventory and version: nothing changed for them since.
            due = [w for w in queue if self.tried.get(w.id) != (inventory.generation, w.version)]
            # The SLAs' PRESS clauses, an input of each decision: one query for the batch (SCHEDULE_BATCH bounds it).
            residency = slas.residency_of_workloads(s, {(w.namespace, w.name) for w in due})
            batch = _Batch(inventory, given_up_evacuations(s), residency)
            works = [(w, partial(self._place, s, w, replicas.get(w.id, []), batch)) for w in due]
            saved = inventory.allocations()
            outcomes = isolated_together(s, works, "placement", undo=lambda: inventory.restore(saved))
            touched: set[int] = set()
            for w, placed in zip(due, outcomes, strict=True):
                if placed:
                    touched.add(w.id)
                elif placed is False:
                    self.tried[w.id] = (inventory.generation, w.version)
                # None: it failed (recorded on the workload); tried again next pass, as the cause may pass (a
                # busy database) and nothing else would bring it back while the inventory stays the same.
            update_phases(s, touched, {wid: batch.after[wid] for wid in touched if wid in batch.after})

    def _place(self, s: Session, w: WorkloadRow, mine: list[StoredReplica], batch: _Batch) -> bool:
        """Place what ``w`` misses; True when it placed something or needs nothing, with its replicas now in
        ``batch.after``."""
        # What it reads (the SLAs, the nodes' ids) and the queue's UPDATE depend on nothing it adds: without
        # autoflush, its rows are written by the savepoint's flush, with the other workloads' of the batch (one
        # statement per table for the batch, not a few per workload).
        with s.no_autoflush:
            bound = self._place_unflushed(s, w, mine, batch)
        if bound is None:
            return False
        batch.after[w.id] = mine + [
            StoredReplica(w.id, r.id, r.index, r.cluster, r.node, r.phase, r.desired, r.version) for r in bound
        ]
        return True

    def _place_unflushed(
        self, s: Session, w: WorkloadRow, mine: list[StoredReplica], batch: _Batch
    ) -> list[ReplicaRow] | None:
        """The replicas it bound (none when nothing was missing); None when it fitted nowhere or has nothing to
        place."""
        inventory, given_up = batch.inventory, batch.given_up
        spec = WorkloadDescriptor.model_validate(w.descriptor).deployment
        if spec is None:  # a catalogue entry is never queued; one queued before it became one has nothing to place
            _clear_queue(s, w.id, w.version)
            return None
        current = [r for r in mine if r.desired and r.version == w.version]
        # An index whose replica is left to placement on a leaving cluster needs a replacement; the old one serves
        # until it runs. One a migration moves (the evacuate step) stays in its place until the migration ends.
        left = [r for r in current if left_to_placement(r, spec.stateful, inventory.leaving, given_up)]
        replaced = {r.index: r for r in left}
        staying = [r for r in current if r not in left]
        missing = sorted(set(range(spec.replicas)) - {r.index for r in staying})
        version = w.version
        if not missing:
            _clear_queue(s, w.id, version)
            return []
        constrained = narrowed(spec, batch.residency[(w.namespace, w.name)])  # the SLAs' PRESS clauses
        if constrained is None:
            _nowhere_allowed(s, w, version)
            return None
        spec = constrained
        hosted: dict[tuple[str, str], int] = defaultdict(int)
        for r in staying:
            hosted[(r.cluster, r.node)] += 1
        table = inventory.table(hosted)
        detail = Detail.NODES if len(table) <= NODE_DETAIL_UP_TO else Detail.COMPACT
        decision = self._decisions.decide(w.namespace, w.name, version, spec, missing, table, detail=detail)
        workloads.store_decision(s, w, decision)
        subject = workload_subject(w.namespace, w.name)
        runtimes = {(v.cluster, v.node): v.runtime for v in decision.candidates if v.node is not None}
        bindings = [
            workloads.Binding(a.index, a.cluster, a.node, runtimes.get((a.cluster, a.node)))
            for a in decision.assignments
        ]
        bound = workloads.bind_replicas(s, w, bindings, cpu=spec.resources.cpu, memory_mib=spec.resources.memory_mib)
        placed = [(a.cluster, a.node) for a in decision.assignments]
        inventory.allocate(placed, spec.resources.cpu, spec.resources.memory_mib)
        for a, replica in zip(decision.assignments, bound, strict=True):
            replica_event(
                s,
                EventKind.REPLICA_SCHEDULED,
                subject,
                replica,
                f"replica {replica.id} placed on {a.cluster}/{a.node}",
                index=a.index,
            )
            old = replaced.get(a.index)
            if old is not None:
                reason = inventory.leaving[old.cluster]
                how = "; no state hand-off: " + _why_no_handoff(old, reason, given_up)
                replica_event(
                    s,
                    EventKind.REPLICA_RESCHEDULED,
                    subject,
                    old,
                    f"replica {old.id} leaves {old.cluster}/{old.node} (cluster {reason}): {replica.id} replaces it "
                    f"on {a.cluster}/{a.node}; {old.id} stops once {replica.id} runs{how}",
                    reason=reason,
                    replacement=replica.id,
                )
        placed_all = len(decision.assignments) == len(missing)
        kind = EventKind.PLACEMENT_DECIDED if decision.assignments else EventKind.PLACEMENT_PENDING
        record_event(
            s,
            kind,
            subject,
            decision.summary,
            version=version,
            outcome=decision.outcome.value,
            assignments=[a.model_dump() for a in decision.assignments],
        )
        if placed_all:
            _clear_queue(s, w.id, version)
        else:
            self.tried[w.id] = (inventory.generation, version)
            if not current and not decision.assignments:
                w.message = decision.summary  # the phase is shown next to it: not repeated
        return bound


def _why_no_handoff(old: StoredReplica, reason: str, given_up: set[str]) -> str:
    """Why a replica leaving ``reason`` is replaced by placement rather than moved by a migration (the event says
    so: a stateful workload's state does not follow it)."""
    if old.phase != ReplicaPhase.RUNNING.value:
        return f"it is {old.phase}"
    if reason == NOT_ANSWERING:
        if old.id in given_up:
            return "the cluster does not answer, so its state cannot be exported: it is gone with the cluster"
        return "the cluster does not answer and the workload is stateless"
    return "its migration ended without moving it (see the workload's migration events)"


def _nowhere_allowed(s: Session, w: WorkloadRow, version: int) -> None:
    message = "no country is in both placement.countries and the data residency of the workload's SLAs"
    if w.message != message:  # recorded once, not on every pass
        w.message = message
        record_event(s, EventKind.PLACEMENT_PENDING, workload_subject(w.namespace, w.name), message, version=version)


def _clear_queue(s: Session, workload_id: int, version: int) -> None:
    # Conditional on the version, so a newer apply that arrived meanwhile stays queued. "fetch": the session learns
    # which row matched from the statement; the default evaluates the criteria on every object the session holds
    # (tens of thousands of replicas in a large pass, once per workload).
    s.execute(
        update(WorkloadRow)
        .where(WorkloadRow.id == workload_id, WorkloadRow.version == version)
        .values(needs_placement=False)
        .execution_options(synchronize_session="fetch")
    )
