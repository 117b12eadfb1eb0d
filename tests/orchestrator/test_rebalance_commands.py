"""Rebalance commands in-process, on SQLite and PostgreSQL: a dry run changes nothing but its stored plan; an apply
starts make-before-break migrations one per workload at a time, refuses a second apply meanwhile (409 naming it),
skips a move a filter refuses by the time it starts, and finishes with ``rebalance.applied``; a moved workload is
not moved again within its cooldown, which is stored (a restarted control plane keeps it); bad input changes
nothing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from tests.orchestrator.test_commands import FrontDoor

from nemo_kernel.domain import (
    ClusterPhase,
    ClusterSpec,
    EventKind,
    MigrationPhase,
    MoveState,
    RebalanceRequest,
    RebalanceState,
    ReplicaPhase,
    WorkloadDescriptor,
    utcnow,
)
from nemo_kernel.domain.errors import ApiError
from nemo_kernel.orchestrator.commands import RebalanceCommands, RebalanceSettings
from nemo_kernel.orchestrator.commands.rebalance import STARTING_WAIT_S
from nemo_kernel.orchestrator.decision import DecisionEngine
from nemo_kernel.orchestrator.rebalance import RebalanceLimits
from nemo_kernel.store import Database, NotFound, events, rebalances, workloads
from nemo_kernel.store.tables import ClusterRow, MigrationRow, ReplicaRow, WorkloadRow


@pytest.fixture
def door(database: Database, tmp_path: Path) -> FrontDoor:
    """Two ready clusters of one node: ``costly`` (dear, coal-heavy grid) and ``cheap`` (cheap, clean grid)."""
    door = FrontDoor(database, tmp_path)
    for name, price, intensity in (("costly", 0.10, 700.0), ("cheap", 0.02, 50.0)):
        door.commands.clusters.add(
            ClusterSpec.model_validate(
                {
                    "name": name,
                    "tier": "cloud",
                    "region": "eu",
                    "country": "ES",
                    "prices": {"cpu_hour_eur": price, "gib_hour_eur": price / 8},
                    "carbon_intensity": intensity,
                    "nodes": [{"name": f"{name}-n1", "cpu": 8, "memory_mib": 8192}],
                }
            )
        )
    with database.transaction() as s:  # as their first heartbeats would leave them
        for row in s.scalars(select(ClusterRow)):
            row.phase = ClusterPhase.READY.value
    return door


def rebalancer(door: FrontDoor, cooldown_s: float = 3600.0) -> RebalanceCommands:
    """The rebalance commands as the control plane builds them (a new one is what a restart gives)."""
    settings = RebalanceSettings(RebalanceLimits(), cooldown_s=cooldown_s)
    return RebalanceCommands(door.db, door.wakes, DecisionEngine(), door.commands.migrations, settings)


def running(door: FrontDoor, name: str, replicas: int = 1, namespace: str = "default", **placement: Any) -> None:
    """A workload whose replicas run on ``costly``, as the engine would have left them."""
    deployment = {"command": ["sleep", "600"], "replicas": replicas, "ports": [], "placement": placement,
                  "resources": {"cpu": 1, "memory_mib": 512}}  # fmt: skip
    descriptor = {"name": name, "namespace": namespace, "deployment": deployment}
    door.commands.workloads.apply(WorkloadDescriptor.model_validate(descriptor))
    with door.db.transaction() as s:
        w = workloads.get_workload(s, namespace, name)
        w.needs_placement = False
        for index in range(replicas):
            r = workloads.bind_replicas(
                s, w, [workloads.Binding(index, "costly", "costly-n1", "runc")], cpu=1.0, memory_mib=512
            )[0]
            r.phase = ReplicaPhase.RUNNING.value
            r.url = f"http://127.0.0.1:9/{name}/{index}"


def state_of_the_store(db: Database) -> tuple[Any, ...]:
    """Everything a rebalance may change: replicas, migrations, workloads' desired state."""
    with db.transaction() as s:
        replicas = sorted((r.id, r.cluster, r.node, r.phase, r.desired) for r in s.scalars(select(ReplicaRow)))
        migrations = sorted((m.id, m.phase) for m in s.scalars(select(MigrationRow)))
        desired = sorted((w.name, w.version, w.needs_placement) for w in s.scalars(select(WorkloadRow)))
    return replicas, migrations, desired


def finish_migrations(db: Database) -> None:
    """What the migration loop records when the moves it carries out end."""
    with db.transaction() as s:
        for m in s.scalars(select(MigrationRow)):
            m.phase = MigrationPhase.COMPLETED.value


