"""Clusters and nodes in the store, and their domain views."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError
from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session, defer, selectinload

from nemo_kernel.domain import ClusterPhase, ClusterSpec, ClusterStatus, EventKind, NodeSpec, NodeStatus
from nemo_kernel.domain.common import stored_refusal
from nemo_kernel.store.errors import Conflict, NotFound
from nemo_kernel.store.events import cluster_subject, record_event
from nemo_kernel.store.tables import ClusterRow, NodeRow, ReplicaRow


def add_cluster(session: Session, spec: ClusterSpec) -> ClusterRow:
    """Register a cluster and its nodes; :class:`Conflict` if the name is taken."""
    if session.scalar(select(ClusterRow.id).where(ClusterRow.name == spec.name)) is not None:
        raise Conflict(f"cluster {spec.name!r} already exists")
    row = ClusterRow(
        name=spec.name,
        driver=spec.driver.value,
        tier=spec.tier.value,
        region=spec.region,
        country=spec.country,
        spec=spec.model_dump(mode="json"),
        phase=ClusterPhase.PENDING.value,
        cordoned=False,
        draining=False,
        message="",
    )
    row.nodes = [NodeRow(name=n.name, spec=n.model_dump(mode="json")) for n in spec.nodes]
    session.add(row)
    session.flush()
    record_event(
        session,
        EventKind.CLUSTER_REGISTERED,
        cluster_subject(spec.name),
        f"cluster {spec.name} registered",
        tier=spec.tier.value,
        nodes=len(spec.nodes),
    )
    return row


def get_cluster(session: Session, name: str) -> ClusterRow:
    """The cluster named ``name`` with its nodes; :class:`NotFound` otherwise."""
    row = session.scalar(select(ClusterRow).where(ClusterRow.name == name).options(selectinload(ClusterRow.nodes)))
    if row is None:
        raise NotFound("cluster", name)
    return row


def cluster_names(session: Session) -> set[str]:
    """The names of every registered cluster (one query, no nodes loaded)."""
    return set(session.scalars(select(ClusterRow.name)))


def list_clusters(session: Session) -> list[ClusterRow]:
    """Every cluster with its nodes (two queries, whatever the count)."""
    return list(session.scalars(select(ClusterRow).options(selectinload(ClusterRow.nodes)).order_by(ClusterRow.name)))


def clusters_with_spec_text(session: Session) -> list[tuple[ClusterRow, str]]:
    """Every cluster by name with its spec as the stored text (for a cache of validated specs keyed by it); the
    rows' nodes and parsed ``spec`` are not loaded (one query)."""
    query = select(ClusterRow, cast(ClusterRow.spec, Text)).options(defer(ClusterRow.spec)).order_by(ClusterRow.name)
    return [(row, text) for row, text in session.execute(query).tuples()]


def remove_cluster(session: Session, name: str) -> ClusterRow:
    """Delete a cluster and its nodes; the engine reschedules the replicas it hosted."""
    row = get_cluster(session, name)
    session.delete(row)
    record_event(session, EventKind.CLUSTER_REMOVED, cluster_subject(name), f"cluster {name} removed")
    return row


def set_links(session: Session, spec: ClusterSpec) -> ClusterRow:
    """Store the links of ``spec`` on its cluster (``spec`` is the stored spec with new links, validated whole);
    records ``cluster.links_changed`` when they differ. :class:`NotFound` if the cluster is unknown."""
    row = get_cluster(session, spec.name)
    stored = spec.model_dump(mode="json")
    if row.spec.get("links", {}) == stored["links"]:
        return row
    row.spec = stored
    record_event(
        session,
        EventKind.CLUSTER_LINKS_CHANGED,
        cluster_subject(spec.name),
        f"cluster {spec.name} links: {', '.join(sorted(spec.links)) or 'none'}",
        links=stored["links"],
    )
    return row


