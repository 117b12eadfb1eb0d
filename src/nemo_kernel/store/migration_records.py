"""Migrations in the store: the record the migration loop advances, and what routing and phases must know of it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from nemo_kernel.domain import (
    ACTIVE_PHASES,
    ClusterPhase,
    EventKind,
    MigrationMode,
    MigrationPhase,
    MigrationStatus,
    PhaseTiming,
    utcnow,
)
from nemo_kernel.store.errors import NotFound
from nemo_kernel.store.events import record_event, workload_subject
from nemo_kernel.store.tables import ClusterRow, MigrationRow, ReplicaRow, WorkloadRow

RECOVERED = "recovered"
"""The reason of a move back to a cluster that recovered (``placement.after_recovery: move_back``); the engine's
other reasons are ``drained`` and ``not ready`` (its evacuations, ``reconcile/evacuate.py``). A move back is never
itself a reason to move anything back."""


def migration_subject(workload: str) -> str:
    """Events of a migration are part of its workload's history."""
    namespace, _, name = workload.partition("/")
    return workload_subject(namespace, name)


def plan_migration(
    s: Session,
    w: WorkloadRow,
    source: ReplicaRow,
    mode: MigrationMode,
    target: tuple[str, str, str | None],
    requested_by: str,
    reason: str | None = None,
) -> MigrationRow:
    """Store a checked move of ``source`` to ``target`` (cluster, node, runtime) as Planned, with its
    ``migration.started`` event; ``reason`` says why the engine moves it (None: a user or module asked)."""
    cluster, node, runtime = target
    row = MigrationRow(
        workload_id=w.id,
        workload=f"{w.namespace}/{w.name}",
        mode=mode.value,
        source_replica=source.id,
        source_index=source.index,
        source_cluster=source.cluster,
        source_node=source.node,
        target_replica=None,
        target_cluster=cluster,
        target_node=node,
        target_runtime=runtime,
        rolling_back=False,
        message="planned",
        requested_by=requested_by[:200],
        reason=reason,
    )
    return create_migration(s, row)


def create_migration(s: Session, row: MigrationRow) -> MigrationRow:
    """Store a new migration (phase Planned) and record ``migration.started``."""
    now = utcnow()
    row.phase = MigrationPhase.PLANNED.value
    row.timings = [{"phase": MigrationPhase.PLANNED.value, "started_at": now.isoformat(), "ended_at": None}]
    s.add(row)
    s.flush()  # the id is in the event
    record_event(
        s,
        EventKind.MIGRATION_STARTED,
        migration_subject(row.workload),
        f"migration {row.id}: {row.mode} move of {row.source_replica} from {row.source_cluster}/{row.source_node} "
        f"to {row.target_cluster}/{row.target_node}",
        **_data(row),
    )
    return row


def enter_phase(s: Session, row: MigrationRow, phase: MigrationPhase, message: str, **extra: Any) -> None:
    """Move ``row`` to ``phase`` (timings closed and opened) and record its event: ``migration.progressed``, or
    ``migration.completed`` / ``migration.failed`` (for Failed and RolledBack) on a final phase."""
    now = utcnow().isoformat()
    timings = [dict(t) for t in row.timings]
    if timings and timings[-1]["ended_at"] is None:
        timings[-1]["ended_at"] = now
    if not phase.final:
        timings.append({"phase": phase.value, "started_at": now, "ended_at": None})
    row.timings = timings
    row.phase = phase.value
    row.message = message
    row.phase_deadline = None
    kind = EventKind.MIGRATION_PROGRESSED
    if phase is MigrationPhase.COMPLETED:
        kind = EventKind.MIGRATION_COMPLETED
    elif phase.final:
        kind = EventKind.MIGRATION_FAILED
    record_event(s, kind, migration_subject(row.workload), f"migration {row.id}: {message}", **_data(row), **extra)


def _data(row: MigrationRow) -> dict[str, Any]:
    return {
        "migration": row.id,
        "phase": row.phase,
        "mode": row.mode,
        "source_replica": row.source_replica,
        "target_replica": row.target_replica,
        "target": f"{row.target_cluster}/{row.target_node}",
        "requested_by": row.requested_by,
        "reason": row.reason,
        "downtime_ms": downtime_ms(row),
    }


def get_migration(s: Session, migration_id: int) -> MigrationRow:
    """The migration with this id; :class:`NotFound` otherwise."""
    row = s.get(MigrationRow, migration_id)
    if row is None:
        raise NotFound("migration", str(migration_id))
    return row


def list_migrations(
    s: Session, workload: str | None = None, *, limit: int = 100, offset: int = 0
) -> list[MigrationRow]:
    """A page of migrations, newest first, optionally of one workload (``namespace/name``)."""
    query = select(MigrationRow).order_by(MigrationRow.id.desc()).limit(limit).offset(offset)
    if workload is not None:
        query = query.where(MigrationRow.workload == workload)
    return list(s.scalars(query))


