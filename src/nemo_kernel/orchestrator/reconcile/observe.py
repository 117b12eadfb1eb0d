"""Observe: copy what the clusters report into the replica rows, recording crashes and starts as events."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from nemo_kernel.clusters import ClusterReport, ReplicaReport
from nemo_kernel.domain import EventKind, ReplicaPhase
from nemo_kernel.orchestrator.reconcile.phases import update_phases
from nemo_kernel.orchestrator.reconcile.records import replica_event, subjects
from nemo_kernel.store import Database
from nemo_kernel.store.tables import ReplicaRow

USAGE_WRITE_INTERVAL = 10.0  # seconds between stored CPU/memory samples of one replica

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

    def __call__(self, reports: dict[str, ClusterReport]) -> None:
        """Apply one pass's reports; see the module docstring."""
        now = time.monotonic()
        if not reports:
            self.usage_written = {}  # no replica is on a cluster that answered
            return
        with self._db.transaction() as s:
            rows = {r.id: r for r in s.scalars(select(ReplicaRow).where(ReplicaRow.cluster.in_(list(reports))))}
            self.usage_written = {
                rid: t for rid, t in self.usage_written.items() if rid in rows and now - t < USAGE_WRITE_INTERVAL
            }
            if not rows:
                return
            names = subjects(s, {r.workload_id for r in rows.values()})
            dirty: set[int] = set()
            seen: set[str] = set()
            for report in reports.values():
                for observed in report.replicas:
                    row = rows.get(observed.id)
                    if row is None:
                        continue  # not ours any more: the rollout removes it
                    seen.add(observed.id)
                    if self._apply_report(s, row, observed, names[row.workload_id], now):
                        dirty.add(row.workload_id)
            for row in rows.values():
                if row.desired and row.id not in seen and row.phase not in _NOT_RESET:
                    row.phase = ReplicaPhase.SCHEDULED.value
                    row.message = "not reported by its cluster; sending it again"
                    row.pid = None
                    dirty.add(row.workload_id)
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
