"""``placement.after_recovery: move_back``: replicas the control plane moved off a cluster that went NotReady or was
drained return to it once it is back, through migrations (reason ``recovered``), one per workload at a time, only
where the cluster admits them; ``stay`` (the default) leaves them where they are.

In-process: a real :class:`ControlPlane` (not started: each pass is driven here) on SQLite and PostgreSQL with two
``sim`` clusters on a clock the test moves; a pass is a reconcile pass, a step of the migration loop and a pass of
the reactions (the plane's default registry, as ``start()`` runs it). Faults go through the fault command.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from tests.clock import Clock
from tests.orchestrator.conftest import SimPasses, sim_workload

from nemo_kernel.clusters.sim import SimProvider
from nemo_kernel.config import Settings
from nemo_kernel.domain import (
    ClusterPhase,
    ClusterSpec,
    DriverKind,
    EventKind,
    FaultSpec,
    MigrationPhase,
)
from nemo_kernel.migration import MigrationRunner
from nemo_kernel.migration.runner import MigrationTimings
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.orchestrator.reactions_dispatcher import ReactionDispatcher
from nemo_kernel.store.tables import MigrationRow, ReplicaRow, WorkloadRow

FAULT_S = 60.0
FINAL = {p.value for p in MigrationPhase if p.final}


class Fleet(SimPasses):
    """A control plane over two simulated clusters, driven pass by pass."""

    max_passes = 40

    def __init__(self, settings: Settings, sim: SimProvider, clock: Clock) -> None:
        self.sim = sim
        self.plane = ControlPlane(settings, providers={DriverKind.SIM: sim})
        super().__init__(self.plane.db, clock)
        # The plane's migration loop, without the gateway's drain delay (no gateway follows the switch here).
        self.migrations = MigrationRunner(self.db, self.plane.resources.driver, lambda: None, MigrationTimings(0.0))
        self.reactions = ReactionDispatcher(self.db, self.plane.reaction_registry())
        self.react = True

    def restarted(self) -> Fleet:
        """A new control plane on the same store and the same simulated clusters."""
        return Fleet(self.plane.settings, self.sim, self.clock)

    async def drive(self) -> None:
        await self.plane.engine.reconcile_once()
        await self.migrations.advance()
        if self.react:
            await self.reactions.run_once()

    def unsettled(self) -> str:
        return f": {self.replicas('web')} {self.moves('web')}"

    def apply(self, name: str, replicas: int, cpu: float = 0.5, **placement: Any) -> None:
        self.plane.commands.workloads.apply(sim_workload(name, replicas, cpu, **placement))

    def replicas(self, name: str) -> list[tuple[int, str, str]]:
        """(index, cluster, phase) of the workload's desired replicas."""
        with self.db.snapshot() as s:
            wid = s.scalar(select(WorkloadRow.id).where(WorkloadRow.name == name))
            rows = s.scalars(select(ReplicaRow).where(ReplicaRow.workload_id == wid, ReplicaRow.desired.is_(True)))
            return sorted((r.index, r.cluster, r.phase) for r in rows)

    def running_on(self, name: str, cluster: str, count: int) -> bool:
        """Exactly ``count`` desired replicas, all Running on ``cluster``, and no move of the workload running."""
        placed = self.replicas(name)
        idle = all(m["phase"] in FINAL for m in self.moves(name))
        return idle and len(placed) == count and all(c == cluster and p == "Running" for _, c, p in placed)

    def moves(self, name: str) -> list[dict[str, Any]]:
        with self.db.snapshot() as s:
            rows = s.scalars(select(MigrationRow).where(MigrationRow.workload == f"default/{name}"))
            return [
                {
                    "id": m.id,
                    "phase": m.phase,
                    "reason": m.reason,
                    "index": m.source_index,
                    "from": m.source_cluster,
                    "to": m.target_cluster,
                    "by": m.requested_by,
                }
                for m in sorted(rows, key=lambda m: m.id)
            ]

    def events(self, name: str, kind: EventKind) -> list[dict[str, Any]]:
        history = self.plane.views.workloads.history("default", name, limit=10_000)
        return [{"message": e.message, **e.data} for e in history if e.kind == kind]

    def cluster_phase(self, name: str) -> str:
        return self.plane.views.clusters.get(name).phase


def _cluster(name: str, tier: str, cpu: float = 4.0) -> ClusterSpec:
    return ClusterSpec.model_validate(
        {
            "name": name,
            "driver": "sim",
            "tier": tier,
            "region": "eu-south",
            "country": "ES",
            "nodes": [{"name": f"{name}-n1", "cpu": cpu, "memory_mib": 4096}],
            "sim": {"start_delay_s": 1.0},
        }
    )


