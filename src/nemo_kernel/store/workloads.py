"""Workloads, their replicas and placement decisions in the store."""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from pydantic import ValidationError
from sqlalchemy import Table, and_, bindparam, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from nemo_kernel.domain import (
    NOT_RUNNABLE,
    ClusterPhase,
    EventKind,
    PlacementDecision,
    ReplicaPhase,
    ReplicaStatus,
    WorkloadDescriptor,
    WorkloadPhase,
    WorkloadStatus,
)
from nemo_kernel.domain.common import stored_refusal
from nemo_kernel.store.errors import Conflict, NotFound
from nemo_kernel.store.events import record_event, workload_subject
from nemo_kernel.store.migration_records import unroutable_replicas
from nemo_kernel.store.tables import ClusterRow, DecisionRow, NodeRow, ReplicaRow, WorkloadRow


@dataclass(frozen=True)
class ApplyResult:
    """What applying a descriptor did."""

    row: WorkloadRow
    outcome: Literal["created", "updated", "unchanged"]


def apply_workload(session: Session, descriptor: WorkloadDescriptor) -> ApplyResult:
    """Create a workload, or make a changed descriptor its next version (queued for placement).

    Safe under concurrent applies of one name: the row is locked for the rest of the transaction, so each apply
    that answers ``updated`` gets its own version; a create that loses the race to another create of the same
    name becomes that workload's next version instead of failing.
    """
    stored = descriptor.model_dump(mode="json")
    row = _locked_workload(session, descriptor.namespace, descriptor.name)
    subject = workload_subject(descriptor.namespace, descriptor.name)
    replicas = descriptor.deployment.replicas if descriptor.deployment is not None else 0
    if row is None:
        created = WorkloadRow(
            namespace=descriptor.namespace,
            name=descriptor.name,
            version=1,
            descriptor=stored,
            phase=WorkloadPhase.PENDING.value,
            message="waiting for a placement decision",
            needs_placement=True,
            deleting=False,
        )
        if not descriptor.runnable:
            _register_only(session, created)
        try:
            with session.begin_nested():
                session.add(created)
        except IntegrityError:
            row = _locked_workload(session, descriptor.namespace, descriptor.name)
            if row is None:
                raise  # not the unique name: a real error
        else:
            record_event(
                session,
                EventKind.WORKLOAD_REGISTERED,
                subject,
                "workload registered (version 1)",
                version=1,
                replicas=replicas,
            )
            return ApplyResult(created, "created")
    if row.deleting:
        raise Conflict(f"workload {descriptor.namespace}/{descriptor.name} is being deleted")
    taken_by = row.descriptor.get("display_name")
    if taken_by != descriptor.display_name:
        # Two names map to one derived id ("Web", "web", "WEB"): never let one silently replace the other.
        raise Conflict(
            f"workload {descriptor.namespace}/{descriptor.name} is {taken_by or row.name!r}, not "
            f"{descriptor.display_name or descriptor.name!r}; give this one another name"
        )
    if _same_descriptor(row.descriptor, stored):
        return ApplyResult(row, "unchanged")
    row.version += 1
    row.descriptor = stored
    row.needs_placement = True
    row.message = f"rolling out version {row.version}"
    if not descriptor.runnable:
        _register_only(session, row)
    elif row.phase == WorkloadPhase.REGISTERED.value:
        row.phase = WorkloadPhase.PENDING.value
    record_event(
        session,
        EventKind.WORKLOAD_UPDATED,
        subject,
        f"new version {row.version} applied; rolling out",
        version=row.version,
        replicas=replicas,
    )
    return ApplyResult(row, "updated")


def lock_workload(session: Session, namespace: str, name: str) -> WorkloadRow:
    """The workload, locked until the transaction ends (one writer of its desired state at a time);
    :class:`NotFound` otherwise."""
    row = _locked_workload(session, namespace, name)
    if row is None:
        raise NotFound("workload", f"{namespace}/{name}")
    return row


