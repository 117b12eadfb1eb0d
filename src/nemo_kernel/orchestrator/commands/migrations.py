"""Migration commands: check a requested move against the decision engine's filters and store it.

The migration loop (``nemo_kernel.migration.MigrationRunner``) carries a stored migration out; this module only
decides whether it may start. Refusals, each changing nothing: unknown workload, replica, cluster or node (404
naming it), a target equal to the source (422, field ``to``), another migration of the workload running (409
naming it), a target a filter rejects (409 naming the filter), a stateful move across CPU architectures (409).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from nemo_kernel.bus import Message
from nemo_kernel.domain import (
    DeploymentSpec,
    DocumentError,
    EventKind,
    MigrationMode,
    MigrationRequest,
    MigrationStatus,
    NodeSpec,
    PlacementDecision,
    ReplicaPhase,
    load_document,
)
from nemo_kernel.domain.errors import ApiError, refusal
from nemo_kernel.orchestrator.commands.base import Wake
from nemo_kernel.orchestrator.decision import ClusterCandidate, DecisionEngine
from nemo_kernel.orchestrator.placement import Inventory
from nemo_kernel.store import Conflict, Database, NotFound, events, workloads
from nemo_kernel.store import clusters as cluster_store
from nemo_kernel.store.events import record_event
from nemo_kernel.store.migration_records import active_of_workload, plan_migration, to_status
from nemo_kernel.store.tables import MigrationRow, ReplicaRow, WorkloadRow

log = logging.getLogger(__name__)

#: The routing key of migration petitions from bus modules.
MIGRATE_INTENT = "intent.migrate"


def split_workload(ref: str) -> tuple[str, str]:
    """``namespace/name`` or ``name`` (namespace ``default``)."""
    namespace, _, name = ref.rpartition("/")
    return namespace or "default", name


def check_target(
    decisions: DecisionEngine,
    w: WorkloadRow,
    spec: DeploymentSpec,
    index: int,
    candidates: list[ClusterCandidate],
    cluster: str,
    node: str | None,
    runtime: str | None,
    avoid_node: str | None,
) -> tuple[str, str | None, PlacementDecision]:
    """The node of ``cluster`` (``node`` if given) one more replica of ``w`` may move to, its runtime and the
    decision that chose them, as the decision engine's filters and scores say; :class:`ApiError` 409 naming the
    filter that rejects an explicit target.

    Uses only :meth:`DecisionEngine.decide`, on candidates narrowed to the target: ``avoid_node`` (the source's
    node, on the same runtime) is left out, and a requested ``runtime`` is the only one the node offers, so the
    runtime filter re-validates the workload's isolation level with it.
    """
    chosen = next((c for c in candidates if c.name == cluster), None)
    if chosen is None:
        raise NotFound("cluster", cluster)
    nodes = list(chosen.nodes)
    if node is not None:
        nodes = [n for n in nodes if n.name == node]
        if not nodes:
            raise NotFound("node", f"{cluster}/{node}")
    if avoid_node is not None:
        nodes = [n for n in nodes if n.name != avoid_node]
    if runtime is not None:
        for n in nodes:
            if runtime not in n.runtimes:
                raise _refused("runtime", f"node {n.name} offers no runtime {runtime} ({', '.join(n.runtimes)})",
                               cluster, n.name)  # fmt: skip
        nodes = [replace(n, runtimes=(runtime,)) for n in nodes]
    if not nodes:
        raise _bad_target("same_as_source", "the target is the replica's own node")
    decision = decisions.decide(w.namespace, w.name, w.version, spec, [index], [replace(chosen, nodes=tuple(nodes))])
    if decision.assignments:
        a = decision.assignments[0]
        picked = next((v.runtime for v in decision.candidates if v.node == a.node), None)
        return a.node, picked, decision
    verdict = next((v for v in decision.candidates if v.rejected_by is not None), None)
    if verdict is None:
        raise _refused("placement", decision.summary, cluster, node)
    raise _refused(verdict.rejected_by or "placement", verdict.reason, cluster, verdict.node)


def _refused(filter_name: str, reason: str, cluster: str, node: str | None) -> ApiError:
    where = f"{cluster}/{node}" if node else cluster
    return ApiError(
        409,
        "target_refused",
        f"{where} refused by filter {filter_name!r}: {reason}",
        {"filter": filter_name, "reason": reason, "cluster": cluster, "node": node, "field": "to"},
    )


class MigrationCommands:
    """Starts migrations; the migration loop carries them out."""

    def __init__(self, db: Database, wake: Wake, decisions: DecisionEngine) -> None:
        """``wake`` asks for a migration and reconcile pass; ``decisions`` checks targets."""
        self._db = db
        self._wake = wake
        self._decisions = decisions

    def start(self, request: MigrationRequest, requested_by: str) -> MigrationStatus:
        """Validate the move whole, store it as Planned with its ``migration.started`` event, wake the loops."""
        with self._db.transaction() as s:
            row = self.plan(s, request, requested_by)
            status = to_status(row)
        self._wake()
        return status

    def plan(self, s: Session, request: MigrationRequest, requested_by: str, reason: str | None = None) -> MigrationRow:
        """Check the move whole and store it as Planned in the caller's transaction, with its ``migration.started``
        event; ``reason`` says why the engine moves it (None: a user or module asked). Refusals are raised before
        anything is written; the caller wakes the loops (a reaction's dispatcher does)."""
        namespace, name = split_workload(request.workload)
        w = workloads.lock_workload(s, namespace, name)  # one migration check at a time per workload
        try:
            spec = workloads.readable_descriptor(w).deployment
        except Conflict as exc:  # stored by an older NEMO and refused now: a refusal like the others here
            raise ApiError(409, "not_movable", str(exc), {"field": "workload"}) from None
        if spec is None or w.deleting:
            why = "is being deleted" if w.deleting else "is a catalogue entry (nothing runs)"
            raise ApiError(409, "not_movable", f"workload {namespace}/{name} {why}", {"field": "workload"})
        running = active_of_workload(s, w.id)
        if running is not None:
            raise ApiError(
                409,
                "migration_running",
                f"workload {namespace}/{name} is already moving: migration {running.id} ({running.phase})",
                {"migration": running.id, "phase": running.phase, "field": "workload"},
            )
        to = request.to
        # Without a replica named, "move it to cluster X" means one that is not on X yet if there is one (a node or
        # a runtime named may be a move within X; with every replica on X, one moves to another node of X).
        away_from = to.cluster if to.node is None and to.runtime is None else None
        source = self._source(s, w, request.replica, away_from=away_from)
        target_cluster = to.cluster or source.cluster
        if to.cluster is None and to.node is None and to.runtime is None:
            raise _bad_target("invalid", "give a target cluster, node or runtime")
        mode = request.mode or (MigrationMode.STATEFUL if spec.stateful else MigrationMode.STATELESS)
        same_runtime = to.runtime is None or to.runtime == source.runtime
        if target_cluster == source.cluster and to.node == source.node and same_runtime:
            raise _bad_target("same_as_source", "the target is where the replica runs")
        cluster_store.get_cluster(s, target_cluster)  # 404 naming an unknown cluster
        candidates = Inventory.load(s).candidates({})
        # Without a node, another node of the cluster; on the same node only a change of runtime is a move.
        avoid = source.node if target_cluster == source.cluster and same_runtime else None
        if mode is MigrationMode.STATEFUL:
            # The state is handed over as the application wrote it: only to a node of the same architecture.
            candidates = _same_architecture(s, candidates, source, target_cluster, to.node)
        node, runtime, decision = check_target(
            self._decisions, w, spec, source.index, candidates, target_cluster, to.node, to.runtime, avoid
        )
        if reason is not None:
            # The engine's own move: its decision is stored, as placement's and evacuation's are, so the workload's
            # placement explains where the replica runs after it.
            workloads.store_decision(s, w, decision)
            record_event(
                s, EventKind.PLACEMENT_DECIDED, events.workload_subject(w.namespace, w.name), decision.summary,
                version=w.version, outcome=decision.outcome.value,
                assignments=[a.model_dump() for a in decision.assignments],
            )  # fmt: skip
        return plan_migration(s, w, source, mode, (target_cluster, node, runtime), requested_by, reason)

    def _source(self, s: Session, w: WorkloadRow, replica: str | None, away_from: str | None) -> ReplicaRow:
        query = select(ReplicaRow).where(ReplicaRow.workload_id == w.id, ReplicaRow.desired.is_(True))
        if replica is not None:
            row = s.scalar(query.where(ReplicaRow.id == replica))
            if row is None:
                raise NotFound("replica", replica)
        else:
            running = query.where(ReplicaRow.version == w.version, ReplicaRow.phase == ReplicaPhase.RUNNING.value)
            row = s.scalar(running.order_by(ReplicaRow.cluster == away_from, ReplicaRow.index).limit(1))
            if row is None:
                raise ApiError(409, "not_running", f"workload {w.namespace}/{w.name} has no running replica to move",
                               {"field": "workload"})  # fmt: skip
        if row.phase != ReplicaPhase.RUNNING.value:
            raise ApiError(409, "not_running", f"replica {row.id} is {row.phase}, not Running", {"field": "replica"})
        return row

    async def on_bus_petition(self, sender: str, message: Message) -> None:
        """The bus door for ``intent.migrate`` (``sender`` verified): exactly once per message id; a refusal is
        recorded as ``intent.rejected``; progress reaches the sender as the migration's events (``migration.#``),
        which carry ``requested_by`` = ``module:<sender>``."""
        await asyncio.to_thread(self._handle_message, sender, message)
        self._wake()

    def _handle_message(self, sender: str, message: Message) -> None:
        subject = f"intent/{sender}/{message.message_id}"
        with self._db.transaction() as s:
            if events.history(s, subject, limit=1):
                return  # a redelivery
        try:
            request = MigrationRequest.model_validate(load_document(message.body, yaml_syntax=True))
            with self._db.transaction() as s:
                if events.history(s, subject, limit=1):
                    return
                row = self.plan(s, request, f"module:{sender}")
                record_event(
                    s, EventKind.INTENT_ACCEPTED, subject, f"petition {message.routing_key} from {sender}: migration "
                    f"{row.id} started", routing_key=message.routing_key, sender=sender, migration=row.id,
                )  # fmt: skip
        except (ValidationError, DocumentError, ApiError, NotFound) as exc:
            text = f"petition {message.routing_key} refused: {refusal(exc)}"
            log.warning("%s", text)
            with self._db.transaction() as s:
                record_event(
                    s, EventKind.INTENT_REJECTED, subject, text, routing_key=message.routing_key, sender=sender,
                    error=refusal(exc),
                )  # fmt: skip


def _bad_target(code: str, message: str) -> ApiError:
    """A 422 naming ``to``, in the API's shape of a field error (a list of ``{field, message}``)."""
    return ApiError(422, code, message, [{"field": "to", "message": message}])


def _same_architecture(
    s: Session, candidates: list[ClusterCandidate], source: ReplicaRow, cluster: str, node: str | None
) -> list[ClusterCandidate]:
    """The candidates with the target cluster's nodes narrowed to the source's architecture; 409
    ``architecture_mismatch`` when the named node, or every node of the cluster, has another one."""
    arch = _architecture(s, source.cluster, source.node)
    chosen = next((c for c in candidates if c.name == cluster), None)
    if chosen is None:
        raise NotFound("cluster", cluster)
    named = [n for n in chosen.nodes if n.name == node] if node is not None else list(chosen.nodes)
    if node is not None and not named:
        raise NotFound("node", f"{cluster}/{node}")
    kept = [n for n in named if n.architecture == arch]
    if not kept:
        other = sorted({n.architecture for n in named})
        where = f"{cluster}/{node}" if node is not None else f"any node of {cluster}"
        raise ApiError(
            409,
            "architecture_mismatch",
            f"a stateful move from {arch} ({source.cluster}/{source.node}) to {'/'.join(other)} ({where}) is refused: "
            "its state may not be understood across CPU architectures",
            {"field": "to", "source": arch, "target": other[0] if len(other) == 1 else other},
        )
    if node is None:
        kept = [n for n in chosen.nodes if n.architecture == arch]
    return [replace(c, nodes=tuple(kept)) if c.name == cluster else c for c in candidates]


def _architecture(s: Session, cluster: str, node: str) -> str:
    row = cluster_store.get_cluster(s, cluster)
    for n in row.nodes:
        if n.name == node:
            return NodeSpec.model_validate(n.spec).architecture
    raise NotFound("node", f"{cluster}/{node}")
