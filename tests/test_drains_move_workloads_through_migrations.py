"""Drains on a real `nemo up` move replicas through the migration service: a stateful counter keeps every increment,
a drain waits for a user's migration of the same workload, a control plane killed mid-drain resumes with no replica
lost or doubled, and a workload that fits nowhere else keeps serving where it is, saying why."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.stack import Stack, wait_for
from tests.traffic import SteadyClient
from tests.two_clusters import CLUSTER_NAMES, EXAMPLES, count_of, deploy, migrate, through_gateway, two_cluster_stack

pytestmark = pytest.mark.e2e

FINAL = ("Completed", "Failed", "RolledBack")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with two_cluster_stack(tmp_path_factory.mktemp("drains")) as started:
        yield started


@pytest.fixture
def uncordoned(stack: Stack) -> Iterator[None]:
    """Every cluster schedulable again after the test, whatever it drained."""
    yield
    for name in CLUSTER_NAMES:
        stack.api("POST", f"/clusters/{name}/uncordon")


def _replicas(stack: Stack, name: str) -> list[dict[str, Any]]:
    return list(stack.api("GET", f"/workloads/{name}").json()["replicas"])


def _migrations(stack: Stack, name: str) -> list[dict[str, Any]]:
    return list(stack.api("GET", "/migrations", params={"workload": f"default/{name}"}).json())


def _events(stack: Stack, name: str) -> list[dict[str, Any]]:
    return list(stack.api("GET", f"/workloads/{name}/events", params={"limit": 1000}).json())


def _off(stack: Stack, name: str, cluster: str, count: int) -> list[dict[str, Any]] | None:
    """The workload's replicas once exactly ``count`` run, none of them on ``cluster`` and no move is running."""
    replicas = _replicas(stack, name)
    running = [r for r in replicas if r["phase"] == "Running" and r["cluster"] != cluster]
    moving = [m for m in _migrations(stack, name) if m["phase"] not in FINAL]
    return replicas if len(replicas) == count and len(running) == count and not moving else None


def test_a_drained_stateful_counter_keeps_every_increment(stack: Stack, uncordoned: None) -> None:
    deploy(stack, "tally", "counter_service.py", stateful=True)
    source = _replicas(stack, "tally")[0]
    acknowledged = count_of(stack, "tally")

    with SteadyClient("POST", f"{stack.gateway_url}/tally/increment", rate=100) as client:
        wait_for(lambda: client.report.ok >= 50, 30, "increments flowing")
        assert stack.api("POST", f"/clusters/{source['cluster']}/drain").status_code == 200
        wait_for(lambda: _off(stack, "tally", source["cluster"], 1), 120, "the counter to leave the drained cluster")
        seen = client.report.ok
        wait_for(lambda: client.report.ok >= seen + 50, 30, "increments after the move")
    report = client.report

    # Every increment the client was told about is there (the state was handed over, not lost with the source).
    assert count_of(stack, "tally") == acknowledged + report.ok
    assert set(report.statuses) <= {"200", "503"}, report.statuses
    [move] = _migrations(stack, "tally")
    assert (move["phase"], move["mode"], move["reason"]) == ("Completed", "stateful", "drained"), move
    assert move["source_replica"] == source["id"] and move["requested_by"] == "nemo:evacuation"
    events = _events(stack, "tally")
    [rescheduled] = [e for e in events if e["kind"] == "replica.rescheduled"]
    assert rescheduled["data"]["migration"] == move["id"] and rescheduled["data"]["reason"] == "drained"
    [replaced] = [e for e in events if e["kind"] == "replica.replaced"]
    assert replaced["data"]["replica"] == source["id"] and replaced["data"]["replacement"] == move["target_replica"]
    # The decision that chose the target explains where the replica runs now.
    explained = stack.api("GET", "/workloads/tally/placement").json()
    [now] = explained["replicas"]
    assert (now["replica"], now["cluster"], now["node"]) == (
        move["target_replica"],
        move["target_cluster"],
        move["target_node"],
    )


