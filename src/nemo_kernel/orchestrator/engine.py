"""Orchestration Engine: reconciles desired placement with what the clusters report.

One pass (``reconcile_once``) runs, in order: heartbeats (Resource Manager), observation of replica
states, rescheduling away from unhealthy, drained or removed clusters, placement of what is unplaced
(Decision Engine), then rollout: each cluster is told which replicas to run and which to remove.
Every state change is stored (with its event) before anything is sent; work is always re-derived from
the store, so a restart of the control plane resumes where it stopped.

Moves are make-before-break, like rollouts: a replica on a drained or silent cluster keeps its place until a
replacement for its index runs elsewhere; only then is it released. Each workload and each cluster is handled
in isolation: an error about one (an unreadable stored row, a driver failing on one replica) is logged and
recorded on that object, and the pass goes on for the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from nemo_kernel.clusters import ClusterReport, ClusterUnreachable, ReplicaRejected, ReplicaReport, ReplicaSpec
from nemo_kernel.config import Settings
from nemo_kernel.domain import EventKind, ReplicaPhase, WorkloadDescriptor, WorkloadPhase
from nemo_kernel.orchestrator.decision import DecisionEngine
from nemo_kernel.orchestrator.placement import Inventory
from nemo_kernel.orchestrator.resources import ResourceManager
from nemo_kernel.store import Database, workloads
from nemo_kernel.store.clusters import NOT_ANSWERING, leaving_clusters
from nemo_kernel.store.events import record_event, workload_subject
from nemo_kernel.store.tables import ClusterRow, ReplicaRow, WorkloadRow

log = logging.getLogger(__name__)
T = TypeVar("T")

_SCHEDULE_BATCH = 200
_USAGE_WRITE_INTERVAL = 10.0  # seconds between stored CPU/memory samples of one replica


@dataclass
class _ClusterPlan:
    ensure: list[ReplicaSpec] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


class OrchestrationEngine:
    """Drives the clusters towards the placements stored in the database."""

    def __init__(self, db: Database, resources: ResourceManager, settings: Settings) -> None:
        self._db = db
        self._resources = resources
        self._settings = settings
        self._decisions = DecisionEngine(settings.weights)
        self._tried: dict[int, tuple[int, int]] = {}  # workload id -> (inventory generation, version) last tried
        self._usage_written: dict[str, float] = {}
        self._rejected: dict[str, str] = {}  # replica id -> why its cluster refused it (never resent as is)
        self._leaving: dict[str, str] = {}  # leaving clusters as of the last pass, to notice changes
        self._first_pass = True

    async def reconcile_once(self) -> None:
        """One full pass; see the module docstring."""
        await self._resources.sync_drivers()
        reports = await self._resources.heartbeat()
        await asyncio.to_thread(self._observe, reports)
        await asyncio.to_thread(self._reschedule)
        await asyncio.to_thread(self._schedule)
        await self._rollout(reports)

    # -- observation -------------------------------------------------------------------------------

    def _observe(self, reports: dict[str, ClusterReport]) -> None:
        if not reports:
            return
        now = time.monotonic()
        with self._db.transaction() as s:
            rows = {r.id: r for r in s.scalars(select(ReplicaRow).where(ReplicaRow.cluster.in_(list(reports))))}
            subjects = self._subjects(s, {r.workload_id for r in rows.values()})
            dirty: set[int] = set()
            seen: set[str] = set()
            for report in reports.values():
                for observed in report.replicas:
                    row = rows.get(observed.id)
                    if row is None:
                        continue  # not ours any more: the rollout removes it
                    seen.add(observed.id)
                    if self._apply_report(s, row, observed, subjects[row.workload_id], now):
                        dirty.add(row.workload_id)
            for row in rows.values():
                if row.desired and row.id not in seen and row.phase != ReplicaPhase.SCHEDULED.value:
                    row.phase = ReplicaPhase.SCHEDULED.value
                    row.message = "not reported by its cluster; sending it again"
                    row.pid = None
                    dirty.add(row.workload_id)
            self._update_phases(s, dirty)

    @staticmethod
    def _subjects(s: Session, workload_ids: Iterable[int]) -> dict[int, str]:
        ids = list(workload_ids)
        if not ids:
            return {}
        query = select(WorkloadRow.id, WorkloadRow.namespace, WorkloadRow.name).where(WorkloadRow.id.in_(ids))
        return {wid: workload_subject(ns, name) for wid, ns, name in s.execute(query)}

    def _apply_report(self, s: Session, row: ReplicaRow, seen: ReplicaReport, subject: str, now: float) -> bool:
        """Copy a replica's report into its row; record what changed as events. True if its phase changed."""
        if not row.desired:
            return False
        if now - self._usage_written.get(row.id, 0.0) >= _USAGE_WRITE_INTERVAL:
            row.cpu_percent, row.memory_mib = seen.cpu_percent, seen.memory_mib
            self._usage_written[row.id] = now
        if seen.restarts > row.restarts:
            _replica_event(
                s,
                EventKind.REPLICA_CRASHED,
                subject,
                row,
                f"replica {row.id} on {row.cluster}/{row.node} exited ({seen.message or 'no message'}); "
                f"restart {seen.restarts}",
                restarts=seen.restarts,
                exit_code=seen.exit_code,
            )
        row.restarts = seen.restarts
        old_phase = row.phase
        row.url, row.pid, row.message = seen.url, seen.pid, seen.message
        if seen.phase.value == old_phase:
            return False
        row.phase = seen.phase.value
        if seen.phase is ReplicaPhase.RUNNING:
            _replica_event(
                s,
                EventKind.REPLICA_STARTED,
                subject,
                row,
                f"replica {row.id} running on {row.cluster}/{row.node} at {seen.url}",
                url=seen.url,
                pid=seen.pid,
            )
        elif seen.phase is ReplicaPhase.CRASHED and seen.restarts == row.restarts and old_phase != "Crashed":
            _replica_event(
                s,
                EventKind.REPLICA_CRASHED,
                subject,
                row,
                f"replica {row.id} exited with {seen.exit_code}: {seen.message}",
                exit_code=seen.exit_code,
            )
        return True

    def _update_phases(self, s: Session, workload_ids: set[int]) -> None:
        """Recompute workload phases; finish moves and rollouts (what was replaced goes) and deletions."""
        if not workload_ids:
            return
        rows = list(s.scalars(select(WorkloadRow).where(WorkloadRow.id.in_(list(workload_ids)))))
        replicas = workloads.replicas_by_workload(s, [w.id for w in rows])
        leaving = leaving_clusters(s)
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
            self._isolated(s, w, "status update", partial(self._update_phase, s, w, mine, leaving))

    def _update_phase(self, s: Session, w: WorkloadRow, mine: list[ReplicaRow], leaving: dict[str, str]) -> None:
        subject = workload_subject(w.namespace, w.name)
        deployment = WorkloadDescriptor.model_validate(w.descriptor).deployment
        if deployment is None:
            return  # a catalogue entry: nothing runs, it stays Registered
        wanted = deployment.replicas
        current = [r for r in mine if r.desired and r.version == w.version]
        _release_replaced(s, subject, current, leaving)
        current = [r for r in current if r.desired]
        # A replica on a cluster that does not answer may have died with it: it is not counted as serving, though
        # it keeps its place until its replacement runs.
        ready = len(
            {
                r.index
                for r in current
                if r.phase == ReplicaPhase.RUNNING.value and leaving.get(r.cluster) != NOT_ANSWERING
            }
        )
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
        if ready >= wanted:
            phase = WorkloadPhase.RUNNING
        elif not current:
            phase = WorkloadPhase.PENDING
        elif w.phase in (WorkloadPhase.RUNNING.value, WorkloadPhase.DEGRADED.value):
            phase = WorkloadPhase.DEGRADED
        else:
            phase = WorkloadPhase.DEPLOYING
        message = f"{ready}/{wanted} replicas of version {w.version} running"
        if moving:
            message += f"; moving off {', '.join(moving)} once replacements run"
        if phase.value != w.phase:
            record_event(s, EventKind.for_phase(phase), subject, message, ready=ready, desired=wanted)
            w.phase = phase.value
        if phase is not WorkloadPhase.PENDING or current:
            w.message = message

    def _isolated(self, s: Session, w: WorkloadRow, step: str, work: Callable[[], T]) -> T | None:
        """Run one workload's part of a pass in a savepoint; an error is recorded on the workload, not raised.

        One unreadable row (a descriptor stored before validation was tightened, a name no replica id accepts)
        must not stop the reconcile loop for every other workload.
        """
        _begin(s)
        try:
            with s.begin_nested():
                return work()
        except Exception as exc:
            self._record_failure(s, w, step, exc)
            return None

    def _record_failure(self, s: Session, w: WorkloadRow, step: str, exc: Exception) -> None:
        detail = " ".join(str(exc).split())[:400] or type(exc).__name__
        message = f"not reconciled ({step} failed): {detail}"
        if w.message == message:
            return  # already recorded: one event and one log line per distinct failure, not one per pass
        log.warning("workload %s/%s: %s", w.namespace, w.name, message, exc_info=exc)
        w.message = message
        record_event(s, EventKind.WORKLOAD_FAILED, workload_subject(w.namespace, w.name), message, step=step)

    # -- rescheduling ------------------------------------------------------------------------------

    def _reschedule(self) -> None:
        with self._db.transaction() as s:
            clusters = list(s.scalars(select(ClusterRow.name)))
            # Replicas of removed clusters went with their agent: nothing is left to wait for, they are forgotten.
            gone = list(s.scalars(select(ReplicaRow).where(ReplicaRow.cluster.not_in(clusters))))
            subjects = self._subjects(s, {r.workload_id for r in gone})
            moved = {r.workload_id for r in gone if r.desired}
            for r in gone:
                if r.desired:
                    workloads.release_replica(s, r)
                    _replica_event(
                        s,
                        EventKind.REPLICA_RESCHEDULED,
                        subjects[r.workload_id],
                        r,
                        f"replica {r.id} leaves {r.cluster}/{r.node}: cluster removed",
                        reason="removed",
                    )
            self._queue_for_placement(s, moved)
            s.execute(delete(ReplicaRow).where(ReplicaRow.cluster.not_in(clusters)))
            # Replicas on drained or silent clusters keep serving until a replacement runs (see _update_phase):
            # their workloads are queued so the decision engine places one for each index left without.
            leaving = leaving_clusters(s)
            if leaving:
                query = select(ReplicaRow.workload_id).where(
                    ReplicaRow.desired.is_(True), ReplicaRow.cluster.in_(list(leaving))
                )
                ids = set(s.scalars(query))
                replicas = workloads.replicas_by_workload(s, list(ids))
                versions = {
                    wid: v
                    for wid, v in s.execute(select(WorkloadRow.id, WorkloadRow.version).where(WorkloadRow.id.in_(ids)))
                }
                self._queue_for_placement(
                    s, {wid for wid in ids if _unreplaced(replicas.get(wid, []), versions.get(wid), leaving)}
                )
            # Workloads with replicas on a cluster that started or stopped leaving serve more or less than before;
            # on the first pass, every workload with replicas (the stored phases may predate a restart).
            changed = {c for c in leaving.keys() | self._leaving.keys() if leaving.get(c) != self._leaving.get(c)}
            hosted = select(ReplicaRow.workload_id).where(ReplicaRow.desired.is_(True)).distinct()
            if self._first_pass:
                affected = set(s.scalars(hosted))
            elif changed:
                affected = set(s.scalars(hosted.where(ReplicaRow.cluster.in_(changed))))
            else:
                affected = set()
            # Deletions finish once their last replica is gone, which may happen on any path.
            deleting = set(s.scalars(select(WorkloadRow.id).where(WorkloadRow.deleting.is_(True))))
            self._update_phases(s, deleting | affected)
        self._leaving, self._first_pass = leaving, False

    @staticmethod
    def _queue_for_placement(s: Session, workload_ids: set[int]) -> None:
        if workload_ids:
            s.execute(
                update(WorkloadRow)
                .where(
                    WorkloadRow.id.in_(workload_ids),
                    WorkloadRow.deleting.is_(False),
                    WorkloadRow.needs_placement.is_(False),
                )
                .values(needs_placement=True)
            )

    # -- placement ---------------------------------------------------------------------------------

    def _schedule(self) -> None:
        with self._db.transaction() as s:
            queue = list(
                s.scalars(
                    select(WorkloadRow)
                    .where(WorkloadRow.needs_placement.is_(True), WorkloadRow.deleting.is_(False))
                    .order_by(WorkloadRow.id)
                    .limit(_SCHEDULE_BATCH)
                )
            )
            if not queue:
                return
            inventory = Inventory.load(s)
            replicas = workloads.replicas_by_workload(s, [w.id for w in queue])
            touched: set[int] = set()
            for w in queue:
                tried = (inventory.generation, w.version)
                if self._tried.get(w.id) == tried:
                    continue  # nothing changed since it last fitted nowhere (or failed)
                if self._isolated(s, w, "placement", partial(self._place, s, w, replicas.get(w.id, []), inventory)):
                    touched.add(w.id)
                else:
                    self._tried[w.id] = tried
            self._update_phases(s, touched)

    def _place(self, s: Session, w: WorkloadRow, mine: list[ReplicaRow], inventory: Inventory) -> bool:
        spec = WorkloadDescriptor.model_validate(w.descriptor).deployment
        if spec is None:  # a catalogue entry is never queued; one queued before it became one has nothing to place
            self._clear_queue(s, w.id, w.version)
            return False
        current = [r for r in mine if r.desired and r.version == w.version]
        # An index whose replica is on a leaving cluster needs a replacement; the old one serves until it runs.
        staying = [r for r in current if r.cluster not in inventory.leaving]
        replaced = {r.index: r for r in current if r.cluster in inventory.leaving}
        missing = sorted(set(range(spec.replicas)) - {r.index for r in staying})
        version = w.version
        if not missing:
            self._clear_queue(s, w.id, version)
            return True
        hosted: dict[tuple[str, str], int] = defaultdict(int)
        for r in staying:
            hosted[(r.cluster, r.node)] += 1
        decision = self._decisions.decide(w.namespace, w.name, version, spec, missing, inventory.candidates(hosted))
        workloads.store_decision(s, w, decision)
        subject = workload_subject(w.namespace, w.name)
        runtimes = {(v.cluster, v.node): v.runtime for v in decision.candidates if v.node is not None}
        for a in decision.assignments:
            replica = workloads.bind_replica(
                s,
                w,
                index=a.index,
                cluster=a.cluster,
                node=a.node,
                runtime=runtimes.get((a.cluster, a.node)),
                cpu=spec.resources.cpu,
                memory_mib=spec.resources.memory_mib,
            )
            inventory.allocate(a.cluster, a.node, spec.resources.cpu, spec.resources.memory_mib)
            _replica_event(
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
                _replica_event(
                    s,
                    EventKind.REPLICA_RESCHEDULED,
                    subject,
                    old,
                    f"replica {old.id} leaves {old.cluster}/{old.node} (cluster {reason}): {replica.id} replaces it "
                    f"on {a.cluster}/{a.node}; {old.id} stops once {replica.id} runs",
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
            self._clear_queue(s, w.id, version)
        else:
            self._tried[w.id] = (inventory.generation, version)
            if not current and not decision.assignments:
                w.message = decision.summary  # the phase is shown next to it: not repeated
        return True

    @staticmethod
    def _clear_queue(s: Session, workload_id: int, version: int) -> None:
        # Conditional on the version, so a newer apply that arrived meanwhile stays queued.
        s.execute(
            update(WorkloadRow)
            .where(WorkloadRow.id == workload_id, WorkloadRow.version == version)
            .values(needs_placement=False)
        )

    # -- rollout -----------------------------------------------------------------------------------

    async def _rollout(self, reports: dict[str, ClusterReport]) -> None:
        plans = await asyncio.to_thread(self._plan_rollout, reports)
        results = await asyncio.gather(*(self._apply_plan(c, p) for c, p in plans.items()))
        sent = [spec for done, _ in results for spec in done]
        removed = [rid for _, gone in results for rid in gone]
        if sent or removed or any(self._rejected.values()):
            await asyncio.to_thread(self._record_rollout, sent, removed)

    def _plan_rollout(self, reports: dict[str, ClusterReport]) -> dict[str, _ClusterPlan]:
        plans: dict[str, _ClusterPlan] = defaultdict(_ClusterPlan)
        with self._db.transaction() as s:
            rows = list(s.scalars(select(ReplicaRow).where(ReplicaRow.cluster.in_(list(reports)))))
            reported = {cluster: {rep.id for rep in report.replicas} for cluster, report in reports.items()}
            leaving = leaving_clusters(s)
            # Desired replicas their cluster does not report, by workload: they are sent (again). Not those on a
            # leaving cluster (their replacement is placed elsewhere), nor refused ones.
            missing: dict[int, list[ReplicaRow]] = defaultdict(list)
            for r in rows:
                unreported = r.desired and r.id not in reported[r.cluster]
                if unreported and r.cluster not in leaving and r.id not in self._rejected:
                    missing[r.workload_id].append(r)
            specs: dict[str, ReplicaSpec] = {}
            for w in s.scalars(select(WorkloadRow).where(WorkloadRow.id.in_(list(missing)))):
                # An older version's replica that vanished is not recreated: the new version replaces it.
                wanted = [r for r in missing[w.id] if r.version == w.version]
                if not wanted:
                    continue
                try:  # no savepoint needed: building the specs writes nothing
                    specs.update(_replica_specs(w, wanted))
                except Exception as exc:
                    self._record_failure(s, w, "rollout", exc)
            known = {r.id: r for r in rows}
            for cluster, ids in reported.items():
                for rid in ids:
                    row = known.get(rid)
                    if row is None or not row.desired:
                        plans[cluster].remove.append(rid)
            for r in rows:
                if r.id in reported[r.cluster]:
                    continue
                if not r.desired:
                    s.delete(r)  # released and already gone from its cluster
                elif r.id in specs:
                    plans[r.cluster].ensure.append(specs[r.id])
        return plans

    async def _apply_plan(self, cluster: str, plan: _ClusterPlan) -> tuple[list[ReplicaSpec], list[str]]:
        driver = self._resources.driver(cluster)
        sent: list[ReplicaSpec] = []
        removed: list[str] = []
        if driver is None:
            return sent, removed
        try:
            for spec in plan.ensure:
                try:
                    await asyncio.wait_for(driver.ensure_replica(spec), self._settings.driver_timeout)
                except ReplicaRejected as exc:
                    self._rejected[spec.id] = f"{cluster} refused the replica: {exc}"
                    continue
                sent.append(spec)
            for rid in plan.remove:
                await asyncio.wait_for(driver.remove_replica(rid), self._settings.driver_timeout * 3)
                removed.append(rid)
        except (ClusterUnreachable, TimeoutError) as exc:
            log.warning("cluster %s: rollout interrupted: %s", cluster, exc or type(exc).__name__)
        except Exception:
            # A driver failing in an unexpected way stops this cluster's rollout for this pass, not everyone's.
            log.exception("cluster %s: rollout failed; retrying on the next pass", cluster)
        return sent, removed

    def _record_rollout(self, sent: list[ReplicaSpec], removed: list[str]) -> None:
        with self._db.transaction() as s:
            rejected = [rid for rid, why in self._rejected.items() if why]
            ids = [x.id for x in sent] + removed + rejected
            rows = {r.id: r for r in s.scalars(select(ReplicaRow).where(ReplicaRow.id.in_(ids)))}
            subjects = self._subjects(s, {r.workload_id for r in rows.values()})
            for spec in sent:
                row = rows.get(spec.id)
                if row is not None and row.desired:
                    row.phase = ReplicaPhase.STARTING.value
                    _replica_event(
                        s,
                        EventKind.DEPLOYMENT_APPLIED,
                        subjects[row.workload_id],
                        row,
                        f"replica {spec.id} sent to {row.cluster}/{row.node}",
                        version=spec.version,
                    )
            for rid in rejected:
                row = rows.get(rid)
                if row is not None:
                    row.message = self._rejected[rid]
                    _replica_event(
                        s,
                        EventKind.REPLICA_REJECTED,
                        subjects[row.workload_id],
                        row,
                        row.message,
                    )
                self._rejected[rid] = ""  # recorded once; still never resent
            for rid in removed:
                row = rows.get(rid)
                if row is not None and not row.desired:
                    record_event(
                        s,
                        EventKind.REPLICA_REMOVED,
                        subjects[row.workload_id],
                        f"replica {rid} stopped on {row.cluster}/{row.node}",
                        replica=rid,
                    )
                    s.delete(row)
                    self._usage_written.pop(rid, None)
            self._update_phases(s, {r.workload_id for r in rows.values()})


def _replica_event(s: Session, kind: EventKind, subject: str, row: ReplicaRow, message: str, **data: object) -> None:
    """Record an event about one replica, naming it and where it runs."""
    record_event(s, kind, subject, message, replica=row.id, cluster=row.cluster, node=row.node, **data)


def _begin(s: Session) -> None:
    """Make sure the database transaction has begun before a savepoint.

    Python's sqlite3 begins a transaction only before INSERT/UPDATE/DELETE: a SAVEPOINT issued first would open
    one of its own, and releasing it would commit on the spot (one commit, and one fsync, per workload).
    """
    connection = s.connection()
    if connection.dialect.name == "sqlite":
        dbapi = connection.connection.dbapi_connection
        if not getattr(dbapi, "in_transaction", True):
            connection.exec_driver_sql("BEGIN")


def _unreplaced(mine: list[ReplicaRow], version: int | None, leaving: dict[str, str]) -> bool:
    """Whether some replica of the current version on a leaving cluster has no replacement bound yet."""
    current = [r for r in mine if r.desired and r.version == version]
    staying = {r.index for r in current if r.cluster not in leaving}
    return any(r.cluster in leaving and r.index not in staying for r in current)


def _release_replaced(s: Session, subject: str, current: list[ReplicaRow], leaving: dict[str, str]) -> None:
    """Make-before-break: once one replica of an index runs on a cluster that stays, the others of that index go.

    The others are the replica it replaces on a drained or silent cluster, or, when a silent cluster came back
    before the replacement ran, the spare of the two.
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
            _replica_event(
                s,
                EventKind.REPLICA_REPLACED,
                subject,
                r,
                f"replica {r.id} on {r.cluster}/{r.node} stops: {keep.id} runs in its place "
                f"on {keep.cluster}/{keep.node}",
                replacement=keep.id,
            )


def _replica_specs(w: WorkloadRow, rows: list[ReplicaRow]) -> dict[str, ReplicaSpec]:
    descriptor = WorkloadDescriptor.model_validate(w.descriptor)
    return {r.id: _replica_spec(r, w.namespace, w.name, descriptor) for r in rows}


def _replica_spec(row: ReplicaRow, namespace: str, name: str, descriptor: WorkloadDescriptor) -> ReplicaSpec:
    d = descriptor.deployment
    assert d is not None, "a catalogue entry has no replicas"  # its replicas are released when it becomes one
    return ReplicaSpec(
        id=row.id,
        workload=f"{namespace}/{name}",
        version=row.version,
        index=row.index,
        node=row.node,
        command=d.command,
        image=d.image,
        working_dir=d.working_dir,
        env=d.env,
        ports=d.ports,
        resources=d.resources,
        isolation=d.isolation,
        runtime=row.runtime,
        health=d.health,
    )
