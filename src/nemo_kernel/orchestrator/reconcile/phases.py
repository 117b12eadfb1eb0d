"""Workload phases: the pure rule, and its application after each step (finishing moves, rollouts and deletions).

Below the steps, above ``records``: every step that changes replicas ends by calling :func:`update_phases`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Protocol, TypeVar

from sqlalchemy import Row, Text, cast, select
from sqlalchemy.orm import Session

from nemo_kernel.domain import EventKind, ReplicaPhase, WorkloadDescriptor, WorkloadPhase
from nemo_kernel.orchestrator.reconcile.records import isolated_together, replica_event
from nemo_kernel.store import in_chunks, workloads
from nemo_kernel.store.clusters import NOT_ANSWERING, leaving_clusters
from nemo_kernel.store.events import record_event, workload_subject
from nemo_kernel.store.migration_records import moving_replicas
from nemo_kernel.store.tables import ReplicaRow, WorkloadRow


class PlacedReplica(Protocol):
    """What the phase rules read of a replica (a stored ``ReplicaRow`` is one)."""

    @property
    def index(self) -> int: ...
    @property
    def cluster(self) -> str: ...
    @property
    def phase(self) -> str: ...
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=PlacedReplica)

DESCRIPTORS_KEPT = 10_000
"""Validated descriptors kept, by their stored text (a few hundred bytes each): one per workload of a 10,000-workload
store; beyond that the oldest are validated again when next needed."""


def workload_phase(wanted: int | None, current: int, ready: int, was: str) -> WorkloadPhase:
    """The phase of a workload, from its replicas of the current version.

    ``wanted`` is the replica count of its deployment (``None`` for a catalogue entry, which runs nothing),
    ``current`` how many desired replicas of the current version it has, ``ready`` how many of its indices are
    served (see :func:`ready_count`), ``was`` its stored phase: a workload that was serving and no longer serves
    every index is Degraded, one that never did is still Deploying.
    """
    if wanted is None:
        return WorkloadPhase.REGISTERED
    if ready >= wanted:
        return WorkloadPhase.RUNNING
    if current == 0:
        return WorkloadPhase.PENDING
    if was in (WorkloadPhase.RUNNING, WorkloadPhase.DEGRADED):
        return WorkloadPhase.DEGRADED
    return WorkloadPhase.DEPLOYING


def ready_count(current: Iterable[PlacedReplica], leaving: Mapping[str, str]) -> int:
    """How many indices have a running replica that counts as serving.

    A replica moving off a drained cluster still serves until its replacement runs; one on a cluster that does
    not answer may have died with it, so it is not counted, though it keeps its place until its replacement runs.
    """
    return len(
        {r.index for r in current if r.phase == ReplicaPhase.RUNNING.value and leaving.get(r.cluster) != NOT_ANSWERING}
    )


def left_to_placement(r: PlacedReplica, stateful: bool, leaving: Mapping[str, str], given_up: set[str]) -> bool:
    """Whether a replica on a leaving cluster is replaced by placement (a fresh replica, no state hand-off)
    rather than moved by a migration (the evacuate step).

    So are one that is not Running (nothing serves there, no state to hand over), one whose evacuation the engine
    gave up (``given_up``, see ``store.migration_records.given_up_evacuations``: a NotReady cluster cannot export
    its state, or several attempts ended without moving it),
    and a stateless one on a NotReady cluster: it has no state to hand over, and a migration, which waits for its
    source to stop, would hold back the workload's other replicas behind a cluster that may never answer.
    """
    why = leaving.get(r.cluster)
    if why is None:
        return False
    return r.phase != ReplicaPhase.RUNNING.value or r.id in given_up or (why == NOT_ANSWERING and not stateful)


@dataclass(slots=True, eq=False)
class StoredReplica:
    """What the steps read of a replica row to decide, read as a plain tuple (no ORM object): see
    :func:`stored_replicas`. The rows a step then changes are loaded as objects. Not frozen and compared by
    identity: built by the hundred thousand in a large pass, where a frozen dataclass costs five times more."""

    workload_id: int
    id: str
    index: int
    cluster: str
    node: str
    phase: str
    desired: bool
    version: int


_REPLICAS = select(
    ReplicaRow.workload_id,
    ReplicaRow.id,
    ReplicaRow.index,
    ReplicaRow.cluster,
    ReplicaRow.node,
    ReplicaRow.phase,
    ReplicaRow.desired,
    ReplicaRow.version,
).order_by(ReplicaRow.version, ReplicaRow.index, ReplicaRow.created_at)


def stored_replicas(s: Session, workload_ids: Iterable[int]) -> dict[int, list[StoredReplica]]:
    """The replicas of many workloads as plain tuples, by workload, ordered by version then index (as
    ``store.workloads.replicas_by_workload``), in chunked queries."""
    grouped: dict[int, list[StoredReplica]] = defaultdict(list)
    for chunk in in_chunks(sorted(set(workload_ids))):
        for r in s.execute(_REPLICAS.where(ReplicaRow.workload_id.in_(chunk))):
            grouped[r.workload_id].append(StoredReplica(*r))
    return grouped


DESCRIPTOR_TEXT = cast(WorkloadRow.descriptor, Text).label("descriptor")
"""A workload's descriptor as its stored text, the key of :func:`deployment_shape`."""