def active_of_workload(s: Session, workload_id: int) -> MigrationRow | None:
    """The migration of this workload still running, if any (there is at most one)."""
    return s.scalar(
        select(MigrationRow).where(MigrationRow.workload_id == workload_id, MigrationRow.phase.in_(ACTIVE_PHASES))
    )


def active_migrations(s: Session, limit: int = 100) -> list[MigrationRow]:
    """Migrations still running, oldest first (the migration loop advances these)."""
    query = select(MigrationRow).where(MigrationRow.phase.in_(ACTIVE_PHASES)).order_by(MigrationRow.id).limit(limit)
    return list(s.scalars(query))


def evacuations_in_flight(s: Session) -> int:
    """How many migrations the engine started (drains, NotReady clusters and nodes) are still running."""
    query = select(func.count()).where(MigrationRow.reason.is_not(None), MigrationRow.phase.in_(ACTIVE_PHASES))
    return s.scalar(query) or 0


EVACUATION_ATTEMPTS = 3
"""Evacuations of one replica that may end without moving it (a target that did not run, a hand-off that failed)
before the engine gives up on a hand-off and replaces it with a fresh replica instead."""


def given_up_evacuations(s: Session) -> set[str]:
    """Replicas still desired whose evacuation the engine gives up: one ended without moving it while their
    cluster is NotReady (it cannot export their state: it went with the cluster), or ``EVACUATION_ATTEMPTS`` did.
    Placement replaces them with fresh replicas (the reschedule path); a drained cluster's replica is retried
    before, so a passing failure (a target that died) does not cost a stateful workload its state."""
    ended = (MigrationPhase.ROLLED_BACK.value, MigrationPhase.FAILED.value)
    query = (
        select(MigrationRow.source_replica)
        .join(ReplicaRow, ReplicaRow.id == MigrationRow.source_replica)
        .join(ClusterRow, ClusterRow.name == ReplicaRow.cluster)
        .where(MigrationRow.reason.is_not(None), MigrationRow.phase.in_(ended), ReplicaRow.desired.is_(True))
        .group_by(MigrationRow.source_replica, ClusterRow.phase)
        .having(
            or_(func.count(MigrationRow.id) >= EVACUATION_ATTEMPTS, ClusterRow.phase == ClusterPhase.NOT_READY.value)
        )
    )
    return set(s.scalars(query))


def unroutable_replicas() -> tuple[Select[Any], ...]:
    """Queries of the replica ids no traffic may reach although they run: a migration's target before the switch
    (it has no state yet) and its source after it (it is frozen, or drains before it stops)."""
    active = MigrationRow.phase.in_(ACTIVE_PHASES)
    return (
        select(MigrationRow.target_replica).where(
            and_(active, MigrationRow.switched_at.is_(None), MigrationRow.target_replica.is_not(None))
        ),
        select(MigrationRow.source_replica).where(and_(active, MigrationRow.switched_at.is_not(None))),
    )


def moving_replicas(s: Session) -> set[str]:
    """Source and target replica ids of running migrations: the migration, not the phase rules, decides which of
    the two stays."""
    ids: set[str] = set()
    for source, target in s.execute(
        select(MigrationRow.source_replica, MigrationRow.target_replica).where(MigrationRow.phase.in_(ACTIVE_PHASES))
    ):
        ids.add(source)
        if target is not None:
            ids.add(target)
    return ids


def downtime_ms(row: MigrationRow) -> float | None:
    """The window the workload's replica refused or missed traffic, as the control plane measured it."""
    if row.switched_at is None:
        return None
    start: datetime | None = None
    if row.mode == MigrationMode.STATEFUL.value:
        start = row.frozen_at
    elif row.mode == MigrationMode.RECREATE.value:
        start = row.source_stopped_at
    else:
        return 0.0
    if start is None:
        return None
    return round((row.switched_at - start).total_seconds() * 1000, 1)


def to_status(row: MigrationRow) -> MigrationStatus:
    """Domain view of a stored migration."""
    return MigrationStatus(
        id=row.id,
        workload=row.workload,
        mode=MigrationMode(row.mode),
        phase=MigrationPhase(row.phase),
        source_replica=row.source_replica,
        source_cluster=row.source_cluster,
        source_node=row.source_node,
        target_replica=row.target_replica,
        target_cluster=row.target_cluster,
        target_node=row.target_node,
        target_runtime=row.target_runtime,
        message=row.message,
        requested_by=row.requested_by,
        reason=row.reason,
        timings=[PhaseTiming.model_validate(t) for t in row.timings],
        downtime_ms=downtime_ms(row),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