def _locked_workload(session: Session, namespace: str, name: str) -> WorkloadRow | None:
    """The workload, locked until the transaction ends, re-read from the database."""
    where = (WorkloadRow.namespace == namespace, WorkloadRow.name == name)
    bind = session.get_bind()
    if bind.dialect.name == "sqlite":
        # SQLite has no row locks and starts its transactions on the first write: a write that changes nothing
        # takes the database's write lock now, so no other apply reads the version until this one commits.
        session.execute(
            update(WorkloadRow).where(*where).values(version=WorkloadRow.version, updated_at=WorkloadRow.updated_at)
        )
    query = select(WorkloadRow).where(*where).with_for_update().execution_options(populate_existing=True)
    return session.scalar(query)


def _same_descriptor(stored: dict[str, Any], new: dict[str, Any]) -> bool:
    # Compared as re-validated now: fields added to the model since a row was stored (with their defaults) are
    # not a change, so re-applying an unchanged file after an upgrade rolls nothing out.
    if stored == new:
        return True
    try:
        return WorkloadDescriptor.model_validate(stored).model_dump(mode="json") == new
    except ValidationError:
        return False


def _register_only(session: Session, row: WorkloadRow) -> None:
    """Make ``row`` a catalogue entry: nothing to place, and no replica of an earlier version keeps running."""
    row.needs_placement = False
    row.phase = WorkloadPhase.REGISTERED.value
    row.message = NOT_RUNNABLE
    if row.id is not None:
        for replica in session.scalars(
            select(ReplicaRow).where(ReplicaRow.workload_id == row.id, ReplicaRow.desired.is_(True))
        ):
            release_replica(session, replica)


def get_workload(session: Session, namespace: str, name: str) -> WorkloadRow:
    """The workload ``namespace/name``; :class:`NotFound` otherwise."""
    row = session.scalar(select(WorkloadRow).where(WorkloadRow.namespace == namespace, WorkloadRow.name == name))
    if row is None:
        raise NotFound("workload", f"{namespace}/{name}")
    return row


def list_workloads(
    session: Session, namespace: str | None = None, *, limit: int = 100, offset: int = 0
) -> list[WorkloadRow]:
    """A page of workloads, by namespace then name."""
    query = select(WorkloadRow).order_by(WorkloadRow.namespace, WorkloadRow.name).limit(limit).offset(offset)
    if namespace is not None:
        query = query.where(WorkloadRow.namespace == namespace)
    return list(session.scalars(query))


def mark_deleting(session: Session, row: WorkloadRow) -> None:
    """Start deleting a workload: every replica is released; the engine removes them, then the row."""
    if row.deleting:
        return
    row.deleting = True
    row.needs_placement = False
    row.phase = WorkloadPhase.DELETING.value
    row.message = "stopping replicas"
    for replica in session.scalars(
        select(ReplicaRow).where(ReplicaRow.workload_id == row.id, ReplicaRow.desired.is_(True))
    ):
        release_replica(session, replica)
    record_event(session, EventKind.WORKLOAD_DELETING, workload_subject(row.namespace, row.name), "deletion requested")


def replicas_by_workload(session: Session, workload_ids: Sequence[int]) -> dict[int, list[ReplicaRow]]:
    """Replicas of many workloads in one query (no N+1), ordered by version then index."""
    grouped: dict[int, list[ReplicaRow]] = defaultdict(list)
    if not workload_ids:
        return grouped
    rows = session.scalars(
        select(ReplicaRow)
        .where(ReplicaRow.workload_id.in_(workload_ids))
        .order_by(ReplicaRow.version, ReplicaRow.index, ReplicaRow.created_at)
    )
    for replica in rows:
        grouped[replica.workload_id].append(replica)
    return grouped


def new_replica_id(name: str, version: int, index: int) -> str:
    """A replica id unique across the control plane, readable by a person."""
    return f"{name}-v{version}-{index}-{secrets.token_hex(3)}"


