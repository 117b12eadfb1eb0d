"""Reschedule: replicas of removed clusters are forgotten; those on leaving clusters that no migration can move
get replacements queued.

A running replica on a drained or NotReady cluster is moved by a migration (the evacuate step). This step queues
for placement the workloads of the others (:func:`phases.left_to_placement`: not running, or their evacuation gave
up, as a cluster that does not answer cannot export its state). Those moves are make-before-break too: the replica
keeps its place until a replacement for its index runs elsewhere (:mod:`phases` releases it then).
"""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from nemo_kernel.domain import EventKind
from nemo_kernel.orchestrator.reconcile.phases import (
    DESCRIPTOR_TEXT,
    StoredReplica,
    is_stateful,
    left_to_placement,
    stored_replicas,
    update_phases,
)
from nemo_kernel.orchestrator.reconcile.records import replica_event, subjects
from nemo_kernel.store import Database, workloads
from nemo_kernel.store.clusters import leaving_clusters
from nemo_kernel.store.migration_records import given_up_evacuations
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
            clusters = set(s.scalars(select(ClusterRow.name)))
            # Replicas of removed clusters went with their agent: nothing is left to wait for, they are forgotten.
            # The clusters replicas name are read from the cluster index first (distinct values): the replica rows
            # are scanned only when one names a removed cluster, not on every pass.
            named = set(s.scalars(select(ReplicaRow.cluster).distinct()))
            removed = sorted(named - clusters)
            gone = list(s.scalars(select(ReplicaRow).where(ReplicaRow.cluster.in_(removed)))) if removed else []
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
            if removed:
                s.execute(delete(ReplicaRow).where(ReplicaRow.cluster.in_(removed)))
            # Replicas on drained or silent clusters that no migration moves keep serving until a replacement runs
            # (see phases): their workloads are queued so the decision engine places one for each index left without.
            leaving = leaving_clusters(s)
            replicas: dict[int, list[StoredReplica]] = {}  # of the workloads on leaving clusters, read once
            if leaving:
                query = select(ReplicaRow.workload_id).where(
                    ReplicaRow.desired.is_(True), ReplicaRow.cluster.in_(list(leaving))
                )
                ids = set(s.scalars(query))
                replicas = stored_replicas(s, ids)
                shapes = select(WorkloadRow.id, WorkloadRow.version, DESCRIPTOR_TEXT)
                rows = s.execute(shapes.where(WorkloadRow.id.in_(ids)))
                # One that does not read is queued all the same: placement records on the workload why.
                kinds = {wid: (v, is_stateful(d, unreadable=False)) for wid, v, d in rows}
                given_up = given_up_evacuations(s)
                queue_for_placement(
                    s,
                    {
                        wid
                        for wid, (version, stateful) in kinds.items()
                        if _unreplaced(replicas.get(wid, []), version, stateful, leaving, given_up)
                    },
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
            # Nothing above changed a replica since they were read: the phases are computed from the same rows.
            update_phases(s, deleting | affected, replicas)
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


def _unreplaced(
    mine: list[StoredReplica], version: int, stateful: bool, leaving: dict[str, str], given_up: set[str]
) -> bool:
    """Whether some replica of the current version left to placement has no replacement bound yet."""
    current = [r for r in mine if r.desired and r.version == version]
    staying = {r.index for r in current if r.cluster not in leaving}
    return any(left_to_placement(r, stateful, leaving, given_up) and r.index not in staying for r in current)
