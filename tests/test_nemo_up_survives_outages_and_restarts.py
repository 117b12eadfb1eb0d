"""The whole stack as a user runs it: `nemo up`, the CLI, real replica processes, outages and restarts."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stack import HTTP, ROOT, Stack, running_stack, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    env = {
        "NEMO_HEARTBEAT_TIMEOUT": "3",
        "NEMO_HEARTBEAT_INTERVAL": "0.5",
        "NEMO_RECONCILE_INTERVAL": "0.5",
        "NEMO_DRIVER_TIMEOUT": "1.5",
    }
    with running_stack(tmp_path / "data", env) as s:
        yield s


def _workload(stack: Stack) -> dict[str, Any]:
    response = stack.api("GET", "/workloads/demo")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _running(stack: Stack, count: int = 3) -> dict[str, Any] | None:
    w = _workload(stack)
    live = [r for r in w["replicas"] if r["phase"] == "Running" and r["version"] == w["version"]]
    return {**w, "replicas": live} if w["phase"] == "Running" and len(live) == count else None


def _answer(url: str) -> dict[str, Any]:
    response = HTTP.get(url + "/", timeout=2)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def test_demo_lifecycle_outage_and_restart(stack: Stack) -> None:
    clusters = stack.cli_json("cluster", "list")
    assert {c["spec"]["name"]: c["spec"]["tier"] for c in clusters} == {
        "cloud-eu": "cloud",
        "edge-madrid": "edge",
        "iot-gateway": "iot",
    }

    applied = stack.cli_json(
        "workload", "apply", "-f", str(ROOT / "examples" / "demo-workload.yaml"), "--wait", "--timeout", "60"
    )
    assert applied["outcome"] == "created"
    w = wait_for(lambda: _running(stack), 30, "3 running replicas")

    # Every replica answers, as itself.
    for r in w["replicas"]:
        assert _answer(r["url"])["replica"] == r["id"]

    # The placement is explained, candidate by candidate.
    decision = stack.cli_json("workload", "explain", "demo")
    assert decision["outcome"] == "Placed"
    assert {c["cluster"] for c in decision["candidates"]} == {"cloud-eu", "edge-madrid", "iot-gateway"}
    assert sum(c["replicas"] for c in decision["candidates"]) == 3

    # A replica that dies is restarted on its node and answers again.
    victim = w["replicas"][0]
    os.kill(victim["pid"], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        r = next(x for x in _workload(stack)["replicas"] if x["id"] == victim["id"])
        return r if r["restarts"] >= 1 and r["phase"] == "Running" and r["pid"] != victim["pid"] else None

    again = wait_for(restarted, 30, "the killed replica to be restarted")
    assert _answer(again["url"])["replica"] == victim["id"]

    # A cluster that stops answering: its replicas move to other eligible clusters.
    w = _workload(stack)
    down = w["replicas"][0]["cluster"]
    agent = stack.agent_pid(down)
    os.kill(agent, signal.SIGSTOP)
    try:

        def moved() -> dict[str, Any] | None:
            now = _running(stack)
            return now if now and all(r["cluster"] != down for r in now["replicas"]) else None

        w = wait_for(moved, 45, f"replicas to leave {down}")
        stopping = [r for r in _workload(stack)["replicas"] if r["cluster"] == down]
        assert stopping and all(r["phase"] == "Stopping" for r in stopping)
        assert stack.cli_json("cluster", "get", down)["phase"] == "NotReady"
        kinds = [e["kind"] for e in stack.cli_json("workload", "events", "demo")]
        assert "replica.rescheduled" in kinds and "cluster.not_ready" not in kinds
        for r in w["replicas"]:
            assert _answer(r["url"])["replica"] == r["id"]
    finally:
        os.kill(agent, signal.SIGCONT)
    wait_for(lambda: stack.cli_json("cluster", "get", down)["phase"] == "Ready", 30, f"{down} to be Ready again")
    # Once it answers again, the replicas that moved away are stopped there.
    wait_for(lambda: all(r["cluster"] != down for r in _workload(stack)["replicas"]), 30, f"{down} to be cleaned")
    for r in stopping:
        with pytest.raises(httpx.HTTPError):
            _answer(r["url"])

    # The control plane restarts (SIGTERM): everything it knew is intact and the replicas are adopted.
    before = _workload(stack)
    history = stack.api("GET", "/workloads/demo/events").json()
    placement = stack.api("GET", "/workloads/demo/placement").json()
    assert stack.stop(signal.SIGTERM) == 0
    stack.start()
    after = wait_for(lambda: _running(stack), 30, "replicas after restart")
    assert {(r["id"], r["pid"]) for r in after["replicas"]} == {(r["id"], r["pid"]) for r in before["replicas"]}
    assert stack.api("GET", "/workloads/demo/placement").json() == placement
    assert stack.api("GET", "/workloads/demo/events").json()[: len(history)] == history
    assert len(stack.cli_json("cluster", "list")) == 3
    for r in after["replicas"]:
        assert _answer(r["url"])["replica"] == r["id"]

    # Deleting stops every replica.
    stack.cli("workload", "delete", "demo")
    wait_for(lambda: stack.api("GET", "/workloads/demo").status_code == 404, 30, "the workload to be deleted")
    for r in after["replicas"]:
        with pytest.raises(httpx.HTTPError):
            _answer(r["url"])


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """`nemo up` on its default SQLite store, and on PostgreSQL through NEMO_DATABASE_URL."""
    env = {"NEMO_HEARTBEAT_TIMEOUT": "3", "NEMO_RECONCILE_INTERVAL": "0.5", "NEMO_DRIVER_TIMEOUT": "1.5"}
    if request.param == "postgresql":
        env["NEMO_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    with running_stack(tmp_path / "data", env) as s:
        yield s


def test_sigkill_loses_nothing_acknowledged(any_store_stack: Stack) -> None:
    stack = any_store_stack
    spec = {
        "name": "far-edge",
        "tier": "edge",
        "region": "eu-north",
        "country": "FI",
        "nodes": [{"name": "fe-1", "cpu": 2, "memory_mib": 1024}],
    }
    assert stack.api("POST", "/clusters", json=spec).status_code == 201
    descriptor = {
        "name": "idle",
        "deployment": {"command": ["sleep", "300"], "replicas": 1, "placement": {"countries": ["FI"]}},
    }
    assert stack.api("POST", "/workloads", json=descriptor).status_code == 201
    stack.stop(signal.SIGKILL)
    stack.start()
    assert stack.api("GET", "/clusters/far-edge").json()["spec"] == {
        **spec,
        "driver": "local",
        "labels": {},
        "prices": {"cpu_hour_eur": 0.03, "gib_hour_eur": 0.004},
        "carbon_intensity": 300.0,
        "nodes": [
            {
                **spec["nodes"][0],
                "architecture": "amd64",
                "runtimes": ["runc"],
                "tee": "none",
                "labels": {},
                "power": {"idle_watts": 50.0, "max_watts": 200.0, "table": None},
            }
        ],
        "links": {},
        "carbon_intensity_source": None,
        "sim": None,
    }
    w = wait_for(
        lambda: (x := stack.api("GET", "/workloads/idle").json())["phase"] == "Running" and x,
        30,
        "the acknowledged workload to run after SIGKILL",
    )
    assert [r["cluster"] for r in w["replicas"]] == ["far-edge"]

    # The cluster's agent dies: a new one is started and adopts the replica, which keeps running untouched (even
    # if the cluster read NotReady meanwhile: the replica had nowhere else to go, so it was never stopped).
    agent = stack.agent_pid("far-edge")
    os.kill(agent, signal.SIGKILL)
    wait_for(lambda: stack.agent_pid("far-edge") != agent, 30, "a new agent for far-edge")
    # The cluster may still read Ready from before the kill: only a heartbeat stored after the new agent appeared
    # shows that the control plane reached it (and so is done starting it).
    new_agent_seen = datetime.now(UTC)

    def adopted() -> dict[str, Any] | None:
        x: dict[str, Any] = stack.api("GET", "/workloads/idle").json()
        cluster = stack.api("GET", "/clusters/far-edge").json()
        heard = (
            cluster["last_heartbeat"] is not None and datetime.fromisoformat(cluster["last_heartbeat"]) > new_agent_seen
        )
        same = [(r["id"], r["pid"]) for r in x["replicas"]] == [(r["id"], r["pid"]) for r in w["replicas"]]
        return x if cluster["phase"] == "Ready" and heard and x["phase"] == "Running" and same else None

    after = wait_for(adopted, 30, "far-edge Ready again with the replica reported by the new agent")
    assert [r["restarts"] for r in after["replicas"]] == [0]

    # The agent stops answering long enough for far-edge to read NotReady, then answers again: the replica has
    # nowhere else to go, so it keeps running (make-before-break) and is still there, untouched.
    agent = stack.agent_pid("far-edge")
    os.kill(agent, signal.SIGSTOP)
    try:
        wait_for(lambda: stack.api("GET", "/clusters/far-edge").json()["phase"] == "NotReady", 30, "far-edge NotReady")
    finally:
        os.kill(agent, signal.SIGCONT)
    again = wait_for(adopted, 30, "far-edge Ready again with its replica untouched")
    assert [r["restarts"] for r in again["replicas"]] == [0]
