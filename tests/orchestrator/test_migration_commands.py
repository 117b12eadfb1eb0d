"""Starting migrations in-process, on SQLite and PostgreSQL: a move is checked whole (decision filters,
architecture, names, a running one) before anything is stored; a stored one records ``migration.started`` and
wakes the loops; the bus door carries ``intent.migrate`` out once; routing leaves a move's target out until the
switch and its source out from then on."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, update
from tests.orchestrator.test_commands import FrontDoor

from nemo_kernel.bus.base import Message
from nemo_kernel.domain import (
    ClusterPhase,
    ClusterSpec,
    EventKind,
    MigrationMode,
    MigrationRequest,
    ReplicaPhase,
    WorkloadDescriptor,
    utcnow,
)
from nemo_kernel.domain.errors import ApiError
from nemo_kernel.store import Database, NotFound, events, workloads
from nemo_kernel.store.migration_records import (
    EVACUATION_ATTEMPTS,
    evacuations_in_flight,
    given_up_evacuations,
    plan_migration,
)
from nemo_kernel.store.tables import ClusterRow, MigrationRow, ReplicaRow, WorkloadRow


@pytest.fixture
def door(database: Database, tmp_path: Path) -> FrontDoor:
    door = FrontDoor(database, tmp_path)
    for name, tier, nodes in (
        ("cloud", "cloud", [("cloud-n1", "amd64"), ("cloud-n2", "amd64")]),
        ("iot", "iot", [("iot-n1", "arm64")]),
    ):
        door.commands.clusters.add(
            ClusterSpec.model_validate(
                {
                    "name": name,
                    "tier": tier,
                    "region": "eu",
                    "country": "ES",
                    "nodes": [{"name": n, "architecture": a, "cpu": 4, "memory_mib": 4096} for n, a in nodes],
                }
            )
        )
    with database.transaction() as s:  # as their first heartbeats would leave them
        for row in s.scalars(select(ClusterRow)):
            row.phase = ClusterPhase.READY.value
    return door


def _running(door: FrontDoor, name: str, *, stateful: bool = False, cluster: str = "cloud", node: str = "cloud-n1",
             tiers: list[str] | None = None) -> str:  # fmt: skip
    """A workload with one running replica on ``cluster/node``, as the engine would have left it; its replica id."""
    deployment: dict[str, Any] = {"command": ["sleep", "600"], "replicas": 1, "stateful": stateful, "ports": []}
    if tiers:
        deployment["placement"] = {"tiers": tiers}
    door.commands.workloads.apply(WorkloadDescriptor.model_validate({"name": name, "deployment": deployment}))
    with door.db.transaction() as s:
        w = workloads.get_workload(s, "default", name)
        w.needs_placement = False
        r = workloads.bind_replicas(s, w, [workloads.Binding(0, cluster, node, "runc")], cpu=0.5, memory_mib=128)[0]
        r.phase = ReplicaPhase.RUNNING.value
        r.url = f"http://127.0.0.1:9/{name}"
        return r.id


def _request(workload: str, **to: str) -> MigrationRequest:
    return MigrationRequest.model_validate({"workload": workload, "to": to})


def _migrations(db: Database) -> int:
    with db.transaction() as s:
        return s.scalar(select(func.count()).select_from(MigrationRow)) or 0


def test_a_move_is_stored_planned_with_its_event_and_wakes(door: FrontDoor) -> None:
    source = _running(door, "web")
    wakes = door.wakes.count

    started = door.commands.migrations.start(_request("web", cluster="cloud"), "user:alice")

    assert (started.phase, started.mode, started.source_replica) == ("Planned", "stateless", source)
    assert (started.target_cluster, started.target_node, started.requested_by) == ("cloud", "cloud-n2", "user:alice")
    assert door.wakes.count == wakes + 1
    assert door.kinds(events.workload_subject("default", "web"))[-1] == EventKind.MIGRATION_STARTED
    assert door.views.migrations.get(started.id) == started
    assert [m.id for m in door.views.migrations.page("default/web")] == [started.id]


def test_a_move_to_a_cluster_takes_a_replica_not_there_yet(door: FrontDoor) -> None:
    # Replica 0 already runs on cloud, replica 1 on iot: "move sensor to cloud" moves replica 1, not 0 to cloud-n2.
    door.commands.workloads.apply(
        WorkloadDescriptor.model_validate(
            {"name": "sensor", "deployment": {"command": ["sleep", "600"], "replicas": 2, "ports": []}}
        )
    )
    with door.db.transaction() as s:
        w = workloads.get_workload(s, "default", "sensor")
        w.needs_placement = False
        for index, (cluster, node) in enumerate((("cloud", "cloud-n1"), ("iot", "iot-n1"))):
            r = workloads.bind_replicas(
                s, w, [workloads.Binding(index, cluster, node, "runc")], cpu=0.5, memory_mib=128
            )[0]
            r.phase = ReplicaPhase.RUNNING.value
            r.url = f"http://127.0.0.1:9/{index}"
    started = door.commands.migrations.start(_request("sensor", cluster="cloud"), "user:alice")
    assert (started.source_cluster, started.target_cluster) == ("iot", "cloud")


def test_bad_moves_change_nothing_and_wake_nothing(door: FrontDoor) -> None:
    _running(door, "web", tiers=["cloud"])
    source = _running(door, "db", stateful=True)
    before, wakes = door.event_count(), door.wakes.count
    start = door.commands.migrations.start

    def refused(request: MigrationRequest, status: int, code: str) -> Any:
        with pytest.raises(ApiError) as caught:
            start(request, "user:alice")
        assert (caught.value.status, caught.value.code) == (status, code), caught.value.message
        if status == 422:  # the API's shape of a field error: a list naming each field
            assert [d["field"] for d in caught.value.details] == ["to"], caught.value.details
        return caught.value.details

    assert refused(_request("web", cluster="iot"), 409, "target_refused")["filter"] == "tier"
    assert refused(_request("db", cluster="iot"), 409, "architecture_mismatch")["target"] == "arm64"
    refused(_request("web", cluster="cloud", node="cloud-n1"), 422, "same_as_source")
    refused(_request("web"), 422, "invalid")
    for request, kind in (
        (_request("nope", cluster="cloud"), "workload"),
        (_request("web", cluster="mars"), "cluster"),
        (_request("web", cluster="cloud", node="cloud-n9"), "node"),
        (MigrationRequest.model_validate({"workload": "db", "replica": "db-v1-0-aaaaaa", "to": {"cluster": "cloud"}}),
         "replica"),
    ):  # fmt: skip
        with pytest.raises(NotFound) as missing:
            start(request, "user:alice")
        assert missing.value.kind == kind
    with pytest.raises(ValidationError):
        MigrationRequest.model_validate({"workload": "web\n", "to": {"cluster": "cloud"}})

    assert (door.event_count(), door.wakes.count, _migrations(door.db)) == (before, wakes, 0)

    first = start(_request("db", cluster="cloud"), "user:alice")
    assert refused(_request("db", cluster="cloud"), 409, "migration_running")["migration"] == first.id
    assert source == first.source_replica


async def test_a_bus_petition_to_migrate_is_carried_out_once_and_a_bad_one_recorded(door: FrontDoor) -> None:
    _running(door, "web")
    body = json.dumps({"workload": "web", "to": {"cluster": "cloud"}}).encode()
    message = Message("intent.migrate", body, "m-1", time.time())

    await door.commands.migrations.on_bus_petition("ppef", message)
    await door.commands.migrations.on_bus_petition("ppef", message)  # a redelivery

    assert [m.requested_by for m in door.views.migrations.page()] == ["module:ppef"]
    assert door.kinds("intent/ppef/m-1") == [EventKind.INTENT_ACCEPTED]
    bad = Message("intent.migrate", b'{"workload": "web", "to": {"cluster": "mars"}}', "m-2", time.time())
    await door.commands.migrations.on_bus_petition("ppef", bad)
    assert door.kinds("intent/ppef/m-2") == [EventKind.INTENT_REJECTED]
    # A malformed one is refused naming its fields, without its values or pydantic's links (viewers read events).
    secret = "s3cr3t-token-value"
    malformed = json.dumps({"workload": "web\n", "to": {"cluster": "cloud"}, "mode": secret}).encode()
    await door.commands.migrations.on_bus_petition("ppef", Message("intent.migrate", malformed, "m-3", time.time()))
    with door.db.snapshot() as s:
        (refused,) = events.history(s, "intent/ppef/m-3")
    assert refused.kind == EventKind.INTENT_REJECTED
    assert "workload" in refused.message and "mode" in refused.message
    assert secret not in refused.message + str(refused.data) and "pydantic.dev" not in refused.message
    assert _migrations(door.db) == 1


def test_routing_leaves_the_target_out_until_the_switch_and_the_source_from_then_on(door: FrontDoor) -> None:
    source = _running(door, "web")
    started = door.commands.migrations.start(_request("web", cluster="cloud"), "user:alice")
    with door.db.transaction() as s:
        w = s.scalar(select(WorkloadRow).where(WorkloadRow.name == "web"))
        assert w is not None
        target = workloads.bind_replicas(
            s, w, [workloads.Binding(0, "cloud", "cloud-n2", "runc")], cpu=0.5, memory_mib=128
        )[0]
        target.phase, target.url = ReplicaPhase.RUNNING.value, "http://127.0.0.1:9/target"
        row = s.get(MigrationRow, started.id)
        assert row is not None
        row.target_replica = target.id

    def urls() -> list[str]:
        with door.db.transaction() as s:
            return workloads.running_urls(s, ["default/web"])["default/web"]

    assert urls() == ["http://127.0.0.1:9/web"]  # both run; only the source takes traffic
    with door.db.transaction() as s:
        row = s.get(MigrationRow, started.id)
        assert row is not None
        row.switched_at = utcnow()
    assert urls() == ["http://127.0.0.1:9/target"]
    with door.db.transaction() as s:
        source_row = s.get(ReplicaRow, source)
        assert source_row is not None and source_row.desired  # still running: it drains


def _ended_evacuation(db: Database, replica: str, phase: str = "RolledBack", reason: str | None = "drained") -> None:
    """An evacuation of ``replica`` (``reason`` None: a user's move) that ended in ``phase`` without moving it."""
    with db.transaction() as s:
        r = s.get(ReplicaRow, replica)
        assert r is not None
        w = s.get(WorkloadRow, r.workload_id)
        assert w is not None
        mode = MigrationMode.STATEFUL
        row = plan_migration(s, w, r, mode, ("iot", "iot-n1", None), "nemo:evacuation", reason)
        row.phase = phase


def test_evacuations_in_flight_and_given_up_are_read_from_the_store(door: FrontDoor) -> None:
    retried = _running(door, "retried")
    spent = _running(door, "spent")
    silent = _running(door, "silent", cluster="iot", node="iot-n1")
    asked = _running(door, "asked")
    _ended_evacuation(door.db, retried)  # one failed attempt off a cluster that answers: tried again
    for _ in range(EVACUATION_ATTEMPTS):
        _ended_evacuation(door.db, spent, "Failed")
    _ended_evacuation(door.db, silent)
    for _ in range(EVACUATION_ATTEMPTS):
        _ended_evacuation(door.db, asked, reason=None)  # a user's moves are not the engine's to give up
    with door.db.transaction() as s:
        s.execute(update(ClusterRow).where(ClusterRow.name == "iot").values(phase=ClusterPhase.NOT_READY.value))
    with door.db.transaction() as s:
        assert given_up_evacuations(s) == {spent, silent}
        assert evacuations_in_flight(s) == 0
        w = workloads.get_workload(s, "default", "retried")
        r = s.get(ReplicaRow, retried)
        assert r is not None
        plan_migration(s, w, r, MigrationMode.STATELESS, ("iot", "iot-n1", None), "nemo:evacuation", "drained")
    with door.db.transaction() as s:
        assert evacuations_in_flight(s) == 1
        spent_row = s.get(ReplicaRow, spent)
        assert spent_row is not None
        workloads.release_replica(s, spent_row)  # replaced meanwhile: nothing left to give up on
    with door.db.transaction() as s:
        assert given_up_evacuations(s) == {silent}
