"""Rebalance commands: plan a global re-optimisation of the running replicas and apply it through migrations.

``run`` reads the inventory and every settled workload, plans with ``orchestrator.rebalance.plan_rebalance`` and
stores the plan (``rebalance.planned``, or ``rebalance.failed`` when the solve gave nothing). With ``apply`` and a
saving above the thresholds, its moves are queued and ``advance`` (called by the control plane's migration loop)
starts them, one migration per workload at a time, make-before-break through ``MigrationCommands.start``, which
re-checks each target with the decision engine: a move that became stale (a filter or capacity refuses it now) is
skipped with the reason. A queued move whose replica is still Scheduled or Starting (as a restart leaves replicas
until their cluster reports them) waits for it, up to ``STARTING_WAIT_S`` since the replica last changed, then is
tried (and skipped if the replica does not run). When every move ended, ``rebalance.applied``.

Kept in place (the plan's ``pinned``): ``placement.rebalance: never``, a workload moved by the rebalancer within
``NEMO_REBALANCE_COOLDOWN`` (stored: it holds across restarts), one being migrated, one not fully running, one with
``placement.division`` (its shares are the scheduler's rule, not a cost).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from nemo_kernel.domain import (
    ACTIVE_PHASES,
    DeploymentSpec,
    EventKind,
    MigrationPhase,
    MigrationRequest,
    MigrationTarget,
    MoveState,
    RebalancePolicy,
    RebalanceRequest,
    RebalanceState,
    RebalanceStatus,
    ReplicaPhase,
    WorkloadDescriptor,
    utcnow,
)
from nemo_kernel.domain.errors import ApiError
from nemo_kernel.orchestrator.commands.base import Wake
from nemo_kernel.orchestrator.commands.migrations import MigrationCommands
from nemo_kernel.orchestrator.decision import DecisionEngine, NodeTable
from nemo_kernel.orchestrator.placement import Inventory
from nemo_kernel.orchestrator.rebalance import (
    Plan,
    PlanStatus,
    RebalanceLimits,
    RunningReplica,
    WorkloadPlacement,
    plan_rebalance,
)
from nemo_kernel.ppef.press import residency_constrained
from nemo_kernel.store import Database, NotFound, rebalances
from nemo_kernel.store import clusters as cluster_store
from nemo_kernel.store.events import record_event
from nemo_kernel.store.tables import MigrationRow, RebalanceMoveRow, RebalanceRow, ReplicaRow, WorkloadRow

log = logging.getLogger(__name__)

REBALANCER = "system:rebalancer"
"""``requested_by`` of the periodic rebalance and of the migrations a plan starts."""

STARTING_WAIT_S = 120.0
"""Seconds a queued move waits for its replica while it is Scheduled or Starting (since the replica last changed):
an adopted replica is reported within seconds of a restart; one that stays longer does not hold the plan."""
_STARTING = (ReplicaPhase.SCHEDULED.value, ReplicaPhase.STARTING.value)


@dataclass(frozen=True, slots=True)
class RebalanceSettings:
    """The ``NEMO_REBALANCE_*`` settings a plan uses."""

    limits: RebalanceLimits
    cooldown_s: float


class RebalanceCommands:
    """Plans rebalances and applies them through the migration service."""

    def __init__(
        self,
        db: Database,
        wake: Wake,
        decisions: DecisionEngine,
        migrations: MigrationCommands,
        settings: RebalanceSettings,
    ) -> None:
        """``decisions`` is the placing engine (its weights and latency matrix); ``migrations`` starts the moves."""
        self._db = db
        self._wake = wake
        self._decisions = decisions
        self._migrations = migrations
        self._settings = settings
        # advance() runs from the migration loop and from an apply (API or periodic loop): one at a time, or two could
        # start the same move, one then marking it skipped while the other marks it moving after the plan ended
        self._advancing = threading.Lock()

    def run(self, request: RebalanceRequest, requested_by: str) -> RebalanceStatus:
        """Plan; store the plan; with ``apply`` and a saving above the thresholds, queue its moves and start them.

        409 ``rebalance_applying`` naming the plan being applied when ``apply`` is asked meanwhile; 404 naming a
        namespace with no workload. A dry run changes nothing but the stored plan and its event.
        """
        limits = self._settings.limits
        if request.max_moves is not None:
            limits = replace(limits, max_moves=request.max_moves)
        with self._db.transaction() as s:
            busy = rebalances.applying(s)
            if request.apply and busy is not None:
                raise ApiError(
                    409,
                    "rebalance_applying",
                    f"rebalance {busy.id} is being applied; follow it with GET /api/v1/rebalance/{busy.id}",
                    {"rebalance": busy.id, "field": "apply"},
                )
            selected = self._workloads(s, request.namespaces)
            inventory = Inventory.load(s)
            table = inventory.table({})
            placements, ids = self._placements(s, selected, table)
        # The solve runs outside any transaction: it may take the whole time limit.
        plan = plan_rebalance(
            table, placements, limits, weights=self._decisions.weights, latency=self._decisions.latency
        )
        applying = request.apply and plan.worth_applying
        with self._db.transaction() as s:
            if applying and rebalances.applying(s) is not None:  # another apply won the race during the solve
                applying = False
            row = _stored(s, plan, request.apply, applying, ids, requested_by)
            status = rebalances.status_of(s, row)
        if applying:
            self.advance()
            self._wake()
            with self._db.snapshot() as s:
                status = rebalances.status_of(s, rebalances.get_rebalance(s, row.id))
        return status

    def advance(self) -> bool:
        """Carry the plan being applied one step further: settle moves whose migration ended, start the next move
        of each workload with none running, finish the plan when every move ended. True while a plan applies."""
        with self._advancing:
            return self._advance()

    def _advance(self) -> bool:
        # The migration loop asks on every step (every 50 ms while a migration runs): read first, and write only
        # when a plan has something to settle or start, so the loop does not hold the store's write lock for nothing.
        with self._db.snapshot() as s:
            row = rebalances.applying(s)
            if row is None:
                return False
            if not _has_work(s, rebalances.moves_of(s, row.id)):
                return True
        with self._db.transaction() as s:
            row = rebalances.applying(s)
            if row is None:
                return False
            moves = rebalances.moves_of(s, row.id)
            _settle(s, moves)
            moving = {m.workload_id for m in moves if m.state == MoveState.MOVING.value}
            ready: list[int] = []
            now = utcnow()
            for m in moves:
                if m.state == MoveState.QUEUED.value and m.workload_id not in moving and not _waits(s, m, now):
                    ready.append(m.id)
                    moving.add(m.workload_id)  # at most one migration per workload at a time
            plan_id = row.id
        for move_id in ready:
            self._start(move_id)
        with self._db.transaction() as s:
            row = rebalances.get_rebalance(s, plan_id)
            moves = rebalances.moves_of(s, plan_id)
            if any(m.state in (MoveState.QUEUED.value, MoveState.MOVING.value) for m in moves):
                return True
            row.state = RebalanceState.APPLIED.value
            row.finished_at = utcnow()
            counts = {state.value: sum(m.state == state.value for m in moves) for state in MoveState}
            record_event(
                s,
                EventKind.REBALANCE_APPLIED,
                rebalances.subject(plan_id),
                f"rebalance {plan_id} applied: {counts['done']} moved, {counts['skipped']} skipped, "
                f"{counts['failed']} failed",
                rebalance=plan_id,
                **counts,
            )
            return False

    def _start(self, move_id: int) -> None:
        """Start one queued move's migration, or skip it with the reason the target is refused now."""
        with self._db.transaction() as s:
            move = s.get(RebalanceMoveRow, move_id)
            if move is None or move.state != MoveState.QUEUED.value:
                return
            stale = _residency_refuses(s, move)
        reason, migration = stale, None
        if reason is None:
            request = MigrationRequest(
                workload=move.workload,
                replica=move.replica,
                to=MigrationTarget(cluster=move.to_cluster, node=move.to_node),
            )
            try:
                migration = self._migrations.start(request, REBALANCER).id
            except (ApiError, NotFound, ValidationError) as exc:
                reason = f"not started: {exc}"
        with self._db.transaction() as s:
            move = s.get(RebalanceMoveRow, move_id)
            if move is None or move.state != MoveState.QUEUED.value:  # settled meanwhile (another process)
                return
            if migration is None:
                move.state, move.reason = MoveState.SKIPPED.value, reason or ""
            else:
                move.state, move.migration_id, move.started_at = MoveState.MOVING.value, migration, utcnow()

    def _workloads(self, s: Session, namespaces: Sequence[str] | None) -> list[WorkloadRow]:
        query = select(WorkloadRow).where(WorkloadRow.deleting.is_(False)).order_by(WorkloadRow.id)
        if namespaces:
            query = query.where(WorkloadRow.namespace.in_(namespaces))
        rows = list(s.scalars(query))
        for namespace in namespaces or ():
            if not any(w.namespace == namespace for w in rows):
                raise NotFound("namespace", namespace)
        return rows

    def _placements(
        self, s: Session, selected: Sequence[WorkloadRow], table: NodeTable
    ) -> tuple[list[WorkloadPlacement], dict[str, int]]:
        """The workloads as the planner sees them, and their ids by ``namespace/name``."""
        cooled = rebalances.cooling_down(s, utcnow() - timedelta(seconds=self._settings.cooldown_s))
        migrating = set(s.scalars(select(MigrationRow.workload_id).where(MigrationRow.phase.in_(ACTIVE_PHASES))))
        replicas: dict[int, list[ReplicaRow]] = {}
        for r in s.scalars(select(ReplicaRow).where(ReplicaRow.desired.is_(True))):
            replicas.setdefault(r.workload_id, []).append(r)
        out: list[WorkloadPlacement] = []
        ids: dict[str, int] = {}
        for w in selected:
            try:
                spec = WorkloadDescriptor.model_validate(w.descriptor).deployment
            except ValidationError:  # stored by an older NEMO and refused now: it stays, the others are planned
                continue
            if spec is None:
                continue
            mine = [r for r in replicas.get(w.id, []) if r.version == w.version]
            running = [r for r in mine if r.phase == ReplicaPhase.RUNNING.value]
            if not running or not all(_known(table, r) for r in running):
                continue  # nothing to move, or a replica on a cluster left out of the inventory: it stays
            ref = f"{w.namespace}/{w.name}"
            ids[ref] = w.id
            constrained = residency_constrained(s, w.namespace, w.name, spec)
            settled = len(running) == len(mine) == spec.replicas
            pinned = _pinned_reason(w.id, spec, cooled, migrating, settled=settled, nowhere=constrained is None)
            out.append(
                WorkloadPlacement(
                    workload=ref,
                    spec=constrained or spec,
                    replicas=tuple(RunningReplica(r.id, r.index, r.cluster, r.node) for r in running),
                    pinned=pinned,
                )
            )
        return out, ids