def set_schedulable(session: Session, name: str, *, cordoned: bool, draining: bool = False) -> ClusterRow:
    """Cordon (no new replicas), drain (cordon and move replicas away) or uncordon a cluster."""
    row = get_cluster(session, name)
    if (row.cordoned, row.draining) == (cordoned, draining):
        return row
    row.cordoned = cordoned
    row.draining = draining
    if draining:
        kind, text = EventKind.CLUSTER_DRAINING, f"cluster {name} drained: its replicas move to other clusters"
    elif cordoned:
        kind, text = EventKind.CLUSTER_CORDONED, f"cluster {name} cordoned: no new replicas"
    else:
        kind, text = EventKind.CLUSTER_UNCORDONED, f"cluster {name} schedulable again"
    record_event(session, kind, cluster_subject(name), text)
    return row


DRAINED = "drained"
NOT_ANSWERING = "not answering"


def leaving_reason(phase: str, draining: bool) -> str | None:
    """Why the replicas on a cluster move elsewhere (drained, or not answering heartbeats); ``None`` if they stay.

    They move make-before-break: each keeps running until its replacement runs elsewhere.
    """
    if draining:
        return DRAINED
    if phase == ClusterPhase.NOT_READY.value:
        return NOT_ANSWERING
    return None


def leaving_clusters(session: Session) -> dict[str, str]:
    """Clusters whose replicas move elsewhere, with the reason (see :func:`leaving_reason`)."""
    rows = session.execute(select(ClusterRow.name, ClusterRow.phase, ClusterRow.draining))
    return {name: why for name, phase, draining in rows if (why := leaving_reason(phase, draining)) is not None}


_REMEDY = "remove the cluster and register it again"


def readable_spec(row: ClusterRow) -> ClusterSpec:
    """The stored spec of a cluster, validated again; :class:`Conflict` (409) naming the field when this version's
    checks refuse what an older NEMO stored."""
    try:
        return ClusterSpec.model_validate(row.spec)
    except ValidationError as exc:
        raise spec_refusal(row.name, exc) from None


def spec_refusal(name: str, exc: ValidationError) -> Conflict:
    """The :class:`Conflict` of cluster ``name`` whose stored spec this version's checks refuse (``exc``)."""
    return Conflict(f"cluster {name}: {stored_refusal(exc, 'spec', _REMEDY)}")


def to_cluster_status(row: ClusterRow, spec_of: Callable[[ClusterRow], ClusterSpec] | None = None) -> ClusterStatus:
    """Domain view of a stored cluster; ``spec_of`` validates its stored spec (by default ``row.spec`` again: a
    list passes a cache of validated specs instead).

    A spec stored by an older NEMO that this version's checks refuse (a country code no longer accepted, a line
    break in a region) is shown as None with the reason in the message, so that listing every cluster still works;
    the resource manager leaves such a cluster unmanaged."""
    spec: ClusterSpec | None
    try:
        spec = spec_of(row) if spec_of is not None else ClusterSpec.model_validate(row.spec)
        message = row.message
    except ValidationError as exc:
        spec, message = None, stored_refusal(exc, "spec", _REMEDY)
    return ClusterStatus(
        name=row.name,
        spec=spec,
        phase=ClusterPhase(row.phase),
        cordoned=row.cordoned,
        last_heartbeat=row.last_heartbeat,
        message=message,
        created_at=row.created_at,
    )


def stopping_by_node(session: Session, cluster: str) -> dict[str, int]:
    """How many released replicas each node of the cluster still holds rows for (one query on the replicas'
    cluster index): a release gives the node's capacity back at once, but the row stays until the cluster reports
    the replica gone."""
    query = (
        select(ReplicaRow.node, func.count())
        .where(ReplicaRow.cluster == cluster, ReplicaRow.desired.is_(False))
        .group_by(ReplicaRow.node)
    )
    return {node: count for node, count in session.execute(query).tuples()}


def to_node_status(cluster: ClusterRow, node: NodeRow, *, stopping: int = 0) -> NodeStatus:
    """Domain view of a stored node with its capacity accounting and the released replicas it still runs."""
    return NodeStatus(
        cluster=cluster.name,
        spec=NodeSpec.model_validate(node.spec),
        ready=node.ready and cluster.phase == ClusterPhase.READY.value,
        allocated_cpu=round(node.allocated_cpu, 6),
        allocated_memory_mib=node.allocated_memory_mib,
        replicas=node.replica_count,
        stopping=stopping,
    )