def _adjust_node(session: Session, cluster: str, node: str, cpu: float, memory_mib: int, count: int) -> None:
    # One atomic UPDATE, so concurrent writers never lose an increment.
    cluster_id = select(ClusterRow.id).where(ClusterRow.name == cluster).scalar_subquery()
    session.execute(
        update(NodeRow)
        .where(and_(NodeRow.cluster_id == cluster_id, NodeRow.name == node))
        .values(
            allocated_cpu=NodeRow.allocated_cpu + cpu,
            allocated_memory_mib=NodeRow.allocated_memory_mib + memory_mib,
            replica_count=NodeRow.replica_count + count,
        )
    )


@dataclass(frozen=True)
class Binding:
    """Where one new replica goes: its index, cluster, node and the runtime class chosen there."""

    index: int
    cluster: str
    node: str
    runtime: str | None = None


def bind_replicas(
    session: Session, workload: WorkloadRow, bindings: Sequence[Binding], *, cpu: float, memory_mib: int
) -> list[ReplicaRow]:
    """Bind new replicas of the workload's current version to their nodes and account their requests there: the rows
    added to the session (written by its next flush, so that a pass placing a hundred workloads inserts their rows
    in one statement) and one update per node (not per replica: a decision of 100 replicas is 100 rows on a few
    nodes)."""
    replicas = [
        ReplicaRow(
            id=new_replica_id(workload.name, workload.version, b.index),
            workload_id=workload.id,
            version=workload.version,
            index=b.index,
            cluster=b.cluster,
            node=b.node,
            runtime=b.runtime,
            cpu_request=cpu,
            memory_request_mib=memory_mib,
            desired=True,
            phase=ReplicaPhase.SCHEDULED.value,
            restarts=0,
            message="",
        )
        for b in bindings
    ]
    session.add_all(replicas)
    per_node: dict[tuple[str, str], int] = defaultdict(int)
    for b in bindings:
        per_node[(b.cluster, b.node)] += 1
    names = {cluster for cluster, _ in per_node}
    found = select(ClusterRow.name, NodeRow.name, NodeRow.id).join(ClusterRow, NodeRow.cluster_id == ClusterRow.id)
    ids = {(c, n): i for c, n, i in session.execute(found.where(ClusterRow.name.in_(names)))}
    deltas = [(ids[key], count) for key, count in per_node.items() if key in ids]
    if not deltas:
        return replicas
    # One statement run once per node (executemany), each an atomic increment: concurrent writers lose nothing.
    # Core, not an ORM UPDATE: the ORM would synchronise the session once per statement; the nodes it holds are
    # expired instead, so that they are read again when next used.
    table = cast(Table, NodeRow.__table__)
    increment = (
        update(table)
        .where(table.c.id == bindparam("node_id"))
        .values(
            allocated_cpu=table.c.allocated_cpu + bindparam("d_cpu"),
            allocated_memory_mib=table.c.allocated_memory_mib + bindparam("d_memory"),
            replica_count=table.c.replica_count + bindparam("d_count"),
        )
    )
    session.connection().execute(
        increment,
        [{"node_id": i, "d_cpu": cpu * n, "d_memory": memory_mib * n, "d_count": n} for i, n in deltas],
    )
    for node_id, _ in deltas:
        held = session.identity_map.get(identity_key(NodeRow, node_id))
        if held is not None:
            session.expire(held)
    return replicas


def release_replica(session: Session, replica: ReplicaRow) -> None:
    """Mark a replica for removal and give its requests back to its node."""
    if not replica.desired:
        return
    replica.desired = False
    replica.phase = ReplicaPhase.STOPPING.value
    _adjust_node(session, replica.cluster, replica.node, -replica.cpu_request, -replica.memory_request_mib, -1)