async def _fleet(tmp_path: Path, database_url: str, a_cpu: float = 4.0, **more: Any) -> Fleet:
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        clusters_file=clusters,
        heartbeat_timeout=0.001,  # a silent cluster is NotReady at its first missed heartbeat
        driver_timeout=5.0,
        **more,
    )
    clock = Clock()
    fleet = Fleet(settings, SimProvider(settings, clock=clock), clock)
    await asyncio.to_thread(fleet.db.migrate)
    fleet.plane.commands.clusters.add(_cluster("edge-a", "edge", a_cpu))
    fleet.plane.commands.clusters.add(_cluster("cloud-b", "cloud"))
    return fleet


@pytest.fixture
async def fleet(tmp_path: Path, database_url: str) -> AsyncIterator[Fleet]:
    started = await _fleet(tmp_path, database_url)
    try:
        yield started
    finally:
        await started.plane.resources.close()
        started.db.dispose()


async def _on_a(fleet: Fleet, workloads: dict[str, tuple[int, dict[str, Any]]]) -> None:
    """The workloads running on edge-a: cloud-b is cordoned while they are placed."""
    fleet.plane.commands.clusters.set_schedulable("cloud-b", cordoned=True)
    for name, (replicas, placement) in workloads.items():
        fleet.apply(name, replicas, **placement)
    await fleet.settle(lambda: all(fleet.running_on(n, "edge-a", r) for n, (r, _) in workloads.items()))
    fleet.plane.commands.clusters.set_schedulable("cloud-b", cordoned=False)


def _one_move_at_a_time(fleet: Fleet, name: str) -> Callable[[], None]:
    def check() -> None:
        moves = fleet.moves(name)
        assert sum(m["phase"] not in FINAL for m in moves) <= 1, moves

    return check


async def test_replicas_replaced_while_a_cluster_was_not_ready_move_back_one_at_a_time(fleet: Fleet) -> None:
    await _on_a(fleet, {"web": (3, {"after_recovery": "move_back"}), "batch": (2, {})})

    await fleet.plane.commands.faults.inject("edge-a", FaultSpec.model_validate({"kind": "down", "for_s": FAULT_S}))
    await fleet.settle(lambda: fleet.running_on("web", "cloud-b", 3) and fleet.running_on("batch", "cloud-b", 2))
    assert fleet.moves("web") == []  # stateless replicas of a silent cluster are replaced, not migrated
    left = fleet.events("web", EventKind.REPLICA_RESCHEDULED)
    assert {(e["cluster"], e["reason"]) for e in left} == {("edge-a", "not answering")}

    before = max(d.id for d in fleet.plane.views.workloads.decisions("default", "web"))

    fleet.clock.now += FAULT_S
    await fleet.settle(lambda: fleet.running_on("web", "edge-a", 3), check=_one_move_at_a_time(fleet, "web"))

    moves = fleet.moves("web")
    assert [(m["phase"], m["reason"], m["from"], m["to"], m["by"]) for m in moves] == [
        ("Completed", "recovered", "cloud-b", "edge-a", "nemo:recovery")
    ] * 3
    assert sorted(m["index"] for m in moves) == [0, 1, 2]
    back = fleet.events("web", EventKind.REPLICA_MOVING_BACK)
    assert [e["migration"] for e in back] == [m["id"] for m in moves]
    assert "edge-a recovered (placement.after_recovery move_back)" in back[0]["message"]
    # The workload's placement explains each replica by the decision that moved it back.
    explained = fleet.plane.views.workloads.placement("default", "web")
    assert explained is not None
    decided = [r.decision for r in explained.replicas]
    assert len(set(decided)) == 3 and all(d is not None and d > before for d in decided), decided
    # "stay" (the default): the other workload stays where it was moved.
    assert fleet.running_on("batch", "cloud-b", 2) and fleet.moves("batch") == []
    # Nothing more happens: a move back is no reason to move anything.
    for _ in range(3):
        await fleet.one_pass()
    assert fleet.moves("web") == moves and fleet.running_on("web", "edge-a", 3)