def test_a_dry_run_plans_with_reasons_and_changes_nothing(door: FrontDoor) -> None:
    running(door, "web", replicas=2)
    before, wakes = state_of_the_store(door.db), door.wakes.count

    plan = rebalancer(door).run(RebalanceRequest(apply=False), "user:alice")

    assert plan.state is RebalanceState.PLANNED and plan.solver_status == "optimal"
    assert [(m.from_cluster, m.to_cluster, m.criterion) for m in plan.moves] == [
        ("costly", "cheap", "carbon")
    ] * 2  # 93 % less gCO2, 80 % less EUR
    assert all(m.saving_eur_h > 0 and m.saving_gco2_h > 0 for m in plan.moves)
    assert plan.after.eur_h < plan.before.eur_h and plan.after.gco2_h < plan.before.gco2_h
    assert state_of_the_store(door.db) == before and door.wakes.count == wakes
    assert door.kinds(rebalances.subject(plan.id)) == [EventKind.REBALANCE_PLANNED]
    assert door.views.rebalances.get(plan.id) == plan


def test_an_apply_moves_one_replica_per_workload_at_a_time_and_finishes(door: FrontDoor) -> None:
    running(door, "web", replicas=2)
    commands = rebalancer(door)

    plan = commands.run(RebalanceRequest(apply=True), "user:alice")

    assert plan.state is RebalanceState.APPLYING
    assert sorted(m.state for m in plan.moves) == [MoveState.MOVING, MoveState.QUEUED]  # one migration at a time
    with door.db.transaction() as s:
        (migration,) = s.scalars(select(MigrationRow))
        assert (migration.source_cluster, migration.target_cluster) == ("costly", "cheap")
        assert migration.mode == "stateless" and migration.requested_by == "system:rebalancer"
    with pytest.raises(ApiError) as busy:  # a second apply while this one runs
        commands.run(RebalanceRequest(apply=True), "user:bob")
    assert busy.value.status == 409 and busy.value.details["rebalance"] == plan.id
    assert commands.run(RebalanceRequest(), "user:bob").state is RebalanceState.PLANNED  # a dry run is fine

    finish_migrations(door.db)
    assert commands.advance()  # the first move is done, the queued one starts
    moving = door.views.rebalances.get(plan.id)
    assert sorted(m.state for m in moving.moves) == [MoveState.DONE, MoveState.MOVING]
    finish_migrations(door.db)
    assert not commands.advance()

    done = door.views.rebalances.get(plan.id)
    assert done.state is RebalanceState.APPLIED and done.finished_at is not None
    assert [m.state for m in done.moves] == [MoveState.DONE, MoveState.DONE]
    assert door.kinds(rebalances.subject(plan.id)) == [EventKind.REBALANCE_PLANNED, EventKind.REBALANCE_APPLIED]


def test_a_workload_is_not_moved_again_within_its_cooldown_even_after_a_restart(door: FrontDoor) -> None:
    running(door, "web")
    first = rebalancer(door).run(RebalanceRequest(apply=True), "user:alice")
    assert len(first.moves) == 1
    finish_migrations(door.db)
    rebalancer(door).advance()
    # The replica is still on ``costly`` (this test has no migration loop to move it): a planner without a
    # cooldown moves it again, one with a cooldown -- even a new one, as after a restart -- leaves it.
    assert rebalancer(door, cooldown_s=0).run(RebalanceRequest(), "user:alice").moves
    again = rebalancer(door).run(RebalanceRequest(apply=True), "user:alice")
    assert not again.moves and again.state is RebalanceState.PLANNED
    assert "cooldown" in again.pinned["default/web"].lower()


def test_a_move_a_filter_refuses_by_the_time_it_starts_is_skipped_with_the_reason(door: FrontDoor) -> None:
    running(door, "web", replicas=2)
    commands = rebalancer(door)
    plan = commands.run(RebalanceRequest(apply=True), "user:alice")
    door.commands.clusters.set_schedulable("cheap", cordoned=True)  # the plan is stale for the queued move

    finish_migrations(door.db)
    assert not commands.advance()

    done = door.views.rebalances.get(plan.id)
    skipped = [m for m in done.moves if m.state is MoveState.SKIPPED]
    assert len(skipped) == 1 and "cordon" in skipped[0].reason
    assert done.state is RebalanceState.APPLIED
    with door.db.transaction() as s:
        assert len(list(s.scalars(select(MigrationRow)))) == 1  # nothing was started for it


