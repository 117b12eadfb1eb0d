"""The migration loop's step: advances every running migration from its stored record, one phase at a time.

Everything a migration needs to go on is in its row (phase, target replica, state version, freeze and switch
times), so a control plane killed at any point resumes on restart: each phase's work is idempotent and is redone
from the start of the phase. What runs where is the reconcile pass's business: this step only binds and
releases replica rows (and wakes the pass); it calls drivers itself only for the state hand-off.

Per phase (``domain.migration`` draws the machine):

- Planned: stateless/stateful bind the target replica (same index; the gateway does not route to it);
  recreate releases the source (the pass stops it).
- Preparing: wait until the target runs (recreate: until the source is gone, then bind and wait for the target).
  Past ``prepare_timeout``, or the target refused or gone: roll back.
- Transferring (stateful): export the source's whole state (it keeps serving), import it into the target.
- Switching: stateful freezes the source (``frozen_at`` is stored first), imports the delta since the exported
  version, then one transaction makes the target routable and the source not (``switched_at``); stateless and
  recreate only flip. A failure before the flip thaws the source and releases the target: never two writers,
  never none.
- Cleaning: after ``drain`` seconds (the gateway follows within its poll interval, in-flight requests finish)
  the source is released; Completed once the pass removed it. A step failing past the switch fails the move and
  releases the replica that does not serve (the source, unless the target is gone) in the same transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from nemo_kernel.clusters import (
    ClusterDriver,
    ClusterUnreachable,
    ReplicaRejected,
    StateSnapshot,
    SupportsStateHandoff,
)
from nemo_kernel.domain import EventKind, MigrationMode, MigrationPhase, ReplicaPhase, WorkloadDescriptor, utcnow
from nemo_kernel.migration.criu import checkpoint_support
from nemo_kernel.store import Database, store_busy, workloads
from nemo_kernel.store.events import record_event
from nemo_kernel.store.migration_records import active_migrations, enter_phase, get_migration, migration_subject
from nemo_kernel.store.tables import MigrationRow, ReplicaRow, WorkloadRow

log = logging.getLogger(__name__)

DriverOf = Callable[[str], ClusterDriver | None]


@dataclass(frozen=True)
class MigrationTimings:
    """How long a migration waits, in seconds."""

    drain: float = 2.0
    prepare_timeout: float = 60.0
    cleanup_timeout: float = 60.0
    handoff_timeout: float = 30.0


class MoveFailed(Exception):
    """A step of a migration cannot succeed: it is rolled back (or failed, past the switch)."""


class MigrationRunner:
    """Advances running migrations; ``driver_of`` gives the driver of a cluster, ``wake`` asks for a reconcile pass."""

    def __init__(self, db: Database, driver_of: DriverOf, wake: Callable[[], None], timings: MigrationTimings) -> None:
        self._db = db
        self._driver_of = driver_of
        self._wake = wake
        self._timings = timings

    async def advance(self) -> int:
        """Advance every running migration once (concurrently; one failing never holds back another); returns how
        many are still running."""
        ids = await asyncio.to_thread(self._active_ids)
        await asyncio.gather(*(self._advance_isolated(i) for i in ids))
        return len(await asyncio.to_thread(self._active_ids)) if ids else 0

    def _active_ids(self) -> list[int]:
        with self._db.snapshot() as s:  # only reads (the loop looks after every event commit): no write lock
            return [row.id for row in active_migrations(s)]

    async def _advance_isolated(self, migration_id: int) -> None:
        try:
            await self._advance(migration_id)
        except Exception as exc:  # a bug or a store error on one migration: recorded on it, the others go on
            if isinstance(exc, OperationalError) and store_busy(exc):
                # The store was busy (SQLite's write lock held past its timeout) or out of reach: the failed
                # transaction changed nothing and each phase's work is redone from its start, so the next step
                # tries again. Rolling back (or, past the switch, failing) over a busy store left the source running
                # beside the target; the phase deadlines still bound a move that cannot go on.
                log.warning("migration %s: the store is busy; the step is tried again: %s", migration_id, exc.orig)
                return
            log.exception("migration %s: step failed", migration_id)
            try:
                await asyncio.to_thread(self._roll_back, migration_id, f"{type(exc).__name__}: {exc}")
            except Exception:  # the rollback's own transaction failed: nothing changed, the next step tries again
                log.exception("migration %s: rolling back failed; the step is tried again", migration_id)

    async def _advance(self, migration_id: int) -> None:
        row = await asyncio.to_thread(self._read, migration_id)
        phase = MigrationPhase(row.phase)
        if row.rolling_back:
            await self._thaw(row)
        elif phase is MigrationPhase.PLANNED:
            await asyncio.to_thread(self._plan, migration_id)
        elif phase is MigrationPhase.PREPARING:
            await asyncio.to_thread(self._prepare, migration_id)
            row = await asyncio.to_thread(self._read, migration_id)
            if row.phase == MigrationPhase.TRANSFERRING.value:
                await self._transfer(row)
        elif phase is MigrationPhase.TRANSFERRING:
            await self._transfer(row)
        elif phase is MigrationPhase.SWITCHING:
            await self._switch(row)
        elif phase is MigrationPhase.CLEANING:
            await asyncio.to_thread(self._clean, migration_id)

    def _read(self, migration_id: int) -> MigrationRow:
        with self._db.transaction() as s:
            row = get_migration(s, migration_id)
            s.expunge(row)
            return row

    # ---------------------------------------------------------------- Planned, Preparing

    def _plan(self, migration_id: int) -> None:
        with self._db.transaction() as s:
            m = get_migration(s, migration_id)
            source = s.get(ReplicaRow, m.source_replica)
            if source is None or not source.desired:
                self._roll_back_in(s, m, f"the source replica {m.source_replica} is gone")
                return
            deadline = utcnow() + timedelta(seconds=self._timings.prepare_timeout)
            if m.mode == MigrationMode.RECREATE.value:
                workloads.release_replica(s, source)
                m.source_stopped_at = utcnow()
                enter_phase(s, m, MigrationPhase.PREPARING, f"stopping {m.source_replica} (recreate)")
            else:
                target = self._bind_target(s, m, source.index)
                enter_phase(
                    s, m, MigrationPhase.PREPARING, f"starting {target.id} on {m.target_cluster}/{m.target_node}"
                )
            m.phase_deadline = deadline
        self._wake()

    def _bind_target(self, s: Session, m: MigrationRow, index: int) -> ReplicaRow:
        w = s.get(WorkloadRow, m.workload_id)
        spec = WorkloadDescriptor.model_validate(w.descriptor).deployment if w is not None else None
        if w is None or spec is None:
            raise MoveFailed("the workload is gone or runs nothing any more")
        [target] = workloads.bind_replicas(
            s,
            w,
            [workloads.Binding(index, m.target_cluster, m.target_node, m.target_runtime)],
            cpu=spec.resources.cpu,
            memory_mib=spec.resources.memory_mib,
        )
        m.target_replica = target.id
        return target

    def _prepare(self, migration_id: int) -> None:
        with self._db.transaction() as s:
            m = get_migration(s, migration_id)
            now = utcnow()
            if m.target_replica is None:  # recreate: the target starts once the source is gone
                if s.get(ReplicaRow, m.source_replica) is not None:
                    if _past(m.phase_deadline, now):
                        self._fail_in(s, m, f"the source {m.source_replica} did not stop in time")
                    return
                bound = self._bind_target(s, m, m.source_index)
                m.message = f"{m.source_replica} stopped; starting {bound.id} on {m.target_cluster}/{m.target_node}"
                # a change of desired state records an event: the reconcile pass rolls out when the store moved
                record_event(
                    s,
                    EventKind.MIGRATION_PROGRESSED,
                    migration_subject(m.workload),
                    f"migration {m.id}: {m.message}",
                    migration=m.id,
                    target_replica=bound.id,
                )
                self._wake()
                return
            target = s.get(ReplicaRow, m.target_replica)
            if target is None or not target.desired or target.phase == ReplicaPhase.REJECTED.value:
                why = target.message if target is not None and target.message else "it was removed"
                self._roll_back_in(s, m, f"the target {m.target_replica} cannot run: {why}")
                return
            if target.phase != ReplicaPhase.RUNNING.value:
                if _past(m.phase_deadline, now):
                    self._roll_back_in(
                        s,
                        m,
                        f"the target {target.id} did not run within {self._timings.prepare_timeout:g} s "
                        f"({target.phase}{': ' + target.message if target.message else ''})",
                    )
                return
            if m.mode == MigrationMode.STATEFUL.value:
                how = f"application state hand-off; {checkpoint_support()}"
                enter_phase(s, m, MigrationPhase.TRANSFERRING, f"{target.id} runs; handing the state over ({how})")
                return
            enter_phase(s, m, MigrationPhase.SWITCHING, f"{target.id} runs; switching traffic")
            self._flip(s, m, now)

    # ---------------------------------------------------------------- Transferring, Switching

    def _handoff(self, m: MigrationRow) -> tuple[SupportsStateHandoff, SupportsStateHandoff]:
        drivers = []
        for cluster in (m.source_cluster, m.target_cluster):
            driver = self._driver_of(cluster)
            if driver is None:
                raise ClusterUnreachable(f"cluster {cluster} has no driver yet")
            if not isinstance(driver, SupportsStateHandoff):
                raise MoveFailed(f"cluster {cluster} cannot hand application state over ({checkpoint_support()})")
            drivers.append(driver)
        return drivers[0], drivers[1]

    async def _transfer(self, m: MigrationRow) -> None:
        """Whole state source -> target while the source serves; then the switch, at once."""
        assert m.target_replica is not None
        try:
            source, target = self._handoff(m)
            full = await source.export_state(m.source_replica)
            await target.import_state(m.target_replica, full)
        except (ClusterUnreachable, TimeoutError) as exc:
            await asyncio.to_thread(self._unreachable, m.id, f"state transfer: {exc or type(exc).__name__}")
            return
        except (ReplicaRejected, MoveFailed) as exc:
            await asyncio.to_thread(self._roll_back, m.id, f"state transfer failed: {exc}")
            return
        # straight on to the freeze: every step between the freeze and the switch is downtime
        await self._switch(await asyncio.to_thread(self._frozen, m.id, full))

    def _frozen(self, migration_id: int, full: StateSnapshot) -> MigrationRow:
        with self._db.transaction() as s:
            m = get_migration(s, migration_id)
            m.state_version = full.version
            # Stored before the freeze is asked: a control plane killed after it knows to thaw on rollback.
            m.frozen_at = utcnow()
            enter_phase(
                s, m, MigrationPhase.SWITCHING,
                f"{len(full.data)} bytes of state (version {full.version}) imported; freezing {m.source_replica}",
            )  # fmt: skip
            s.flush()
            s.expunge(m)
            return m

    async def _switch(self, m: MigrationRow) -> None:
        if m.mode == MigrationMode.STATEFUL.value:
            assert m.target_replica is not None
            try:
                source, target = self._handoff(m)
                delta = await source.freeze_state(m.source_replica, m.state_version)
                await target.import_state(m.target_replica, delta)
            except (ClusterUnreachable, TimeoutError) as exc:
                await asyncio.to_thread(self._unreachable, m.id, f"final hand-off: {exc or type(exc).__name__}")
                return
            except (ReplicaRejected, MoveFailed) as exc:
                await asyncio.to_thread(self._roll_back, m.id, f"final state hand-off failed: {exc}")
                return
        await asyncio.to_thread(self._flip_by_id, m.id)

    def _flip_by_id(self, migration_id: int) -> None:
        with self._db.transaction() as s:
            m = get_migration(s, migration_id)
            if m.phase == MigrationPhase.SWITCHING.value:
                self._flip(s, m, utcnow())

    def _flip(self, s: Session, m: MigrationRow, now: datetime) -> None:
        """The switch: from this commit the gateway routes to the target only (``unroutable_replicas``)."""
        m.switched_at = now
        source_gone = s.get(ReplicaRow, m.source_replica) is None
        enter_phase(
            s, m, MigrationPhase.CLEANING,
            f"traffic switched to {m.target_replica}; "
            + ("nothing left to stop" if source_gone else f"{m.source_replica} drains for {self._timings.drain:g} s"),
        )  # fmt: skip
        m.phase_deadline = now + timedelta(seconds=self._timings.drain)
        self._wake()

    # ---------------------------------------------------------------- Cleaning

    def _clean(self, migration_id: int) -> None:
        with self._db.transaction() as s:
            m = get_migration(s, migration_id)
            now = utcnow()
            source = s.get(ReplicaRow, m.source_replica)
            if source is None:
                enter_phase(s, m, MigrationPhase.COMPLETED, f"{m.workload} runs on {m.target_cluster}/{m.target_node}")
                return
            if source.desired:
                if not _past(m.phase_deadline, now):
                    return
                workloads.release_replica(s, source)
                record_event(
                    s, EventKind.REPLICA_REPLACED, migration_subject(m.workload),
                    f"replica {source.id} on {source.cluster}/{source.node} stops: {m.target_replica} runs in its "
                    f"place on {m.target_cluster}/{m.target_node} (migration {m.id})",
                    replica=source.id, cluster=source.cluster, node=source.node, replacement=m.target_replica,
                    migration=m.id,
                )  # fmt: skip
                m.message = f"stopping {m.source_replica}"
                m.phase_deadline = now + timedelta(seconds=self._timings.cleanup_timeout)
                self._wake()
                return
            if _past(m.phase_deadline, now):
                # The move is done (the target serves); the reconcile pass keeps trying to stop the source.
                enter_phase(
                    s, m, MigrationPhase.COMPLETED,
                    f"{m.workload} runs on {m.target_cluster}/{m.target_node}; {m.source_replica} is still being "
                    f"stopped on {m.source_cluster}",
                )  # fmt: skip

    # ---------------------------------------------------------------- rollback

    def _unreachable(self, migration_id: int, why: str) -> None:
        """A cluster did not answer (or has no driver yet, after a restart): the phase is tried again on the next
        step until ``handoff_timeout`` from the first such failure, then rolled back."""
        with self._db.transaction() as s:
            m = get_migration(s, migration_id)
            now = utcnow()
            if m.phase_deadline is None:
                m.phase_deadline = now + timedelta(seconds=self._timings.handoff_timeout)
            if _past(m.phase_deadline, now):
                self._roll_back_in(s, m, f"{why} (retried for {self._timings.handoff_timeout:g} s)")
                return
            m.message = f"{why}; retrying"

    def _roll_back(self, migration_id: int, why: str) -> None:
        with self._db.transaction() as s:
            m = get_migration(s, migration_id)
            if MigrationPhase(m.phase).final:
                return
            if m.switched_at is not None:
                # Past the switch the target serves; going back would mean a second hand-off. The replica that
                # does not serve is released in the same transaction (the pass stops it): a failed move never
                # leaves two running, nor none.
                enter_phase(s, m, MigrationPhase.FAILED, f"after the switch: {why}; {_keep_one(s, m)}")
            else:
                self._roll_back_in(s, m, why)
        self._wake()

    def _roll_back_in(self, s: Session, m: MigrationRow, why: str) -> None:
        """Release the target; the source keeps (or, when frozen, gets back: see :meth:`_thaw_source`) its writes."""
        if m.mode == MigrationMode.RECREATE.value:
            self._fail_in(s, m, why)
            return
        if m.target_replica is not None:
            target = s.get(ReplicaRow, m.target_replica)
            if target is not None:
                workloads.release_replica(s, target)
        if m.frozen_at is not None:
            # The source may be frozen: it is thawed by the next advance (a network call, never inside a
            # transaction); until then the target is released and takes no traffic, and the source no writes.
            m.rolling_back = True
            m.message = f"rolling back ({why}); thawing {m.source_replica}"
            return
        enter_phase(s, m, MigrationPhase.ROLLED_BACK, f"rolled back: {why}; {m.source_replica} serves as before")

    async def _thaw(self, m: MigrationRow) -> None:
        driver = self._driver_of(m.source_cluster)
        try:
            if driver is None:
                raise ClusterUnreachable(f"cluster {m.source_cluster} has no driver yet")
            if isinstance(driver, SupportsStateHandoff):
                await driver.thaw_state(m.source_replica)
        except (ClusterUnreachable, TimeoutError) as exc:
            log.warning("migration %s: thawing %s failed, retrying: %s", m.id, m.source_replica, exc)
            return
        except ReplicaRejected as exc:
            log.warning(
                "migration %s: %s could not be thawed (%s); it is gone or was never frozen", m.id, m.source_replica, exc
            )
        await asyncio.to_thread(self._thawed, m.id)

    def _thawed(self, migration_id: int) -> None:
        with self._db.transaction() as s:
            m = get_migration(s, migration_id)
            m.rolling_back = False
            why = m.message.removeprefix("rolling back (").rsplit("); thawing", 1)[0]
            enter_phase(s, m, MigrationPhase.ROLLED_BACK, f"rolled back: {why}; {m.source_replica} serves as before")
        self._wake()

    def _fail_in(self, s: Session, m: MigrationRow, why: str) -> None:
        """Recreate cannot go back (the source is stopped): the workload is queued for placement instead."""
        if m.target_replica is not None:
            target = s.get(ReplicaRow, m.target_replica)
            if target is not None:
                workloads.release_replica(s, target)
        w = s.get(WorkloadRow, m.workload_id)
        if w is not None and not w.deleting:
            w.needs_placement = True
        enter_phase(s, m, MigrationPhase.FAILED, f"failed: {why}; the workload is placed again")


def _keep_one(s: Session, m: MigrationRow) -> str:
    """Past the switch, release the source unless the target is gone (then the source, routable again once the
    move is final, serves); says which replica is left."""
    source = s.get(ReplicaRow, m.source_replica)
    target = s.get(ReplicaRow, m.target_replica) if m.target_replica is not None else None
    if target is None or not target.desired:
        if source is None or not source.desired:
            w = s.get(WorkloadRow, m.workload_id)
            if w is not None and not w.deleting:
                w.needs_placement = True
            return f"neither {m.source_replica} nor {m.target_replica} is left; the workload is placed again"
        return f"{m.target_replica} is gone; {m.source_replica} serves again"
    if source is not None:
        workloads.release_replica(s, source)
    return f"{m.target_replica} serves; {m.source_replica} is stopped"


def _past(deadline: datetime | None, now: datetime) -> bool:
    return deadline is not None and now >= deadline