async def test_replicas_evacuated_by_a_drain_move_back_once_it_is_uncordoned(fleet: Fleet) -> None:
    await _on_a(fleet, {"web": (2, {"after_recovery": "move_back"})})

    fleet.plane.commands.clusters.set_schedulable("edge-a", cordoned=True, draining=True)
    await fleet.settle(lambda: fleet.running_on("web", "cloud-b", 2), check=_one_move_at_a_time(fleet, "web"))
    drained = fleet.moves("web")
    assert {(m["phase"], m["reason"], m["from"]) for m in drained} == {("Completed", "drained", "edge-a")}

    fleet.plane.commands.clusters.set_schedulable("edge-a", cordoned=False)
    await fleet.settle(lambda: fleet.running_on("web", "edge-a", 2), check=_one_move_at_a_time(fleet, "web"))
    back = fleet.moves("web")[len(drained) :]
    assert [(m["phase"], m["reason"], m["from"], m["to"]) for m in back] == [
        ("Completed", "recovered", "cloud-b", "edge-a")
    ] * 2
    assert sorted(m["index"] for m in back) == [0, 1]


async def test_a_recovered_cluster_that_is_full_keeps_nothing_moved_and_says_why(
    tmp_path: Path, database_url: str
) -> None:
    fleet = await _fleet(tmp_path, database_url, a_cpu=2.0)
    try:
        await _on_a(fleet, {"web": (2, {"after_recovery": "move_back"})})
        await fleet.plane.commands.faults.inject("edge-a", FaultSpec.model_validate({"kind": "down", "for_s": FAULT_S}))
        await fleet.settle(lambda: fleet.running_on("web", "cloud-b", 2))
        # While edge-a is away, a workload that may run only there waits for it, and takes most of it once back.
        fleet.apply("hog", 1, cpu=1.8, clusters=["edge-a"])
        fleet.clock.now += FAULT_S
        fleet.react = False  # the recovery's reactions run once the hog runs: they find edge-a full
        await fleet.settle(lambda: fleet.running_on("hog", "edge-a", 1))
        fleet.react = True
        for _ in range(3):
            await fleet.one_pass()

        assert fleet.moves("web") == [] and fleet.running_on("web", "cloud-b", 2)
        stays = fleet.events("web", EventKind.REPLICA_NOT_MOVED_BACK)
        assert sorted(e["index"] for e in stays) == [0, 1]
        assert all(e["target_cluster"] == "edge-a" and e["cluster"] == "cloud-b" for e in stays)
        assert "edge-a recovered but does not admit it now" in stays[0]["message"]
        assert "capacity" in stays[0]["error"], stays[0]["error"]  # the filter that refused it, named
    finally:
        await fleet.plane.resources.close()
        fleet.db.dispose()


async def test_a_restart_between_moves_back_moves_each_replica_once(fleet: Fleet) -> None:
    await _on_a(fleet, {"web": (3, {"after_recovery": "move_back"})})
    await fleet.plane.commands.faults.inject("edge-a", FaultSpec.model_validate({"kind": "down", "for_s": FAULT_S}))
    await fleet.settle(lambda: fleet.running_on("web", "cloud-b", 3))
    fleet.clock.now += FAULT_S
    await fleet.settle(lambda: any(m["phase"] not in FINAL for m in fleet.moves("web")))  # the first move back

    restarted = fleet.restarted()  # a new control plane: new dispatcher, engine and migration loop, same store
    try:
        await restarted.settle(lambda: restarted.running_on("web", "edge-a", 3), _one_move_at_a_time(fleet, "web"))
        for _ in range(3):
            await restarted.one_pass()
        moves = restarted.moves("web")
        assert [(m["phase"], m["reason"]) for m in moves] == [("Completed", "recovered")] * 3
        assert sorted(m["index"] for m in moves) == [0, 1, 2]
        assert len(restarted.events("web", EventKind.REPLICA_MOVING_BACK)) == 3
    finally:
        await restarted.plane.resources.close()
        restarted.db.dispose()


async def test_a_cluster_that_fails_again_gets_nothing_more_back_from_its_first_absence(fleet: Fleet) -> None:
    await _on_a(fleet, {"web": (3, {"after_recovery": "move_back"})})
    down = FaultSpec.model_validate({"kind": "down", "for_s": FAULT_S})
    await fleet.plane.commands.faults.inject("edge-a", down)
    await fleet.settle(lambda: fleet.running_on("web", "cloud-b", 3))
    fleet.clock.now += FAULT_S
    await fleet.settle(lambda: any(m["phase"] not in FINAL for m in fleet.moves("web")))  # the first move back

    # edge-a flaps: down again while its first replica is on its way back.
    [first] = fleet.moves("web")
    await fleet.plane.commands.faults.inject("edge-a", down)
    await fleet.settle(lambda: fleet.cluster_phase("edge-a") == ClusterPhase.NOT_READY.value)

    def nothing_new_while_away() -> None:
        if fleet.cluster_phase("edge-a") != ClusterPhase.READY.value:
            assert [m["id"] for m in fleet.moves("web") if m["reason"] == "recovered"] == [first["id"]]

    await fleet.settle(lambda: fleet.cluster_phase("edge-a") == ClusterPhase.READY.value, nothing_new_while_away)
    await fleet.settle(lambda: all(m["phase"] in FINAL for m in fleet.moves("web")))
    for _ in range(6):
        await fleet.one_pass()

    # The two replicas that left edge-a the first time and had not returned when it failed again stay where they
    # are; only the one already on its way back may be there (its move rode out the short outage, or it left again
    # during the second absence and returns for that one).
    recovered = [m for m in fleet.moves("web") if m["reason"] == "recovered"]
    assert {m["index"] for m in recovered} == {first["index"]}, recovered
    assert all(m["phase"] in FINAL for m in fleet.moves("web"))
    stayed = [(i, c) for i, c, _ in fleet.replicas("web") if i != first["index"]]
    assert [c for _, c in stayed] == ["cloud-b", "cloud-b"], fleet.replicas("web")


