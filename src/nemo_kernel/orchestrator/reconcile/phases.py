"""Workload phases: the pure rule, and its application after each step (finishing moves, rollouts and deletions).

Below the steps, above ``records``: every step that changes replicas ends by calling :func:`update_phases`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from nemo_kernel.domain import EventKind, ReplicaPhase, WorkloadDescriptor, WorkloadPhase
from nemo_kernel.orchestrator.reconcile.records import isolated, replica_event
from nemo_kernel.store import workloads
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


def update_phases(s: Session, workload_ids: set[int]) -> None:
    """Recompute workload phases; finish moves and rollouts (what was replaced goes) and deletions."""
    if not workload_ids:
        return
    rows = list(s.scalars(select(WorkloadRow).where(WorkloadRow.id.in_(list(workload_ids)))))
    replicas = workloads.replicas_by_workload(s, [w.id for w in rows])
    leaving = leaving_clusters(s)
    migrating = moving_replicas(s)
    for w in rows:
        mine = replicas.get(w.id, [])
        if w.deleting:
            if not mine:
                record_event(
                    s,
                    EventKind.WORKLOAD_DELETED,
                    workload_subject(w.namespace, w.name),
                    "all replicas stopped; workload deleted",
                )
                s.delete(w)
            continue
        isolated(s, w, "status update", partial(_update_phase, s, w, mine, leaving, migrating))


def _update_phase(
    s: Session, w: WorkloadRow, mine: list[ReplicaRow], leaving: dict[str, str], migrating: set[str]
) -> None:
    subject = workload_subject(w.namespace, w.name)
    deployment = WorkloadDescriptor.model_validate(w.descriptor).deployment
    if deployment is None:
        return  # a catalogue entry: Registered since it became one, with the reason as its message
    wanted = deployment.replicas
    current = [r for r in mine if r.desired and r.version == w.version]
    _release_replaced(s, subject, [r for r in current if r.id not in migrating], leaving)
    current = [r for r in current if r.desired]
    ready = ready_count(current, leaving)
    staying = {r.index for r in current if r.cluster not in leaving}
    moving = sorted({r.cluster for r in current if r.cluster in leaving})
    if ready >= wanted and staying >= set(range(wanted)) and not w.needs_placement:
        old = [r for r in mine if r.desired and r.version != w.version]
        for r in old:
            workloads.release_replica(s, r)
        if old:
            record_event(
                s,
                EventKind.DEPLOYMENT_ROLLED_OUT,
                subject,
                f"version {w.version} serves; {len(old)} replicas of older versions stopping",
                version=w.version,
            )
    phase = workload_phase(wanted, len(current), ready, w.phase)
    message = f"{ready}/{wanted} replicas of version {w.version} running"
    if moving:
        message += f"; moving off {', '.join(moving)} once replacements run"
    if phase.value != w.phase:
        record_event(s, EventKind.for_phase(phase), subject, message, ready=ready, desired=wanted)
        w.phase = phase.value
    if phase is not WorkloadPhase.PENDING or current:
        w.message = message


def _release_replaced(s: Session, subject: str, current: list[ReplicaRow], leaving: dict[str, str]) -> None:
    """Make-before-break: once one replica of an index runs on a cluster that stays, the others of that index go.

    The others are the replica it replaces on a drained or silent cluster, or, when a silent cluster came back
    before the replacement ran, the spare of the two. The source and target of a running migration are not
    given here: the migration decides which of them stays, and when.
    """
    by_index: dict[int, list[ReplicaRow]] = defaultdict(list)
    for r in current:
        by_index[r.index].append(r)
    for group in by_index.values():
        serving = [r for r in group if r.cluster not in leaving and r.phase == ReplicaPhase.RUNNING.value]
        if not serving or len(group) == 1:
            continue
        keep = serving[0]
        for r in group:
            if r is keep:
                continue
            workloads.release_replica(s, r)
            replica_event(
                s,
                EventKind.REPLICA_REPLACED,
                subject,
                r,
                f"replica {r.id} on {r.cluster}/{r.node} stops: {keep.id} runs in its place "
                f"on {keep.cluster}/{keep.node}",
                replacement=keep.id,
            )