def store_decision(session: Session, workload: WorkloadRow, decision: PlacementDecision) -> DecisionRow:
    """Store a decision with its explanation."""
    row = DecisionRow(
        workload_id=workload.id,
        version=decision.version,
        outcome=decision.outcome.value,
        decision=decision.model_dump(mode="json"),
    )
    session.add(row)
    return row


def latest_decision(session: Session, workload: WorkloadRow) -> tuple[int, PlacementDecision] | None:
    """The most recent decision about the workload, with its id."""
    row = session.scalar(
        select(DecisionRow).where(DecisionRow.workload_id == workload.id).order_by(DecisionRow.id.desc()).limit(1)
    )
    return (row.id, PlacementDecision.model_validate(row.decision)) if row is not None else None


def decision_history(
    session: Session, workload: WorkloadRow, *, after: int = 0, limit: int = 100
) -> list[tuple[int, PlacementDecision]]:
    """Stored decisions about the workload with their ids, oldest first, from the one after id ``after``."""
    rows = session.scalars(
        select(DecisionRow)
        .where(DecisionRow.workload_id == workload.id, DecisionRow.id > after)
        .order_by(DecisionRow.id)
        .limit(limit)
    )
    return [(row.id, PlacementDecision.model_validate(row.decision)) for row in rows]


def placing_decisions(
    session: Session, workload: WorkloadRow, replicas: Sequence[ReplicaRow]
) -> dict[str, tuple[int, PlacementDecision]]:
    """For each replica, the decision that put it where it is (with its id): the latest one of the replica's
    version assigning its index to its node. Replicas are bound in the transaction that stores that decision."""
    wanted = {(r.version, r.index, r.cluster, r.node): r.id for r in replicas}
    found: dict[str, tuple[int, PlacementDecision]] = {}
    rows = session.scalars(
        select(DecisionRow)
        .where(DecisionRow.workload_id == workload.id, DecisionRow.version.in_({r.version for r in replicas}))
        .order_by(DecisionRow.id.desc())
    )
    for row in rows:
        if len(found) == len(wanted):
            break
        for a in row.decision.get("assignments", []):
            rid = wanted.get((row.version, a["index"], a["cluster"], a["node"]))
            if rid is not None and rid not in found:
                found[rid] = (row.id, PlacementDecision.model_validate(row.decision))
    return found


def unobserved_clusters(session: Session) -> frozenset[str]:
    """Clusters whose replicas nobody observes: Unmanaged ones (their stored spec is refused by this version), whose
    replicas are left as they are (``orchestrator.resources``)."""
    query = select(ClusterRow.name).where(ClusterRow.phase == ClusterPhase.UNMANAGED.value)
    return frozenset(session.scalars(query))


def _observed(row: ReplicaRow, unobserved: frozenset[str]) -> bool:
    return not (row.desired and row.cluster in unobserved)


def to_replica_status(row: ReplicaRow, unobserved: frozenset[str] = frozenset()) -> ReplicaStatus:
    """Domain view of a stored replica; on a cluster of ``unobserved``, its phase is Unknown (its last report, in
    the message, may be long gone by now), as Kubernetes shows a pod of a lost node."""
    phase, message = ReplicaPhase(row.phase), row.message
    if not _observed(row, unobserved):
        phase = ReplicaPhase.UNKNOWN
        message = f"its cluster {row.cluster} is Unmanaged: nobody observes this replica; last reported {row.phase}" + (
            f": {row.message}" if row.message else ""
        )
    return ReplicaStatus(
        id=row.id,
        index=row.index,
        version=row.version,
        cluster=row.cluster,
        node=row.node,
        phase=phase,
        url=row.url,
        pid=row.pid,
        restarts=row.restarts,
        cpu_percent=row.cpu_percent,
        memory_mib=row.memory_mib,
        message=message,
        updated_at=row.updated_at,
    )


_REMEDY = "apply it again or delete it"


