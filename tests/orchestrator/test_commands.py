"""The front door in-process, on SQLite and PostgreSQL: each command records its event and wakes the reconcile loop,
refused input changes nothing and wakes nothing, and a view returns what the API returns."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from sqlalchemy import func, select
from tests.stack import running_stack, wait_for

from nemo_kernel.access.gateway.config import GatewayConfig
from nemo_kernel.bus import ModuleIdentity
from nemo_kernel.bus.base import Message
from nemo_kernel.config import Settings
from nemo_kernel.domain import ClusterSpec, EventKind, WorkloadDescriptor, WorkloadPhase
from nemo_kernel.domain.errors import ApiError
from nemo_kernel.orchestrator.commands import Commands
from nemo_kernel.orchestrator.identities import ORCHESTRATOR
from nemo_kernel.orchestrator.intake import Intake
from nemo_kernel.orchestrator.key_directory import StoredKeyDirectory
from nemo_kernel.orchestrator.resources import ResourceManager
from nemo_kernel.orchestrator.views import Views
from nemo_kernel.store import Conflict, Database, NotFound, events
from nemo_kernel.store import workloads as workload_store
from nemo_kernel.store.tables import EventRow, ReplicaRow

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)


class Wakes:
    """The reconcile loop's wake-up, counted: what the control plane passes as ``wake``."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


class FrontDoor:
    """Commands and views over one migrated store, as the control plane composes them."""

    def __init__(self, db: Database, tmp_path: Path) -> None:
        self.db = db
        self.wakes = Wakes()
        settings = Settings(data_dir=tmp_path / "data", petition_roots=[tmp_path], max_managed_clusters=4)
        directory = StoredKeyDirectory(db)
        self.directory = directory
        self.commands = Commands(
            db, self.wakes, intake=Intake(db, settings), directory=directory, resources=ResourceManager(db, settings)
        )
        self.sandboxes: dict[str, str] = {}
        self.views = Views(db, self.sandboxes.get, directory)

    def kinds(self, subject: str) -> list[str]:
        """Kinds of the events recorded about ``subject``, oldest first."""
        with self.db.transaction() as s:
            return [e.kind for e in events.history(s, subject)]

    def event_count(self) -> int:
        """Every event recorded so far."""
        with self.db.transaction() as s:
            return s.scalar(select(func.count()).select_from(EventRow)) or 0


@pytest.fixture
def door(database: Database, tmp_path: Path) -> FrontDoor:
    return FrontDoor(database, tmp_path)


def _cluster(name: str = "edge-1") -> ClusterSpec:
    return ClusterSpec.model_validate(
        {
            "name": name,
            "tier": "edge",
            "region": "eu-south",
            "country": "ES",
            "nodes": [{"name": f"{name}-n1", "cpu": 2, "memory_mib": 512}],
        }
    )


def _workload(name: str = "web", replicas: int = 1, description: str = "") -> WorkloadDescriptor:
    return WorkloadDescriptor.model_validate(
        {
            "name": name,
            "description": description,
            "deployment": {"command": ["sleep", "600"], "replicas": replicas, "ports": []},
        }
    )


def test_each_cluster_command_records_its_event_and_wakes(door: FrontDoor) -> None:
    clusters, subject = door.commands.clusters, events.cluster_subject("edge-1")

    added = clusters.add(_cluster())
    assert (added.spec.name, added.cordoned, door.wakes.count) == ("edge-1", False, 1)
    assert clusters.set_schedulable("edge-1", cordoned=True).cordoned
    clusters.set_schedulable("edge-1", cordoned=True, draining=True)
    assert not clusters.set_schedulable("edge-1", cordoned=False).cordoned
    assert door.kinds(subject) == [
        EventKind.CLUSTER_REGISTERED,
        EventKind.CLUSTER_CORDONED,
        EventKind.CLUSTER_DRAINING,
        EventKind.CLUSTER_UNCORDONED,
    ]
    assert door.wakes.count == 4

    clusters.remove("edge-1")
    assert door.kinds(subject)[-1] == EventKind.CLUSTER_REMOVED
    assert door.wakes.count == 5
    assert door.views.clusters.every() == []


def test_refused_cluster_commands_change_nothing_and_wake_nothing(door: FrontDoor) -> None:
    door.commands.clusters.add(_cluster())
    before, wakes, status = door.event_count(), door.wakes.count, door.views.clusters.get("edge-1")

    with pytest.raises(Conflict):
        door.commands.clusters.add(_cluster())
    with pytest.raises(NotFound):
        door.commands.clusters.set_schedulable("nope", cordoned=True)
    with pytest.raises(NotFound):
        door.commands.clusters.remove("nope")

    assert (door.event_count(), door.wakes.count) == (before, wakes)
    assert door.views.clusters.get("edge-1") == status