async def test_moves_back_of_many_workloads_wait_for_a_slot_and_none_is_lost_across_a_restart(tmp_path: Path) -> None:
    # SQLite: the bound is NEMO_EVACUATION_CONCURRENCY, shared with the engine's evacuations.
    fleet = await _fleet(tmp_path, f"sqlite:///{tmp_path / 'nemo.db'}", evacuation_concurrency=2)
    names = [f"web{i}" for i in range(3)]  # three want to move back at once, two at a time may
    restarted: Fleet | None = None
    try:
        await _on_a(fleet, {name: (2, {"after_recovery": "move_back"}) for name in names})
        await fleet.plane.commands.faults.inject("edge-a", FaultSpec.model_validate({"kind": "down", "for_s": FAULT_S}))
        await fleet.settle(lambda: all(fleet.running_on(n, "cloud-b", 2) for n in names))
        fleet.clock.now += FAULT_S

        def at_most_two_moves() -> None:
            with fleet.db.snapshot() as s:
                moving = s.scalars(select(MigrationRow).where(MigrationRow.phase.not_in(FINAL))).all()
            assert len(moving) <= 2, [(m.workload, m.phase) for m in moving]

        def moved_back_while_others_wait() -> bool:
            history = fleet.plane.views.clusters.history("edge-a", limit=10_000)
            queue = [e.data["waiting"] for e in history if e.kind == EventKind.CLUSTER_MOVES_BACK_WAITING]
            moved = sum(m["phase"] == "Completed" for n in names for m in fleet.moves(n))
            return moved >= 2 and bool(queue) and queue[-1] >= 1

        await fleet.settle(moved_back_while_others_wait, at_most_two_moves)
        restarted = fleet.restarted()  # a new control plane on the same store, with moves still waiting
        await restarted.settle(lambda: all(restarted.running_on(n, "edge-a", 2) for n in names), at_most_two_moves)
        for name in names:
            moves = restarted.moves(name)
            assert [(m["phase"], m["reason"]) for m in moves] == [("Completed", "recovered")] * 2, moves
            assert sorted(m["index"] for m in moves) == [0, 1]
        # The cluster's history says who waited, and that nobody waits any more.
        history = restarted.plane.views.clusters.history("edge-a", limit=10_000)
        queue = [e for e in history if e.kind == EventKind.CLUSTER_MOVES_BACK_WAITING]
        assert queue and queue[0].data["waiting"] >= 1 and queue[-1].data["waiting"] == 0, queue
        assert "wait for a migration slot (NEMO_EVACUATION_CONCURRENCY)" in queue[0].message
    finally:
        for started in (fleet, restarted):
            if started is not None:
                await started.plane.resources.close()
                started.db.dispose()


async def test_a_workload_stored_by_an_older_nemo_stays_and_the_others_move_back(fleet: Fleet) -> None:
    await _on_a(fleet, {"old": (1, {"after_recovery": "move_back"}), "web": (2, {"after_recovery": "move_back"})})
    await fleet.plane.commands.faults.inject("edge-a", FaultSpec.model_validate({"kind": "down", "for_s": FAULT_S}))
    await fleet.settle(lambda: fleet.running_on("old", "cloud-b", 1) and fleet.running_on("web", "cloud-b", 2))
    with fleet.db.transaction() as s:  # as an older NEMO stored it: a country code this version refuses
        row = s.scalars(select(WorkloadRow).where(WorkloadRow.name == "old")).one()
        deployment = {**row.descriptor["deployment"], "placement": {"countries": ["XX"], "after_recovery": "move_back"}}
        row.descriptor = {**row.descriptor, "deployment": deployment}

    fleet.clock.now += FAULT_S
    await fleet.settle(lambda: fleet.running_on("web", "edge-a", 2))
    assert fleet.moves("old") == []