def readable_descriptor(row: WorkloadRow) -> WorkloadDescriptor:
    """The stored descriptor of a workload, validated again; :class:`Conflict` (409) naming the field when this
    version's checks refuse what an older NEMO stored."""
    try:
        return WorkloadDescriptor.model_validate(row.descriptor)
    except ValidationError as exc:
        raise Conflict(f"workload {row.namespace}/{row.name}: {stored_refusal(exc, 'descriptor', _REMEDY)}") from None


def to_workload_status(
    row: WorkloadRow, replicas: Sequence[ReplicaRow], unobserved: frozenset[str] = frozenset()
) -> WorkloadStatus:
    """Domain view of a workload: desired against actual, replica by replica. Replicas on a cluster of
    ``unobserved`` (:func:`unobserved_clusters`) are shown Unknown and not ready, and the message says so.

    A descriptor stored by an older NEMO that this version's checks refuse (a country code no longer accepted, a
    control character in a name) is shown as None with the reason in the message, so that listing every workload
    still works and the workload can be read, applied again or deleted."""
    message = row.message
    descriptor: WorkloadDescriptor | None
    try:
        descriptor = WorkloadDescriptor.model_validate(row.descriptor)
    except ValidationError as exc:
        descriptor = None
        message = stored_refusal(exc, "descriptor", _REMEDY)
    current = [r for r in replicas if r.desired]
    blind = sorted({r.cluster for r in current if not _observed(r, unobserved)})
    if blind:
        unseen = f"replicas on {', '.join(blind)} (Unmanaged) are not observed"
        message = f"{message}; {unseen}" if message else unseen
    return WorkloadStatus(
        name=row.name,
        display_name=descriptor.display_name if descriptor is not None else None,
        namespace=row.namespace,
        version=row.version,
        phase=WorkloadPhase(row.phase),
        message=message,
        descriptor=descriptor,
        desired_replicas=_desired_replicas(row, descriptor),
        # Counted per index: while a replica moves, it and its replacement may both run.
        ready_replicas=len(
            {
                r.index
                for r in current
                if r.version == row.version and r.phase == ReplicaPhase.RUNNING.value and _observed(r, unobserved)
            }
        ),
        replicas=[to_replica_status(r, unobserved) for r in replicas],
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _desired_replicas(row: WorkloadRow, descriptor: WorkloadDescriptor | None) -> int | None:
    if row.deleting:
        return 0  # whatever it asked for, every replica goes
    if descriptor is None:
        return None  # refused by this version: the count it asks for is not known, and 0 would read as "asks none"
    return descriptor.deployment.replicas if descriptor.deployment is not None else 0  # a catalogue entry runs none


def running_urls(session: Session, workloads: Iterable[str]) -> dict[str, list[str]]:
    """URLs of the running replicas of each ``namespace/name`` in ``workloads`` (what a gateway routes to)."""
    wanted = sorted(set(workloads))
    found: dict[str, list[str]] = {w: [] for w in wanted}
    if not wanted:
        return found
    # Only the exposed workloads' rows: the gateway polls this every half second, and the replicas table holds
    # every replica of every workload.
    exposed = [and_(WorkloadRow.namespace == ns, WorkloadRow.name == name) for ns, _, name in map(_split, wanted)]
    # A migration's target before the switch, and its source after it, run but take no traffic.
    query = (
        select(WorkloadRow.namespace, WorkloadRow.name, ReplicaRow.url)
        .join(ReplicaRow, ReplicaRow.workload_id == WorkloadRow.id)
        .where(or_(*exposed), ReplicaRow.phase == ReplicaPhase.RUNNING.value, ReplicaRow.desired.is_(True))
        .where(ReplicaRow.url.is_not(None))
    )
    for unroutable in unroutable_replicas():
        query = query.where(ReplicaRow.id.not_in(unroutable))
    rows = session.execute(query)
    for namespace, name, url in rows:
        if url:
            found[f"{namespace}/{name}"].append(url)
    return {k: sorted(v) for k, v in found.items()}


def _split(workload: str) -> tuple[str, str, str]:
    return workload.partition("/")