_WORKLOADS = select(
    WorkloadRow.id,
    WorkloadRow.version,
    WorkloadRow.phase,
    WorkloadRow.message,
    WorkloadRow.needs_placement,
    WorkloadRow.deleting,
    DESCRIPTOR_TEXT,
)
_StoredWorkload = Row[int, int, str, str, bool, bool, str]  # a row of _WORKLOADS


@dataclass(frozen=True)
class Shape:
    """What the pass reads of a workload's deployment: its replica count and whether it is stateful."""

    replicas: int
    stateful: bool


@lru_cache(maxsize=DESCRIPTORS_KEPT)
def deployment_shape(descriptor: str) -> Shape | None:
    """The deployment of a descriptor stored as ``descriptor`` (its JSON text; None for a catalogue entry); raises
    ValueError when it is not a valid descriptor. Kept by the text, so a pass validates each workload's descriptor
    once, not once per step and pass."""
    deployment = WorkloadDescriptor.model_validate(json.loads(descriptor)).deployment
    return None if deployment is None else Shape(deployment.replicas, deployment.stateful)


def is_stateful(descriptor: str, *, unreadable: bool) -> bool:
    """Whether the deployment of a descriptor stored as ``descriptor`` is stateful (False for a catalogue entry);
    ``unreadable`` when this version's checks refuse it: each step says which way leads to the error being recorded
    on the workload."""
    try:
        shape = deployment_shape(descriptor)
    except ValueError:
        return unreadable
    return shape is not None and shape.stateful


def update_phases(s: Session, workload_ids: set[int], known: Mapping[int, list[StoredReplica]] | None = None) -> None:
    """Recompute workload phases; finish moves and rollouts (what was replaced goes) and deletions.

    The workloads and replicas are read as plain tuples first; only a workload with something to write (a phase,
    its message, a replica to release, a deletion to finish) or whose descriptor does not read is loaded as
    objects and goes through the writing rules, in its own savepoint. A pass over 1,000 unchanged workloads of
    100,000 replicas builds no object and writes nothing.

    ``known``: the replicas of some of the workloads (every one of each, as :func:`stored_replicas` reads them) that
    the caller read in this transaction and has not changed since, so they are not read again; a workload missing
    from it is read.
    """
    if not workload_ids:
        return
    known = known or {}
    leaving = leaving_clusters(s)
    migrating = moving_replicas(s)
    to_write: dict[int, tuple[str, list[StoredReplica]]] = {}  # workload id -> (descriptor text, replicas)
    for chunk in in_chunks(sorted(workload_ids)):
        mine = {wid: known[wid] for wid in chunk if wid in known}
        mine.update(stored_replicas(s, [wid for wid in chunk if wid not in known]))
        for stored in s.execute(_WORKLOADS.where(WorkloadRow.id.in_(chunk))):
            if stored.deleting or _differs(stored, mine.get(stored.id, []), leaving, migrating):
                to_write[stored.id] = (stored.descriptor, mine.get(stored.id, []))
    if not to_write:
        return
    updates = []
    for w in s.scalars(select(WorkloadRow).where(WorkloadRow.id.in_(list(to_write)))):
        descriptor, replicas = to_write[w.id]
        if w.deleting:
            placed = [r.id for r in replicas if r.desired]
            if placed:
                # Bound after the deletion released the others: a placement that read the queue before the deletion
                # committed (PostgreSQL reads committed rows per statement) wrote its replica after. Released like
                # the others, or the deletion would wait for it forever.
                for row in s.scalars(select(ReplicaRow).where(ReplicaRow.id.in_(placed))):
                    workloads.release_replica(s, row)
            elif not replicas:
                record_event(
                    s,
                    EventKind.WORKLOAD_DELETED,
                    workload_subject(w.namespace, w.name),
                    "all replicas stopped; workload deleted",
                )
                s.delete(w)
            continue
        updates.append((w, partial(_update_phase, s, w, descriptor, replicas, leaving, migrating)))
    isolated_together(s, updates, "status update")


def _differs(w: _StoredWorkload, mine: list[StoredReplica], leaving: dict[str, str], migrating: set[str]) -> bool:
    """Whether :func:`_update_phase` would write anything for this workload (True when its descriptor does not
    read: the writing path records why)."""
    try:
        shape = deployment_shape(w.descriptor)
    except ValueError:
        return True
    if shape is None:
        return False  # a catalogue entry: nothing to update
    wanted = shape.replicas
    current = [r for r in mine if r.desired and r.version == w.version]
    if any(others for _, others in _replaced([r for r in current if r.id not in migrating], leaving)):
        return True
    phase, message, done = _status(wanted, w.version, current, leaving, w.phase)
    if done and not w.needs_placement and any(r.desired and r.version != w.version for r in mine):
        return True  # older versions to release
    return phase.value != w.phase or ((phase is not WorkloadPhase.PENDING or bool(current)) and message != w.message)