def test_a_drain_waits_for_a_running_user_migration_of_the_workload(stack: Stack, uncordoned: None) -> None:
    # A slow import keeps the user's stateful move running long enough for the drain to meet it.
    deploy(stack, "ledger", "counter_service.py", stateful=True, env={"COUNTER_IMPORT_DELAY": "1.5"})
    source = _replicas(stack, "ledger")[0]
    for _ in range(10):
        assert through_gateway(stack, "POST", "/ledger/increment").status_code == 200
    target = "iot-gateway" if source["cluster"] == "cloud-eu" else "cloud-eu"
    user = migrate(stack, "ledger", {"cluster": target, "node": f"{target}-n1"})

    # The drain must meet the move once its target was sent: a target not sent yet is never sent to a draining
    # cluster (the move rolls back), and which request lands first was a race of a few milliseconds.
    def target_sent() -> bool:
        move = next(m for m in _migrations(stack, "ledger") if m["id"] == user["id"])
        return any(r["id"] == move["target_replica"] and r["phase"] != "Scheduled" for r in _replicas(stack, "ledger"))

    wait_for(target_sent, 60, "the user's move's target sent to its cluster", interval=0.05)
    assert stack.api("POST", f"/clusters/{target}/drain").status_code == 200  # where the user's move goes

    # Never two movers: at every look, at most one migration of the workload runs.
    def settled() -> list[dict[str, Any]] | None:
        moves = _migrations(stack, "ledger")
        assert sum(m["phase"] not in FINAL for m in moves) <= 1, moves
        return moves if len(moves) == 2 and all(m["phase"] in FINAL for m in moves) else None

    try:
        moves = wait_for(settled, 180, "the user's move, then the drain's", interval=0.1)
    except AssertionError as timed_out:  # say where it stood, so a failure on a loaded machine can be read
        state = {"moves": _migrations(stack, "ledger"), "replicas": _replicas(stack, "ledger")}
        raise AssertionError(f"{timed_out}: {state}") from None
    first, second = sorted(moves, key=lambda m: m["id"])
    assert first["id"] == user["id"] and first["phase"] == "Completed" and first["reason"] is None
    assert second["reason"] == "drained" and second["phase"] == "Completed"
    assert second["source_replica"] == first["target_replica"] and second["target_cluster"] == source["cluster"]
    ended = {t["phase"]: t["ended_at"] for t in first["timings"]}
    started = datetime.fromisoformat(second["created_at"])
    assert started >= datetime.fromisoformat(ended["Cleaning"]), (first, second)  # once the user's move ended
    assert count_of(stack, "ledger") == 10


def test_a_control_plane_killed_mid_drain_resumes_with_no_replica_lost_or_doubled(
    stack: Stack, uncordoned: None
) -> None:
    body = {
        "name": "fleet",
        "namespace": "default",
        "deployment": {
            "command": ["python3", "-u", "demo_service.py"],
            "working_dir": str(EXAMPLES),
            "replicas": 3,
            "resources": {"cpu": 0.1, "memory_mib": 32},
            "ports": [{"name": "http", "port": 8080}],
            "health": {"http_path": "/healthz", "timeout_seconds": 1.0},
        },
    }
    assert stack.api("POST", "/workloads", json=body).status_code == 201
    before = wait_for(lambda: _off(stack, "fleet", "", 3), 90, "three replicas running")
    counts = {c: sum(r["cluster"] == c for r in before) for c in ("cloud-eu", "iot-gateway")}
    drained = max(counts, key=lambda c: counts[c])
    assert stack.api("POST", f"/clusters/{drained}/drain").status_code == 200

    def mid_move() -> bool:
        return any(m["phase"] in ("Preparing", "Switching", "Cleaning") for m in _migrations(stack, "fleet"))

    wait_for(mid_move, 60, "a move in progress", interval=0.05)
    stack.stop(signal.SIGKILL)
    stack.start()

    replicas = wait_for(lambda: _off(stack, "fleet", drained, 3), 180, f"every replica off {drained}")
    assert sorted(r["index"] for r in replicas) == [0, 1, 2]  # none lost, none doubled
    moves = _migrations(stack, "fleet")
    assert len(moves) == counts[drained], moves
    assert all(m["phase"] == "Completed" and m["reason"] == "drained" for m in moves), moves
    kinds = [e["kind"] for e in _events(stack, "fleet")]
    assert kinds.count("replica.rescheduled") == counts[drained] == kinds.count("replica.replaced")


def test_a_drained_cluster_with_nowhere_else_to_go_keeps_serving_with_a_pending_reason(
    stack: Stack, uncordoned: None
) -> None:
    deploy(stack, "pinned", "demo_service.py", stateful=False, placement={"clusters": ["iot-gateway"]})
    [before] = _replicas(stack, "pinned")
    assert stack.api("POST", "/clusters/iot-gateway/drain").status_code == 200

    def explained() -> dict[str, Any] | None:
        w = stack.api("GET", "/workloads/pinned").json()
        return w if "cannot leave" in w["message"] else None

    w = wait_for(explained, 30, "the workload to say why its replica stays")
    assert "drained" in w["message"] and "keeps serving there" in w["message"] and "cluster-allowlist" in w["message"]
    assert w["phase"] == "Running" and [r["id"] for r in w["replicas"]] == [before["id"]]
    pending = [e for e in _events(stack, "pinned") if e["kind"] == "placement.pending"]
    assert pending and all(e["data"]["reason"] == "drained" for e in pending)
    assert through_gateway(stack, "GET", "/pinned/").status_code == 200  # it never stopped serving
    assert _migrations(stack, "pinned") == []
