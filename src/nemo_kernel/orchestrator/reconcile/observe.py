"""Observe: copy what the clusters report into the replica rows, recording crashes and starts as events."""

from __future__ import annotations

import time
from collections.abc import Set as AbstractSet
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from nemo_kernel.clusters import ClusterReport, ReplicaReport
from nemo_kernel.domain import EventKind, ReplicaPhase
from nemo_kernel.orchestrator.reconcile.phases import update_phases
from nemo_kernel.orchestrator.reconcile.records import replica_event, replica_rows, subjects
from nemo_kernel.store import Database
from nemo_kernel.store.tables import ReplicaRow

USAGE_WRITE_INTERVAL = 10.0  # seconds between stored CPU/memory samples of one replica

# What observe compares with a report, read without building objects.
_STATE = select(
    ReplicaRow.id,
    ReplicaRow.desired,
    ReplicaRow.phase,
    ReplicaRow.restarts,
    ReplicaRow.url,
    ReplicaRow.pid,
    ReplicaRow.message,
)
_TABLE = cast(Table, ReplicaRow.__table__)
_USAGE = (
    update(_TABLE)
    .where(_TABLE.c.id == bindparam("rid"))
    .values(cpu_percent=bindparam("cpu"), memory_mib=bindparam("mem"))
)

# A desired replica its cluster does not report goes back to Scheduled (the rollout sends it again), unless it is
# there already or its cluster refused it (Rejected: never sent again).
_NOT_RESET = frozenset({ReplicaPhase.SCHEDULED.value, ReplicaPhase.REJECTED.value})


class Observation:
    """The first step of a pass: the clusters' reports, applied to the replica rows of the clusters that answered."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Replica id -> when its usage was last stored. Each pass keeps only the entries that still matter: of
        # replicas stored on a cluster that answered, sampled within the interval (an older entry allows a write,
        # as no entry does). So it never holds more than the stored replicas, and a replica deleted on any path
        # (removed, its cluster or workload gone) is forgotten on the next pass.
        self.usage_written: dict[str, float] = {}
        self._first_pass = True

    def __call__(self, reports: dict[str, ClusterReport], sampled: AbstractSet[str]) -> None:
        """Apply one pass's reports; see the module docstring.

        Rows are first read as plain tuples; only those whose reported state differs (or that their cluster no
        longer reports) are loaded as objects and go through the event logic; a row whose report differs only by
        usage, due for a sample, is updated by one executemany. A full pass over 100,000 replicas loads no objects
        for the replicas that did not change.

        ``sampled``: the clusters whose report is a full one received in this pass, whose every replica's usage is
        current. Another cluster's whole report carries, for a replica that did not change, the usage of an earlier
        report: its stored sample is left as it is (writing it again would store nothing new, and a cluster given
        one new replica would cost one write per replica it holds).
        """
        now = time.monotonic()
        first, self._first_pass = self._first_pass, False
        if not reports:
            self.usage_written = {}  # no replica is on a cluster that answered
            return
        with self._db.transaction() as s:
            stored = {row.id: row for row in s.execute(_STATE.where(ReplicaRow.cluster.in_(list(reports))))}
            self.usage_written = {
                rid: t for rid, t in self.usage_written.items() if rid in stored and now - t < USAGE_WRITE_INTERVAL
            }
            if not stored:
                return
            seen: dict[str, ReplicaReport] = {}
            changed: set[str] = set()
            usage: list[dict[str, object]] = []
            for cluster, report in reports.items():
                current = cluster in sampled
                for observed in report.replicas:
                    row = stored.get(observed.id)
                    if row is None or not row.desired:
                        continue  # not ours any more: the rollout removes it
                    seen[observed.id] = observed
                    if (row.phase, row.restarts, row.url, row.pid, row.message) != _state(observed):
                        changed.add(observed.id)
                    elif first:
                        # The first pass of this process (a restarted plane adopting what runs): a replica seen
                        # unchanged keeps its stored sample one interval more, so adopting 100,000 writes nothing.
                        self.usage_written[observed.id] = now
                    elif current and now - self.usage_written.get(observed.id, 0.0) >= USAGE_WRITE_INTERVAL:
                        usage.append({"rid": observed.id, "cpu": observed.cpu_percent, "mem": observed.memory_mib})
                        self.usage_written[observed.id] = now
            unseen = {r.id for r in stored.values() if r.desired and r.id not in seen and r.phase not in _NOT_RESET}
            if usage:
                s.connection().execute(_USAGE, usage)
            if not changed and not unseen:
                return
            rows = {r.id: r for r in replica_rows(s, changed | unseen)}
            names = subjects(s, {r.workload_id for r in rows.values()})
            dirty: set[int] = set()
            for rid in changed:
                obj = rows.get(rid)
                if obj is not None and self._apply_report(s, obj, seen[rid], names[obj.workload_id], now):
                    dirty.add(obj.workload_id)
            for rid in unseen:
                obj = rows.get(rid)
                if obj is None:
                    continue
                obj.phase = ReplicaPhase.SCHEDULED.value
                obj.message = "not reported by its cluster; sending it again"
                obj.pid = None
                dirty.add(obj.workload_id)
            update_phases(s, dirty)

    def _apply_report(self, s: Session, row: ReplicaRow, seen: ReplicaReport, subject: str, now: float) -> bool:
        """Copy a replica's report into its row; record what changed as events. True if its phase changed."""
        if not row.desired:
            return False
        if now - self.usage_written.get(row.id, 0.0) >= USAGE_WRITE_INTERVAL:
            row.cpu_percent, row.memory_mib = seen.cpu_percent, seen.memory_mib
            self.usage_written[row.id] = now
        if seen.restarts > row.restarts:
            replica_event(
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
            replica_event(
                s,
                EventKind.REPLICA_STARTED,
                subject,
                row,
                f"replica {row.id} running on {row.cluster}/{row.node} at {seen.url}",
                url=seen.url,
                pid=seen.pid,
            )
        elif (
            seen.phase is ReplicaPhase.CRASHED
            and seen.restarts == row.restarts
            and old_phase != ReplicaPhase.CRASHED.value
        ):
            replica_event(
                s,
                EventKind.REPLICA_CRASHED,
                subject,
                row,
                f"replica {row.id} exited with {seen.exit_code}: {seen.message}",
                exit_code=seen.exit_code,
            )
        return True


def _state(seen: ReplicaReport) -> tuple[str, int, str | None, int | None, str]:
    """What of a replica's report its row stores, usage apart, in ``_STATE``'s order after ``desired``."""
    return (seen.phase.value, seen.restarts, seen.url, seen.pid, seen.message)
