"""Rollout: each cluster that answered is told which replicas to run and which to remove.

Plan (pure, per cluster, from its stored rows and its report) -> apply (the drivers, all clusters at once) ->
record (what was sent, removed or refused). A refused replica is stored as ``Rejected`` and never sent again; a
replica whose sending fails unexpectedly is recorded on it (message and event) and retried on the next pass, while the
cluster's other replicas are still sent; a cluster failing (unreachable, too slow) stops only its own rollout for
this pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session

from nemo_kernel.clusters import ClusterReport, ClusterUnreachable, ReplicaRejected, ReplicaSpec
from nemo_kernel.domain import EventKind, ReplicaPhase, WorkloadDescriptor
from nemo_kernel.orchestrator.reconcile.phases import update_phases
from nemo_kernel.orchestrator.reconcile.records import record_failure, replica_event, replica_rows, subjects
from nemo_kernel.orchestrator.resources import ResourceManager
from nemo_kernel.store import Database, in_chunks
from nemo_kernel.store.clusters import leaving_clusters
from nemo_kernel.store.events import record_event
from nemo_kernel.store.tables import ReplicaRow, WorkloadRow

log = logging.getLogger(__name__)


@dataclass
class ClusterPlan:
    """What one cluster is told in this pass."""

    ensure: list[ReplicaSpec] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)
    """Ids of rows released and already gone from the cluster: deleted from the store, nothing to send."""

    def __bool__(self) -> bool:
        return bool(self.ensure or self.remove or self.forget)


@dataclass
class ClusterOutcome:
    """What one cluster did with its plan."""

    sent: list[ReplicaSpec] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # replica id -> why the cluster refused it
    failed: dict[str, Exception] = field(default_factory=dict)  # replica id -> how sending it failed unexpectedly
    finished: bool = True  # False: the cluster stopped answering, or a replica failed (tried again next pass)


class Placed(Protocol):
    """What the plan reads of a replica row: a stored row, or the plain tuple read first (:class:`_Light`)."""

    @property
    def id(self) -> str: ...
    @property
    def cluster(self) -> str: ...
    @property
    def desired(self) -> bool: ...
    @property
    def phase(self) -> str: ...


class _Light(NamedTuple):
    id: str
    cluster: str
    desired: bool
    phase: str


_LIGHT = (ReplicaRow.id, ReplicaRow.cluster, ReplicaRow.desired, ReplicaRow.phase)
# The session of a plan holds no replica to keep in step with a bulk DELETE (only those to send, not deleted).
_NO_SYNC = {"synchronize_session": False}
PENDING_CLUSTERS = (
    select(ReplicaRow.cluster)
    .where(
        or_(
            and_(ReplicaRow.desired.is_(True), ReplicaRow.phase == ReplicaPhase.SCHEDULED.value),
            ReplicaRow.desired.is_(False),
        )
    )
    .distinct()
)
"""Clusters with a replica to send (desired, Scheduled) or to remove (released): asked on every pass after a change
of desired state, and answered from the index ``ix_replicas_desired_phase_cluster`` alone (at 100,000 replicas, a
scan of them all took about 0.2 s of every such pass)."""


def to_send(row: Placed, reported: set[str], leaving: dict[str, str]) -> bool:
    """Whether a replica is (re)sent to its cluster: desired, not reported by it, on a cluster that stays, and
    not refused by it before (its replacement, if any, is placed elsewhere)."""
    return (
        row.desired
        and row.id not in reported
        and row.cluster not in leaving
        and row.phase != ReplicaPhase.REJECTED.value
    )


def has_work(rows: Sequence[Placed], reported: set[str], leaving: dict[str, str]) -> bool:
    """Whether :func:`plan_cluster` would find anything to send, remove or forget on this cluster."""
    desired = {r.id for r in rows if r.desired}
    return any(rid not in desired for rid in reported) or any(
        (not r.desired and r.id not in reported) or to_send(r, reported, leaving) for r in rows
    )


def plan_cluster(rows: Sequence[Placed], reported: set[str], specs: dict[str, ReplicaSpec]) -> ClusterPlan:
    """One cluster's plan from its stored rows, the ids it reported and the specs of what is to be sent."""
    plan = ClusterPlan()
    desired = {r.id for r in rows if r.desired}
    plan.remove = [rid for rid in reported if rid not in desired]
    for r in rows:
        if r.id in reported:
            continue
        if not r.desired:
            plan.forget.append(r.id)
        elif r.id in specs:
            plan.ensure.append(specs[r.id])
    return plan


