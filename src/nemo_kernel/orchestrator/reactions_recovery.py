"""Move back after recovery: a workload with ``placement.after_recovery: move_back`` gets back, on a cluster that
recovered (``cluster.ready`` after NotReady, ``cluster.uncordoned`` after a drain), the replicas the control plane
moved off it while it was away.

What was moved off: the ``replica.rescheduled`` events naming the cluster with one of the engine's leaving reasons
(drained, not ready, not answering), recorded during its last absence (:func:`absence`: from the first
``cluster.not_ready`` / ``cluster.draining`` after it was last up to the recovery). Both ways the engine moves a
replica record one: an evacuation's migration (``data.migration``) and a placement's replacement
(``data.replacement``). What moves back is the replica that holds the same index now.

How: through the migration service, one move per workload at a time, reason ``recovered``, checked and stored by
:meth:`MigrationCommands.plan` (the check of ``nemo migrate --to CLUSTER``: every filter and capacity, by the placing
engine); the next one when that move ends (``migration.completed`` / ``migration.failed``, also reacted to here).
A replica the cluster does not admit now stays where it is, with a ``replica.not_moved_back`` event saying why.

How many at once: moves back count with the engine's evacuations against ``NEMO_EVACUATION_CONCURRENCY``
(``evacuations_in_flight``), so a cluster returning with 500 such workloads does not start 500 migrations. Those
that find no slot wait in a queue kept in the store: ``cluster.moves_back_waiting`` events on the cluster, the newest
of which says where the recovery's workload list (re-derived from the absence, in name order) stands (``next``) and
which workloads wait to go on (``also``: their own move ended when no slot was free). Every end of a migration frees
a slot and serves the queues, oldest recovery first; a restart reads them from the store like anything else.

Never moved back: a replica someone moved since it left (a migration without an engine reason: a user, a module, an
SLA policy, the rebalancer); an index already moved back (or refused) in this recovery; anything for a cluster that
left again: its absence is then the new one, so what left before stays where it is. A move back is not a leaving
reason, so it never causes one. Idempotent: the index of a planned move back is done, so a run that happens again
(a restart between the plan and its marker cannot, the two commit together) plans nothing twice.

Why bound reactions and not module-level ones: the check needs the control plane's decision engine (its weights,
criteria and latency matrix), so :func:`recovery_reactions` binds them to the plane's :class:`MigrationCommands` and
``ControlPlane.reaction_registry`` adds them to the default registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nemo_kernel.domain import (
    AfterRecovery,
    ClusterPhase,
    Event,
    EventKind,
    MigrationRequest,
    ReplicaPhase,
    WorkloadDescriptor,
)
from nemo_kernel.domain.errors import ApiError, refusal
from nemo_kernel.orchestrator.commands import MigrationCommands
from nemo_kernel.orchestrator.reactions import Reaction
from nemo_kernel.orchestrator.reconcile.evacuate import NOT_READY
from nemo_kernel.store import NotFound, workloads
from nemo_kernel.store.clusters import DRAINED, NOT_ANSWERING
from nemo_kernel.store.events import cluster_subject, record_event, workload_subject
from nemo_kernel.store.migration_records import RECOVERED, active_of_workload, evacuations_in_flight
from nemo_kernel.store.tables import ClusterRow, EventRow, MigrationRow, ReplicaRow, WorkloadRow

REQUESTED_BY = "nemo:recovery"
"""``requested_by`` of the moves back."""

LEAVING_REASONS = frozenset({DRAINED, NOT_READY, NOT_ANSWERING})
"""Reasons of ``replica.rescheduled`` events that moved a replica off a leaving cluster (the engine's own moves)."""

HISTORY = 1000
"""Lifecycle events of a cluster read to find its last absence: a cluster that flapped more often than this within
one absence is taken as up before the oldest of them."""

RECENT_MOVES = 200
"""``replica.rescheduled`` events of a workload read, when one of its moves ends, for the clusters it left."""

_LIFECYCLE = (
    EventKind.CLUSTER_REGISTERED,
    EventKind.CLUSTER_READY,
    EventKind.CLUSTER_NOT_READY,
    EventKind.CLUSTER_DRAINING,
    EventKind.CLUSTER_CORDONED,
    EventKind.CLUSTER_UNCORDONED,
)


@dataclass(frozen=True)
class Absence:
    """A cluster's last time away: from the event that made it leave (``left_at``) to the one it was back at."""

    cluster: str
    left_at: int
    back_at: int


def absence(s: Session, cluster: str) -> Absence | None:
    """The cluster's last absence if it is up now (Ready, neither cordoned nor drained) and was up before it; None
    when it is not up, or nothing made it leave since it was registered."""
    row = s.scalar(select(ClusterRow).where(ClusterRow.name == cluster))
    if row is None or row.phase != ClusterPhase.READY.value or row.cordoned or row.draining:
        return None
    query = (
        select(EventRow.id, EventRow.kind)
        .where(EventRow.subject == cluster_subject(cluster), EventRow.kind.in_([k.value for k in _LIFECYCLE]))
        .order_by(EventRow.id.desc())
        .limit(HISTORY)
    )
    ready, cordoned = True, False
    left_at: int | None = None
    last: Absence | None = None
    for event_id, kind in reversed(s.execute(query).all()):
        was_up = ready and not cordoned
        if kind == EventKind.CLUSTER_REGISTERED:
            ready, cordoned, left_at, last = False, False, None, None  # a new cluster of that name: nothing left it
            continue
        if kind == EventKind.CLUSTER_READY:
            ready = True
        elif kind == EventKind.CLUSTER_UNCORDONED:
            cordoned = False
        elif kind == EventKind.CLUSTER_CORDONED:
            cordoned = True  # no new replicas, but nothing leaves
        else:  # not ready, draining: its replicas leave
            ready = ready and kind != EventKind.CLUSTER_NOT_READY
            cordoned = cordoned or kind == EventKind.CLUSTER_DRAINING
            if left_at is None:
                left_at = event_id
        if not was_up and ready and not cordoned:
            last = None if left_at is None else Absence(cluster, left_at, event_id)
            left_at = None
    return last if ready and not cordoned else None


@dataclass
class _Queue:
    """Where a recovery's moves back stand: the absence, the workloads moved off during it (by name), how far
    through them it is, and the workloads waiting to go on."""

    away: Absence
    subjects: list[str]
    next: int = 0
    also: tuple[str, ...] = ()

    @property
    def waiting(self) -> int:
        return len(self.also) + len(self.subjects) - self.next


class MoveBack:
    """The reactions; holds the control plane's migration commands (and through them its decision engine)."""

    def __init__(self, migrations: MigrationCommands, concurrency: int) -> None:
        """``migrations`` checks and stores each move back; at most ``concurrency`` of the engine's moves (moves
        back and evacuations) run at once."""
        self._migrations = migrations
        self._concurrency = concurrency

    def on_recovery(self, s: Session, event: Event) -> None:
        """``cluster.ready`` / ``cluster.uncordoned``: start moving back each workload's replicas moved off it."""
        kind, _, name = event.subject.partition("/")
        if kind != "cluster":
            return
        away = absence(s, name)
        if away is None or away.back_at != event.id:
            return  # not a return from an absence, or the cluster changed since: a later event decides
        self._serve(s, _Queue(away, _moved_off(s, away)))

    def on_move_ended(self, s: Session, event: Event) -> None:
        """``migration.completed`` / ``migration.failed``: the workload's next move back, if one is left; then the
        slot it held, and any other free one, goes to the workloads waiting in the recoveries' queues."""
        migration_id = event.data.get("migration")
        migration = s.get(MigrationRow, migration_id) if isinstance(migration_id, int) else None
        if migration is not None:
            self._go_on(s, migration)
        for queue in sorted(_queues(s), key=lambda q: q.away.back_at):  # the oldest recovery first
            if not self._slots(s):
                return
            self._serve(s, queue)

    def _go_on(self, s: Session, migration: MigrationRow) -> None:
        """The next move back of the migration's workload, or its place in the queues when no slot is free."""
        w = s.get(WorkloadRow, migration.workload_id)
        if w is None or _policy(w) is not AfterRecovery.MOVE_BACK:
            return
        subject = workload_subject(w.namespace, w.name)
        query = (
            select(EventRow.data)
            .where(EventRow.subject == subject, EventRow.kind == EventKind.REPLICA_RESCHEDULED.value)
            .order_by(EventRow.id.desc())
            .limit(RECENT_MOVES)
        )
        left = {str(d["cluster"]) for d in s.scalars(query) if d.get("reason") in LEAVING_REASONS and "cluster" in d}
        if migration.reason == RECOVERED:
            left.add(migration.target_cluster)
        recovered = [away for cluster in sorted(left) if (away := absence(s, cluster)) is not None]
        if self._slots(s):
            for away in recovered:
                if self._next(s, w, away):
                    return  # one move per workload at a time
            return
        for away in recovered:  # it waits in each queue it may have moves in; serving it where none is left is free
            queue = _queue(s, away)
            if queue is None:  # nothing waited there: the recovery's list was served whole
                subjects = _moved_off(s, away)
                queue = _Queue(away, subjects, len(subjects))
            if subject not in queue.also:
                self._record(s, _Queue(away, queue.subjects, queue.next, (*queue.also, subject)))

    def _slots(self, s: Session) -> int:
        """How many more of the engine's moves may start now."""
        return max(0, self._concurrency - evacuations_in_flight(s))

    def _serve(self, s: Session, queue: _Queue) -> None:
        """Start the queue's moves back while slots are free; record where it stands when some wait."""
        also, at = list(queue.also), queue.next
        free = self._slots(s)
        while free and (also or at < len(queue.subjects)):
            if also:
                subject = also.pop(0)
            else:
                subject, at = queue.subjects[at], at + 1
            w = _workload(s, subject)
            if w is not None and self._next(s, w, queue.away):
                free -= 1  # a workload that had nothing left to move (or is moving: its end goes on) costs none
        self._record(s, _Queue(queue.away, queue.subjects, at, tuple(also)))

    def _record(self, s: Session, queue: _Queue) -> None:
        """Store where a recovery's queue stands, when that changed and something waits or waited."""
        stored = _position(s, queue.away)
        if stored == (queue.next, queue.also) or (stored is None and queue.waiting == 0):
            return
        cluster = queue.away.cluster
        text = (
            f"{queue.waiting} workload(s) wait for a migration slot (NEMO_EVACUATION_CONCURRENCY) to move back to "
            f"{cluster}"
            if queue.waiting
            else f"no workload waits any more to move back to {cluster}"
        )
        record_event(
            s, EventKind.CLUSTER_MOVES_BACK_WAITING, cluster_subject(cluster), text,
            back_at=queue.away.back_at, next=queue.next, also=list(queue.also), waiting=queue.waiting,
        )  # fmt: skip

    def _next(self, s: Session, w: WorkloadRow, away: Absence) -> bool:
        """Plan the workload's next move back to ``away.cluster``; whether one was planned."""
        if w.deleting or _policy(w) is not AfterRecovery.MOVE_BACK or active_of_workload(s, w.id) is not None:
            return False  # a running move's end brings the next
        subject = workload_subject(w.namespace, w.name)
        left = _left_indexes(s, subject, away)
        settled = _settled_indexes(s, subject, away)
        current = [
            r for r in workloads.replicas_by_workload(s, [w.id]).get(w.id, []) if r.desired and r.version == w.version
        ]
        for index in sorted(left - settled):
            here = [r for r in current if r.index == index]
            source = next((r for r in here if r.phase == ReplicaPhase.RUNNING.value), None)
            if source is None or any(r.cluster == away.cluster for r in here):
                continue  # nothing running to move, or it is back already
            request = MigrationRequest.model_validate(
                {"workload": f"{w.namespace}/{w.name}", "replica": source.id, "to": {"cluster": away.cluster}}
            )
            try:
                with s.begin_nested():
                    move = self._migrations.plan(s, request, REQUESTED_BY, RECOVERED)
            except (ApiError, NotFound, ValidationError) as exc:
                _stays(s, subject, source, away, index, refusal(exc))
                continue
            record_event(
                s, EventKind.REPLICA_MOVING_BACK, subject,
                f"replica {source.id} moves back from {source.cluster}/{source.node} to {away.cluster}/"
                f"{move.target_node}: {away.cluster} recovered (placement.after_recovery move_back), migration "
                f"{move.id}", replica=source.id, cluster=source.cluster, node=source.node, index=index,
                target_cluster=away.cluster, migration=move.id,
            )  # fmt: skip
            return True
        return False


def recovery_reactions(migrations: MigrationCommands, concurrency: int) -> tuple[Reaction, ...]:
    """The move-back reactions, bound to the control plane's migration commands and its bound on the engine's
    moves in flight (``NEMO_EVACUATION_CONCURRENCY``)."""
    move_back = MoveBack(migrations, concurrency)
    return (
        Reaction(
            f"{__name__}.on_recovery",
            (EventKind.CLUSTER_READY, EventKind.CLUSTER_UNCORDONED),
            move_back.on_recovery,
        ),
        Reaction(
            f"{__name__}.on_move_ended",
            (EventKind.MIGRATION_COMPLETED, EventKind.MIGRATION_FAILED),
            move_back.on_move_ended,
        ),
    )


def _moved_off(s: Session, away: Absence) -> list[str]:
    """The workloads with a replica moved off the cluster during its absence, by subject (name order)."""
    query = (
        select(EventRow.subject)
        .where(
            EventRow.kind == EventKind.REPLICA_RESCHEDULED.value,
            EventRow.id > away.left_at,
            EventRow.id < away.back_at,
            EventRow.data["cluster"].as_string() == away.cluster,
        )
        .distinct()
    )
    return sorted(s.scalars(query))


def _position(s: Session, away: Absence) -> tuple[int, tuple[str, ...]] | None:
    """Where the recovery's queue stood when last recorded (``next``, ``also``); None when nothing waited in it."""
    query = (
        select(EventRow.data)
        .where(
            EventRow.subject == cluster_subject(away.cluster),
            EventRow.kind == EventKind.CLUSTER_MOVES_BACK_WAITING.value,
            EventRow.id > away.back_at,
        )
        .order_by(EventRow.id.desc())
        .limit(1)
    )
    data = s.scalar(query)
    if data is None or data.get("back_at") != away.back_at:
        return None
    return int(data["next"]), tuple(str(x) for x in data["also"])


def _queue(s: Session, away: Absence) -> _Queue | None:
    """The recovery's queue as last recorded; None when nothing waited in it."""
    position = _position(s, away)
    return None if position is None else _Queue(away, _moved_off(s, away), *position)


def _queues(s: Session) -> list[_Queue]:
    """The queues where workloads wait, of clusters still back from the absence they belong to, oldest first."""
    newest = (
        select(func.max(EventRow.id))
        .where(EventRow.kind == EventKind.CLUSTER_MOVES_BACK_WAITING.value)
        .group_by(EventRow.subject)
    )
    rows = s.execute(select(EventRow.subject, EventRow.data).where(EventRow.id.in_(newest)).order_by(EventRow.id))
    out = []
    for subject, data in rows:
        if not data.get("waiting"):
            continue
        away = absence(s, subject.partition("/")[2])
        queue = None if away is None or away.back_at != data.get("back_at") else _queue(s, away)
        if queue is not None:
            out.append(queue)
    return out


def _workload(s: Session, subject: str) -> WorkloadRow | None:
    kind, _, ref = subject.partition("/")
    namespace, _, name = ref.partition("/")
    if kind != "workload" or not name:
        return None
    return s.scalar(select(WorkloadRow).where(WorkloadRow.namespace == namespace, WorkloadRow.name == name))


def _policy(w: WorkloadRow) -> AfterRecovery:
    try:
        deployment = WorkloadDescriptor.model_validate(w.descriptor).deployment
    except ValidationError:  # stored by an older NEMO and refused now: it stays (and the others' moves go on)
        return AfterRecovery.STAY
    return AfterRecovery.STAY if deployment is None else deployment.placement.after_recovery


def _left_indexes(s: Session, subject: str, away: Absence) -> set[int]:
    """Indexes of the workload's replicas the engine moved off the cluster during its absence."""
    query = select(EventRow.data).where(
        EventRow.subject == subject,
        EventRow.kind == EventKind.REPLICA_RESCHEDULED.value,
        EventRow.id > away.left_at,
        EventRow.id < away.back_at,
    )
    migrations: list[int] = []
    replacements: list[str] = []
    for data in s.scalars(query):
        if data.get("cluster") != away.cluster or data.get("reason") not in LEAVING_REASONS:
            continue
        if isinstance(data.get("migration"), int):
            migrations.append(data["migration"])
        elif isinstance(data.get("replacement"), str):
            replacements.append(data["replacement"])
    found = set(s.scalars(select(MigrationRow.source_index).where(MigrationRow.id.in_(migrations))))
    return found | set(s.scalars(select(ReplicaRow.index).where(ReplicaRow.id.in_(replacements))))


def _settled_indexes(s: Session, subject: str, away: Absence) -> set[int]:
    """Indexes not to move back: moved by someone since the cluster left (a migration without an engine reason),
    already moved back to it in this recovery, or refused by it."""
    started = select(EventRow.data).where(
        EventRow.subject == subject, EventRow.kind == EventKind.MIGRATION_STARTED.value, EventRow.id > away.left_at
    )
    ids = [d["migration"] for d in s.scalars(started) if isinstance(d.get("migration"), int)]
    settled: set[int] = set()
    for move in s.scalars(select(MigrationRow).where(MigrationRow.id.in_(ids))):
        if move.reason is None or (move.reason == RECOVERED and move.target_cluster == away.cluster):
            settled.add(move.source_index)
    refused = select(EventRow.data).where(
        EventRow.subject == subject, EventRow.kind == EventKind.REPLICA_NOT_MOVED_BACK.value, EventRow.id > away.back_at
    )
    settled |= {d["index"] for d in s.scalars(refused) if d.get("target_cluster") == away.cluster and "index" in d}
    return settled


def _stays(s: Session, subject: str, source: ReplicaRow, away: Absence, index: int, why: str) -> None:
    record_event(
        s, EventKind.REPLICA_NOT_MOVED_BACK, subject,
        f"replica {source.id} stays on {source.cluster}/{source.node}: {away.cluster} recovered but does not admit "
        f"it now: {why}", replica=source.id, cluster=source.cluster, node=source.node, index=index,
        target_cluster=away.cluster, error=why,
    )  # fmt: skip