def test_policy_never_and_namespaces_keep_workloads_in_place(door: FrontDoor) -> None:
    running(door, "pinned", rebalance="never")
    running(door, "other", namespace="team-b")
    plan = rebalancer(door).run(RebalanceRequest(), "user:alice")
    assert [m.workload for m in plan.moves] == ["team-b/other"]
    assert plan.pinned == {"default/pinned": "placement.rebalance is never"}
    only_default = rebalancer(door).run(RebalanceRequest(namespaces=["default"]), "user:alice")
    assert not only_default.moves


@pytest.mark.parametrize(
    ("document", "field"),
    [({"max_moves": 0}, "max_moves"), ({"max_moves": 10**9}, "max_moves"), ({"namespaces": ["Bad_NS"]}, "namespaces"),
     ({"apply": "yes"}, "apply"), ({"dry": True}, "dry")],
)  # fmt: skip
def test_bad_requests_are_refused_naming_the_field(door: FrontDoor, document: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        RebalanceRequest.model_validate(document)
    assert refused.value.errors()[0]["loc"][0] == field


def test_an_unknown_namespace_is_404_and_stores_nothing(door: FrontDoor) -> None:
    running(door, "web")
    with pytest.raises(NotFound) as unknown:
        rebalancer(door).run(RebalanceRequest(namespaces=["nowhere"]), "user:alice")
    assert "nowhere" in str(unknown.value)
    with door.db.transaction() as s:
        assert not rebalances.recent(s, 10)
        assert not [e for e in events.history(s, rebalances.subject(1))]


def test_a_workload_goes_back_to_a_recovered_cluster_where_it_is_better(door: FrontDoor) -> None:
    """Move back after recovery: replicas the failure of ``cheap`` left on ``costly`` are not held by any cooldown
    (only the rebalancer's own moves are); once ``cheap`` is Ready again the next plan moves them back."""
    running(door, "web")
    with door.db.transaction() as s:
        s.scalars(select(ClusterRow).where(ClusterRow.name == "cheap")).one().phase = ClusterPhase.NOT_READY.value
    assert not rebalancer(door).run(RebalanceRequest(), "user:alice").moves  # nowhere better while it is down
    with door.db.transaction() as s:
        s.scalars(select(ClusterRow).where(ClusterRow.name == "cheap")).one().phase = ClusterPhase.READY.value
    back = rebalancer(door).run(RebalanceRequest(), "user:alice")
    assert [(m.from_cluster, m.to_cluster) for m in back.moves] == [("costly", "cheap")]


def _replica_of(db: Database, move_replica: str, phase: ReplicaPhase, *, changed_s_ago: float = 0.0) -> None:
    """The replica's row as a restarted control plane leaves it (its cluster has not reported it running yet)."""
    with db.transaction() as s:
        row = s.get(ReplicaRow, move_replica)
        assert row is not None
        row.phase = phase.value
        row.updated_at = utcnow() - timedelta(seconds=changed_s_ago)


def test_a_queued_move_waits_for_its_replica_still_starting_after_a_restart(door: FrontDoor) -> None:
    running(door, "web", replicas=2)
    plan = rebalancer(door).run(RebalanceRequest(apply=True), "user:alice")
    [queued] = [m for m in plan.moves if m.state is MoveState.QUEUED]
    _replica_of(door.db, queued.replica, ReplicaPhase.STARTING)  # a restart: adopted, not yet reported Running
    finish_migrations(door.db)

    restarted = rebalancer(door)
    assert restarted.advance()  # the plan goes on applying: the move waits, it is not skipped
    waiting = door.views.rebalances.get(plan.id)
    assert [m.state for m in waiting.moves if m.replica == queued.replica] == [MoveState.QUEUED]
    assert waiting.state is RebalanceState.APPLYING

    _replica_of(door.db, queued.replica, ReplicaPhase.RUNNING)
    assert restarted.advance()
    moving = door.views.rebalances.get(plan.id)
    assert [m.state for m in moving.moves if m.replica == queued.replica] == [MoveState.MOVING]


def test_a_queued_move_whose_replica_stays_starting_is_skipped_once_the_wait_is_over(door: FrontDoor) -> None:
    running(door, "web", replicas=2)
    plan = rebalancer(door).run(RebalanceRequest(apply=True), "user:alice")
    [queued] = [m for m in plan.moves if m.state is MoveState.QUEUED]
    _replica_of(door.db, queued.replica, ReplicaPhase.STARTING, changed_s_ago=STARTING_WAIT_S + 1)
    finish_migrations(door.db)

    assert not rebalancer(door).advance()

    done = door.views.rebalances.get(plan.id)
    [skipped] = [m for m in done.moves if m.replica == queued.replica]
    assert skipped.state is MoveState.SKIPPED and "Starting" in skipped.reason, skipped
    assert done.state is RebalanceState.APPLIED