def test_each_concurrent_apply_answers_with_the_version_it_made(door: FrontDoor) -> None:
    # The API answers an apply with the workload as this apply left it: racing applies must not answer with a
    # later caller's version (read after commit, 120 racing POSTs gave 54 distinct versions).
    callers = 16
    start = threading.Barrier(callers)

    def apply(n: int) -> tuple[int, int, str]:
        start.wait()
        result, status = door.commands.workloads.apply(_workload(description=f"caller {n}"))
        return result.row.version, status.version, status.descriptor.description

    with ThreadPoolExecutor(callers) as pool:
        answers = list(pool.map(apply, range(callers)))

    assert sorted(made for made, _, _ in answers) == list(range(1, callers + 1))
    assert all(made == answered for made, answered, _ in answers)
    assert len({description for _, _, description in answers}) == callers


def test_workload_commands_record_their_events_and_wake_only_on_change(door: FrontDoor) -> None:
    workloads, subject = door.commands.workloads, events.workload_subject("default", "web")

    assert workloads.apply(_workload())[0].outcome == "created"
    assert workloads.apply(_workload())[0].outcome == "unchanged"
    assert door.wakes.count == 1  # nothing to carry out for an unchanged descriptor
    assert workloads.apply(_workload(replicas=2))[0].outcome == "updated"
    workloads.delete("default", "web")
    assert door.kinds(subject) == [
        EventKind.WORKLOAD_REGISTERED,
        EventKind.WORKLOAD_UPDATED,
        EventKind.WORKLOAD_DELETING,
    ]
    assert door.wakes.count == 3
    assert door.views.workloads.status("default", "web").phase is WorkloadPhase.DELETING

    before, wakes = door.event_count(), door.wakes.count
    with pytest.raises(NotFound):
        workloads.delete("default", "nope")
    assert (door.event_count(), door.wakes.count) == (before, wakes)


def test_a_node_counts_the_released_replicas_it_still_runs(door: FrontDoor) -> None:
    # `nemo cluster drain --wait` reads this: a released replica gives its node's capacity back at once, yet it
    # still runs there until the cluster reports it gone, so a drained cluster is empty only when both are 0
    door.commands.clusters.add(_cluster())
    door.commands.workloads.apply(_workload(replicas=2))
    with door.db.transaction() as s:
        web = workload_store.get_workload(s, "default", "web")
        bindings = [workload_store.Binding(i, "edge-1", "edge-1-n1") for i in (0, 1)]
        _, released = workload_store.bind_replicas(s, web, bindings, cpu=0.5, memory_mib=64)
        workload_store.release_replica(s, released)
        released_id = released.id

    [node] = door.views.clusters.nodes("edge-1")
    assert (node.replicas, node.stopping, node.allocated_cpu) == (1, 1, 0.5)

    with door.db.transaction() as s:
        s.delete(s.get(ReplicaRow, released_id))  # what the rollout does once the cluster reports it gone
    [node] = door.views.clusters.nodes("edge-1")
    assert (node.replicas, node.stopping) == (1, 0)


async def test_petitions_from_rest_and_bus_go_through_the_same_command(door: FrontDoor) -> None:
    summary = await asyncio.to_thread(door.commands.workloads.petition, {"numberofclusters": 2})
    assert summary == {"kind": "join", "clusters": ["managed-1", "managed-2"]}
    assert door.wakes.count == 1

    before = door.event_count()
    with pytest.raises(ValidationError):
        await asyncio.to_thread(door.commands.workloads.petition, {"numberofclusters": 0})
    assert (door.event_count(), door.wakes.count) == (before, 1)
    assert [c.spec.name for c in door.views.clusters.every()] == ["managed-1", "managed-2"]

    message = Message("intent.join", json.dumps({"numberofclusters": 1}).encode(), "m-1", time.time())
    await door.commands.workloads.on_bus_petition("ppef", message)
    await door.commands.workloads.on_bus_petition("ppef", message)  # a redelivery: carried out once
    assert [c.spec.name for c in door.views.clusters.every()] == ["managed-1", "managed-2", "managed-3"]
    assert door.kinds("intent/ppef/m-1") == [EventKind.INTENT_ACCEPTED]
    assert door.wakes.count == 3