class Rollout:
    """The last step of a pass."""

    def __init__(self, db: Database, resources: ResourceManager, driver_timeout: float) -> None:
        self._db = db
        self._resources = resources
        self._timeout = driver_timeout
        self.unfinished: set[str] = set()
        """Clusters whose last rollout was interrupted or failed a replica: planned again on the next pass even
        when nothing changed (one entry per cluster at most)."""

    async def __call__(self, reports: dict[str, ClusterReport], changed: AbstractSet[str] | None = None) -> None:
        """Plan, apply and record one rollout of the clusters in ``reports``; see the module docstring.

        ``changed``: when given, only the clusters in it (their report changed), those whose last rollout did not
        finish and those the store holds a replica to send (Scheduled) or remove (released) for are planned; one
        query finds the last, so a pass after a change of desired state does not read every replica of the fleet.
        """
        if not reports:
            return
        if changed is not None:
            wanted = changed | self.unfinished | await asyncio.to_thread(self._pending)
            reports = {c: r for c, r in reports.items() if c in wanted}
            if not reports:
                return
        plans = await asyncio.to_thread(self._plan, reports)
        outcomes = await asyncio.gather(*(self._apply(c, p) for c, p in plans.items()))
        self.unfinished -= set(reports)
        self.unfinished |= {c for c, o in zip(plans, outcomes, strict=True) if not o.finished}
        if any(o.sent or o.removed or o.rejected or o.failed for o in outcomes):
            await asyncio.to_thread(self._record, outcomes)

    def _pending(self) -> set[str]:
        """Clusters with a replica to send or to remove, as the store says (observe stores a desired replica its
        cluster no longer reports as Scheduled, so it is one)."""
        with self._db.snapshot() as s:
            return set(s.scalars(PENDING_CLUSTERS))

    def _plan(self, reports: dict[str, ClusterReport]) -> dict[str, ClusterPlan]:
        plans: dict[str, ClusterPlan] = {}
        with self._db.transaction() as s:
            reported = {cluster: {rep.id for rep in report.replicas} for cluster, report in reports.items()}
            leaving = leaving_clusters(s)
            # Plain tuples: the plan is made from them, and only the replicas to send are loaded as objects (their
            # specs read more of the row). A cluster given one new replica holds a hundred others that are not.
            light: dict[str, list[_Light]] = defaultdict(list)
            for row in s.execute(select(*_LIGHT).where(ReplicaRow.cluster.in_(list(reports)))):
                light[row.cluster].append(_Light(row.id, row.cluster, row.desired, row.phase))
            busy = [c for c, ids in reported.items() if has_work(light.get(c, []), ids, leaving)]
            reported = {c: reported[c] for c in busy}
            unsent = [r.id for c in busy for r in light[c] if to_send(r, reported[c], leaving)]
            specs = _specs(s, replica_rows(s, unsent))
            forget: list[str] = []
            for cluster, ids in reported.items():
                plan = plan_cluster(light.get(cluster, []), ids, specs)
                forget += plan.forget
                if plan.ensure or plan.remove:
                    plans[cluster] = plan
            for chunk in in_chunks(forget):
                s.execute(delete(ReplicaRow).where(ReplicaRow.id.in_(chunk)), execution_options=_NO_SYNC)
        return plans

    async def _apply(self, cluster: str, plan: ClusterPlan) -> ClusterOutcome:
        done = ClusterOutcome()
        driver = self._resources.driver(cluster)
        if driver is None:
            return done
        try:
            for spec in plan.ensure:
                try:
                    async with asyncio.timeout(self._timeout):  # no task per replica, as wait_for makes
                        await driver.ensure_replica(spec)
                except ReplicaRejected as exc:
                    done.rejected[spec.id] = f"{cluster} refused the replica: {exc}"
                    continue
                except (ClusterUnreachable, TimeoutError):
                    raise
                except Exception as exc:
                    # One replica failing in an unexpected way (a driver bug, a spec it chokes on) is kept to its
                    # workload: the cluster's other replicas are still sent; this one is retried on the next pass.
                    done.failed[spec.id] = exc
                    continue
                done.sent.append(spec)
            for rid in plan.remove:
                async with asyncio.timeout(self._timeout * 3):
                    await driver.remove_replica(rid)
                done.removed.append(rid)
        except (ClusterUnreachable, TimeoutError) as exc:
            done.finished = False
            log.warning("cluster %s: rollout interrupted: %s", cluster, exc or type(exc).__name__)
        except Exception:
            # A removal failing in an unexpected way stops this cluster's rollout for this pass, not everyone's.
            done.finished = False
            log.exception("cluster %s: rollout failed; retrying on the next pass", cluster)
        if done.failed:
            done.finished = False
        return done

    def _record(self, outcomes: list[ClusterOutcome]) -> None:
        sent = [spec for o in outcomes for spec in o.sent]
        removed = [rid for o in outcomes for rid in o.removed]
        rejected = {rid: why for o in outcomes for rid, why in o.rejected.items()}
        failed = {rid: exc for o in outcomes for rid, exc in o.failed.items()}
        with self._db.transaction() as s:
            ids = [x.id for x in sent] + removed + list(rejected) + list(failed)
            # in chunks: a pass that sends every replica again (a cluster restarted empty) records 100,000
            rows = {r.id: r for r in replica_rows(s, ids)}
            names = subjects(s, {r.workload_id for r in rows.values()})
            for spec in sent:
                row = rows.get(spec.id)
                if row is not None and row.desired:
                    row.phase = ReplicaPhase.STARTING.value
                    replica_event(
                        s,
                        EventKind.DEPLOYMENT_APPLIED,
                        names[row.workload_id],
                        row,
                        f"replica {spec.id} sent to {row.cluster}/{row.node}",
                        version=spec.version,
                    )
            for rid, why in rejected.items():
                row = rows.get(rid)
                if row is None:
                    continue
                row.message = why
                if row.desired:
                    row.phase = ReplicaPhase.REJECTED.value  # stored, so no pass (nor a restart) sends it again
                replica_event(s, EventKind.REPLICA_REJECTED, names[row.workload_id], row, why)
            for rid, exc in failed.items():
                row = rows.get(rid)
                detail = " ".join(str(exc).split())[:400] or type(exc).__name__
                why = f"sending it to {row.cluster if row else '?'} failed (retried on every pass): {detail}"
                if row is None or row.message == why:
                    continue  # said once per distinct failure, not once per pass
                row.message = why  # a Scheduled replica's message is kept until it is sent or reported
                log.warning("replica %s: %s", rid, why, exc_info=exc)
                replica_event(s, EventKind.WORKLOAD_FAILED, names[row.workload_id], row, why, step="rollout")
            for rid in removed:
                row = rows.get(rid)
                if row is not None and not row.desired:
                    record_event(
                        s,
                        EventKind.REPLICA_REMOVED,
                        names[row.workload_id],
                        f"replica {rid} stopped on {row.cluster}/{row.node}",
                        replica=rid,
                    )
                    s.delete(row)
            update_phases(s, {r.workload_id for r in rows.values()})


def _specs(s: Session, rows: list[ReplicaRow]) -> dict[str, ReplicaSpec]:
    """What to send for each row, by workload; a workload whose descriptor cannot be read is recorded and skipped."""
    by_workload: dict[int, list[ReplicaRow]] = defaultdict(list)
    for r in rows:
        by_workload[r.workload_id].append(r)
    specs: dict[str, ReplicaSpec] = {}
    for w in s.scalars(select(WorkloadRow).where(WorkloadRow.id.in_(list(by_workload)))):
        # An older version's replica that vanished is not recreated: the new version replaces it.
        wanted = [r for r in by_workload[w.id] if r.version == w.version]
        if not wanted:
            continue
        try:  # no savepoint needed: building the specs writes nothing
            descriptor = WorkloadDescriptor.model_validate(w.descriptor)
            specs.update({r.id: _replica_spec(r, w.namespace, w.name, descriptor) for r in wanted})
        except Exception as exc:
            record_failure(s, w, "rollout", exc)
    return specs


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
        metrics=d.metrics,
    )