def _status(
    wanted: int, version: int, current: Sequence[PlacedReplica], leaving: Mapping[str, str], was: str
) -> tuple[WorkloadPhase, str, bool]:
    """A workload's phase and message from its current replicas, and whether every index is served where it stays
    (the rollout is done: older versions may go)."""
    ready = ready_count(current, leaving)
    staying = {r.index for r in current if r.cluster not in leaving}
    moving = sorted({r.cluster for r in current if r.cluster in leaving})
    message = f"{ready}/{wanted} replicas of version {version} running"
    if moving:
        message += f"; moving off {', '.join(moving)} once replacements run"
    done = ready >= wanted and staying >= set(range(wanted))
    return workload_phase(wanted, len(current), ready, was), message, done


def _replaced(current: Sequence[R], leaving: Mapping[str, str]) -> Iterator[tuple[R, list[R]]]:
    """Per index with a replica running on a cluster that stays and other replicas: the one kept and the others."""
    by_index: dict[int, list[R]] = defaultdict(list)
    for r in current:
        by_index[r.index].append(r)
    running = ReplicaPhase.RUNNING.value
    for group in by_index.values():
        if len(group) < 2:  # most indices: nothing to compare, and no list built per replica
            continue
        serving = [r for r in group if r.cluster not in leaving and r.phase == running]
        if serving:
            yield serving[0], [r for r in group if r is not serving[0]]


def _update_phase(
    s: Session, w: WorkloadRow, descriptor: str, mine: list[StoredReplica], leaving: dict[str, str], migrating: set[str]
) -> None:
    """``descriptor``: the workload's descriptor as stored text (its shape is kept validated by that text).

    Without autoflush: what it reads (the rows it releases, by id) does not depend on what it wrote, so its changes
    are written once, when the savepoint ends, not before each statement."""
    with s.no_autoflush:
        _update_phase_unflushed(s, w, descriptor, mine, leaving, migrating)


def _update_phase_unflushed(
    s: Session, w: WorkloadRow, descriptor: str, mine: list[StoredReplica], leaving: dict[str, str], migrating: set[str]
) -> None:
    subject = workload_subject(w.namespace, w.name)
    shape = deployment_shape(descriptor)  # raises, for the savepoint to record, when the descriptor does not read
    if shape is None:
        return  # a catalogue entry: Registered since it became one, with the reason as its message
    wanted = shape.replicas
    current = [r for r in mine if r.desired and r.version == w.version]
    released = _release_replaced(s, subject, [r for r in current if r.id not in migrating], leaving)
    current = [r for r in current if r.id not in released]
    phase, message, done = _status(wanted, w.version, current, leaving, w.phase)
    if done and not w.needs_placement:
        old = _rows(s, [r.id for r in mine if r.desired and r.version != w.version])
        for row in old:
            workloads.release_replica(s, row)
        if old:
            record_event(
                s,
                EventKind.DEPLOYMENT_ROLLED_OUT,
                subject,
                f"version {w.version} serves; {len(old)} replicas of older versions stopping",
                version=w.version,
            )
    if phase.value != w.phase:
        ready = ready_count(current, leaving)
        record_event(s, EventKind.for_phase(phase), subject, message, ready=ready, desired=wanted)
        w.phase = phase.value
    if phase is not WorkloadPhase.PENDING or current:
        w.message = message


def _rows(s: Session, ids: list[str]) -> list[ReplicaRow]:
    """The replica rows of ``ids`` as objects (the few a workload's update changes), in ``ids``' order."""
    if not ids:
        return []
    found = {r.id: r for r in s.scalars(select(ReplicaRow).where(ReplicaRow.id.in_(ids)))}
    return [found[i] for i in ids if i in found]


def _release_replaced(s: Session, subject: str, current: list[StoredReplica], leaving: dict[str, str]) -> set[str]:
    """Make-before-break: once one replica of an index runs on a cluster that stays, the others of that index go.

    The others are the replica it replaces on a drained or silent cluster, or, when a silent cluster came back
    before the replacement ran, the spare of the two. The source and target of a running migration are not
    given here: the migration decides which of them stays, and when. Returns the ids released.
    """
    released: set[str] = set()
    for keep, others in _replaced(current, leaving):
        for r in _rows(s, [o.id for o in others]):
            workloads.release_replica(s, r)
            released.add(r.id)
            replica_event(
                s,
                EventKind.REPLICA_REPLACED,
                subject,
                r,
                f"replica {r.id} on {r.cluster}/{r.node} stops: {keep.id} runs in its place "
                f"on {keep.cluster}/{keep.node}",
                replacement=keep.id,
            )
    return released
