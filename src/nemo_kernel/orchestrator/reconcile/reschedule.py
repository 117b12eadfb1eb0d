"""Reschedule: replicas of removed clusters are forgotten; those on leaving clusters get replacements queued.

Moves are make-before-break: a replica on a drained or silent cluster keeps its place until a replacement for its
index runs elsewhere (:mod:`phases` releases it then); this step only queues its workload for placement.
"""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from nemo_kernel.domain import EventKind
from nemo_kernel.orchestrator.reconcile.phases import update_phases
from nemo_kernel.orchestrator.reconcile.records import replica_event, subjects
from nemo_kernel.store import Database, workloads
from nemo_kernel.store.clusters import leaving_clusters
from nemo_kernel.store.tables import ClusterRow, ReplicaRow, WorkloadRow


class Rescheduling:
    """The second step of a pass. Remembers only the leaving clusters of the last pass (one entry per cluster)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._leaving: dict[str, str] = {}  # leaving clusters as of the last pass, to notice changes
        self._first_pass = True

    def __call__(self) -> None:
        """Run the step once; see the module docstring."""
        with self._db.transaction() as s:
            clusters = list(s.scalars(select(ClusterRow.name)))
            # Replicas of removed clusters went with their agent: nothing is left to wait for, they are forgotten.
            gone = list(s.scalars(select(ReplicaRow).where(ReplicaRow.cluster.not_in(clusters))))
            names = subjects(s, {r.workload_id for r in gone})
            moved = {r.workload_id for r in gone if r.desired}
            for r in gone:
                if r.desired:
                    workloads.release_replica(s, r)
                    replica_event(
                        s,
                        EventKind.REPLICA_RESCHEDULED,
                        names[r.workload_id],
                        r,
                        f"replica {r.id} leaves {r.cluster}/{r.node}: cluster removed",
                        reason="removed",
                    )
            queue_for_placement(s, moved)
            s.execute(delete(ReplicaRow).where(ReplicaRow.cluster.not_in(clusters)))
            # Replicas on drained or silent clusters keep serving until a replacement runs (see phases):
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
                queue_for_placement(
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
            update_phases(s, deleting | affected)
        self._leaving, self._first_pass = leaving, False


def queue_for_placement(s: Session, workload_ids: set[int]) -> None:
    """Queue workloads for the scheduling step (not those being deleted, nor those already queued)."""
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


def _unreplaced(mine: list[ReplicaRow], version: int | None, leaving: dict[str, str]) -> bool:
    """Whether some replica of the current version on a leaving cluster has no replacement bound yet."""
    current = [r for r in mine if r.desired and r.version == version]
    staying = {r.index for r in current if r.cluster not in leaving}
    return any(r.cluster in leaving and r.index not in staying for r in current)