async def test_join_petitions_create_at_most_the_managed_clusters_an_admin_allows(door: FrontDoor) -> None:
    # An operator's petitions may create clusters (each local one an agent process): never without bound.
    await asyncio.to_thread(door.commands.workloads.petition, {"numberofclusters": 3})
    before = door.event_count()
    with pytest.raises(ApiError) as refused:
        await asyncio.to_thread(door.commands.workloads.petition, {"numberofclusters": 2})
    assert refused.value.status == 409 and "NEMO_MAX_MANAGED_CLUSTERS=4" in refused.value.message
    assert door.event_count() == before
    summary = await asyncio.to_thread(door.commands.workloads.petition, {"numberofclusters": 1})
    assert summary["clusters"] == ["managed-4"]


def test_module_commands_validate_before_the_directory_changes(door: FrontDoor) -> None:
    modules = door.commands.modules
    first, second = ModuleIdentity.generate("ppef").public(), ModuleIdentity.generate("ppef").public()
    public = {k: v for k, v in first.to_dict().items() if k.endswith("_public")}

    with pytest.raises(ApiError) as wrong_id:
        modules.register("ppef", **public, key_id="not-it")
    assert (wrong_id.value.status, wrong_id.value.details[0]["field"]) == (422, "key_id")
    with pytest.raises(ApiError) as own:
        modules.register(ORCHESTRATOR, **public)
    assert own.value.status == 409
    with pytest.raises(ApiError) as unknown:
        modules.rotate("ppef", **public)
    assert unknown.value.status == 404
    assert door.directory.records() == []

    modules.register("ppef", **public, subscriptions=["sla.#"])
    rotated = {k: v for k, v in second.to_dict().items() if k.endswith("_public")}
    modules.rotate("ppef", **rotated, revoke_previous=True)
    assert [(r.keys.key_id, r.current, r.keys.revoked) for r in door.directory.records("ppef")] == [
        (first.key_id, False, True),
        (second.key_id, True, False),
    ]
    entry = door.views.modules.get("ppef")
    assert (entry.current_key_id, entry.subscriptions, len(entry.keys)) == (second.key_id, ["sla.#"], 2)
    with pytest.raises(ApiError) as absent:
        door.views.modules.get("nobody")
    assert absent.value.status == 404
    assert second.key_id in modules.revoke("ppef")
    assert all(r.keys.revoked for r in door.directory.records("ppef"))
    assert door.wakes.count == 0  # keys are not desired state of the reconcile loop


def test_gateway_commands_store_only_a_valid_whole(door: FrontDoor) -> None:
    service, created = door.commands.gateway.put("service", {"name": "a", "url": "http://127.0.0.1:9"}, create=True)
    assert created and door.views.gateway.entity("service", "a") == service
    door.commands.gateway.put("route", {"name": "r", "service": "a", "paths": ["/a"]})
    before = door.views.gateway.config()

    with pytest.raises(ApiError) as dangling:
        door.commands.gateway.put("route", {"name": "r2", "service": "missing"})
    assert (dangling.value.status, dangling.value.details[0]["field"]) == (422, "routes[r2].service")
    with pytest.raises(ApiError) as used:
        door.commands.gateway.delete("service", "a")
    assert used.value.status == 409
    assert door.views.gateway.config() == before

    replaced = door.commands.gateway.replace_config(GatewayConfig())
    assert replaced["services"] == [] and door.views.gateway.entities("route") == []


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[Any]:
    """``nemo up`` on the test's database, with one cluster."""
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": [_cluster().model_dump(mode="json")]}))
    env = {
        "NEMO_CLUSTERS_FILE": str(clusters),
        "NEMO_RECONCILE_INTERVAL": "0.3",
        "NEMO_DATABASE_URL": database_url,
        "NEMO_GATEWAY_ENABLED": "false",
    }
    with running_stack(tmp_path / "data", env) as stack:
        yield stack


def test_a_view_returns_what_the_api_returns(served: Any, database_url: str) -> None:
    stack = served
    applied = stack.api("POST", "/workloads", json=_workload().model_dump(mode="json", by_alias=True))
    assert applied.status_code == 201, applied.text
    wait_for(lambda: stack.api("GET", "/workloads/web").json()["phase"] == "Running", 60, "web running")

    db = Database(database_url)
    try:
        views = Views(db, lambda _: None, StoredKeyDirectory(db))
        for path, read in [
            ("/workloads/web/placement", lambda: views.workloads.placement("default", "web")),
            ("/workloads/web/decisions", lambda: views.workloads.decisions("default", "web")),
            ("/workloads/web/events", lambda: views.workloads.history("default", "web")),
            ("/clusters/edge-1/nodes", lambda: views.clusters.nodes("edge-1")),
        ]:
            answer = stack.api("GET", path).json()
            assert answer and answer == _json(read()), path
    finally:
        db.dispose()


def _json(value: Any) -> Any:
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value.model_dump(mode="json", by_alias=True)