def _pinned_reason(
    workload_id: int, spec: DeploymentSpec, cooled: set[int], migrating: set[int], *, settled: bool, nowhere: bool
) -> str | None:
    if spec.placement.rebalance is RebalancePolicy.NEVER:
        return "placement.rebalance is never"
    if workload_id in cooled:
        return "moved by the rebalancer within NEMO_REBALANCE_COOLDOWN"
    if workload_id in migrating:
        return "a migration of it is running"
    if not settled:
        return "not every replica of its current version is running"
    if spec.placement.division is not None:
        return "placement.division decides its shares"
    if nowhere:
        return "no country satisfies its SLAs' data residency"
    return None


def _known(table: NodeTable, replica: ReplicaRow) -> bool:
    try:
        table.row(replica.cluster, replica.node)
    except KeyError:
        return False
    return True


def _stored(
    s: Session, plan: Plan, apply: bool, applying: bool, ids: dict[str, int], requested_by: str
) -> RebalanceRow:
    failed = plan.status in (PlanStatus.INFEASIBLE, PlanStatus.FAILED)
    if failed:
        state = RebalanceState.FAILED
    elif applying:
        state = RebalanceState.APPLYING
    else:
        state = RebalanceState.PLANNED
    message = plan.message if not apply or applying or failed else f"not applied: {plan.message}"
    row = RebalanceRow(
        state=state.value,
        apply=apply,
        solver_status=plan.status.value,
        message=message,
        totals={
            "before": {"eur_h": plan.before.eur_h, "gco2_h": plan.before.gco2_h},
            "after": {"eur_h": plan.after.eur_h, "gco2_h": plan.after.gco2_h},
        },
        solve_seconds=plan.solve_seconds,
        pinned=dict(plan.pinned),
        requested_by=requested_by[:200],
        finished_at=None if applying else utcnow(),
    )
    moves = [
        RebalanceMoveRow(
            workload_id=ids[m.workload],
            workload=m.workload,
            replica=m.replica,
            index=m.index,
            from_cluster=m.from_cluster,
            from_node=m.from_node,
            to_cluster=m.to_cluster,
            to_node=m.to_node,
            saving_eur_h=m.saving_eur_h,
            saving_gco2_h=m.saving_gco2_h,
            criterion=m.criterion,
            state=MoveState.QUEUED.value if applying else MoveState.SKIPPED.value,
            reason="" if applying else "not applied",
        )
        for m in plan.moves
    ]
    event = EventKind.REBALANCE_FAILED if failed else EventKind.REBALANCE_PLANNED
    data = {
        "apply": applying,
        "solver_status": plan.status.value,
        "moves": len(moves),
        "saving_eur_h": plan.before.eur_h - plan.after.eur_h,
        "saving_gco2_h": plan.before.gco2_h - plan.after.gco2_h,
        "solve_seconds": plan.solve_seconds,
    }
    return rebalances.create_rebalance(s, row, moves, event=event, data=data)


def _has_work(s: Session, moves: Sequence[RebalanceMoveRow]) -> bool:
    """Whether ``advance`` would change anything: a migration ended, a move may start, or every move ended."""
    moving = {m.workload_id for m in moves if m.state == MoveState.MOVING.value}
    now = utcnow()
    for m in moves:
        if m.state == MoveState.QUEUED.value and m.workload_id not in moving and not _waits(s, m, now):
            return True
        if m.state == MoveState.MOVING.value:
            migration = s.get(MigrationRow, m.migration_id) if m.migration_id is not None else None
            if migration is None or MigrationPhase(migration.phase).final:
                return True
    return not any(m.state in (MoveState.QUEUED.value, MoveState.MOVING.value) for m in moves)


def _waits(s: Session, move: RebalanceMoveRow, now: datetime) -> bool:
    """Whether a queued move waits for its replica, still Scheduled or Starting for less than ``STARTING_WAIT_S``:
    started now, its migration would be refused (the source must run) and the move skipped for good."""
    replica = s.get(ReplicaRow, move.replica)
    return (
        replica is not None
        and replica.desired
        and replica.phase in _STARTING
        and now < replica.updated_at + timedelta(seconds=STARTING_WAIT_S)
    )


def _settle(s: Session, moves: Sequence[RebalanceMoveRow]) -> None:
    """Moves whose migration ended become done or failed."""
    for m in moves:
        if m.state != MoveState.MOVING.value or m.migration_id is None:
            continue
        migration = s.get(MigrationRow, m.migration_id)
        if migration is None:
            m.state, m.reason = MoveState.FAILED.value, f"migration {m.migration_id} is gone"
        elif migration.phase == MigrationPhase.COMPLETED.value:
            m.state = MoveState.DONE.value
        elif migration.phase in (MigrationPhase.FAILED.value, MigrationPhase.ROLLED_BACK.value):
            m.state, m.reason = (
                MoveState.FAILED.value,
                f"migration {migration.id} {migration.phase}: {migration.message}",
            )


def _residency_refuses(s: Session, move: RebalanceMoveRow) -> str | None:
    """Why the workload's SLAs' data residency refuses the move's target now (the migration service does not know
    SLAs; the decision engine's other filters are re-checked by it)."""
    w = s.get(WorkloadRow, move.workload_id)
    if w is None or w.deleting:
        return "the workload is gone"
    try:
        spec = WorkloadDescriptor.model_validate(w.descriptor).deployment
    except ValidationError:
        return "its stored descriptor no longer passes this version's checks (apply it again)"
    if spec is None:
        return "the workload is a catalogue entry"
    constrained = residency_constrained(s, w.namespace, w.name, spec)
    if constrained is None:
        return "no country satisfies its SLAs' data residency"
    countries = constrained.placement.countries
    if countries:
        country = cluster_store.get_cluster(s, move.to_cluster).spec.get("country")
        if country not in countries:
            return f"data residency: {move.to_cluster} is in {country}, not in {sorted(countries)}"
    return None
