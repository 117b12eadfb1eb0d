"""The orchestration engine against a running `nemo up`: bad rows are isolated, moves are make-before-break,
and every replica's placement is explained."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import yaml
from tests.stack import HTTP, ROOT, Stack, running_stack, wait_for

from nemo_kernel.domain import WorkloadDescriptor
from nemo_kernel.store import Database
from nemo_kernel.store.tables import ClusterRow, WorkloadRow

pytestmark = pytest.mark.e2e


def _cluster(name: str, tier: str, *nodes: str) -> dict[str, Any]:
    return {
        "name": name,
        "tier": tier,
        "region": "eu-south",
        "country": "ES",
        "nodes": [{"name": n, "cpu": 2, "memory_mib": 2048} for n in nodes],
    }


CLUSTERS = {
    "clusters": [
        _cluster("cloud-a", "cloud", "ca-1", "ca-2", "ca-3"),
        _cluster("edge-b", "edge", "eb-1", "eb-2", "eb-3"),
    ]
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("engine")
    clusters = root / "clusters.yaml"
    clusters.write_text(yaml.safe_dump(CLUSTERS))
    env = {"NEMO_CLUSTERS_FILE": str(clusters), "NEMO_RECONCILE_INTERVAL": "0.3"}
    with running_stack(root / "data", env) as s:
        yield s


def _demo(name: str, replicas: int = 3, **placement: Any) -> dict[str, Any]:
    """The demo HTTP service: Running only once its health check answers."""
    return {
        "name": name,
        "deployment": {
            "command": ["python3", "-u", "demo_service.py"],
            "working_dir": str(ROOT / "examples"),
            "replicas": replicas,
            "resources": {"cpu": 0.1, "memory_mib": 32},
            "ports": [{"name": "http", "port": 8080}],
            "health": {"http_path": "/healthz", "timeout_seconds": 1.0},
            "placement": placement,
        },
    }


def _get(stack: Stack, name: str) -> dict[str, Any]:
    body: dict[str, Any] = stack.api("GET", f"/workloads/{name}").json()
    return body


def _running(stack: Stack, name: str, count: int = 3) -> dict[str, Any] | None:
    w = _get(stack, name)
    live = [r for r in w["replicas"] if r["phase"] == "Running" and r["version"] == w["version"]]
    return w if w["phase"] == "Running" and len(live) == count else None


def test_a_bad_row_does_not_stop_the_loop_for_the_others(stack: Stack) -> None:
    db = Database(f"sqlite:///{stack.data_dir / 'nemo.db'}")
    try:
        valid = WorkloadDescriptor.model_validate({"name": "x", "deployment": {"command": ["sleep", "60"]}})
        newline = {**valid.model_dump(mode="json"), "name": "pp\n"}
        with db.transaction() as s:
            # Rows stored before validation refused them: a name with a trailing newline (no replica id accepts
            # it), a descriptor that no longer validates, and a cluster whose spec does not.
            s.add(WorkloadRow(namespace="default", name="pp\n", descriptor=newline))
            s.add(WorkloadRow(namespace="default", name="broken", descriptor={"name": "broken", "deployment": 7}))
            s.add(
                ClusterRow(
                    name="bad-cluster", driver="local", tier="edge", region="x", country="ES", spec={"nodes": "none"}
                )
            )
    finally:
        db.dispose()

    assert stack.api("POST", "/workloads", json=_demo("healthy")).status_code == 201
    wait_for(lambda: _running(stack, "healthy"), 60, "the other workload to run")
    ready = HTTP.get(f"{stack.url}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text

    # The error is recorded on each bad object, once.
    for name in ("pp%0A", "broken"):
        w = wait_for(
            lambda name=name: (
                (x := stack.api("GET", f"/workloads/{name}/events").json())
                and any(e["kind"] == "workload.failed" for e in x)
                and x
            ),
            30,
            f"the failure of {name} to be recorded",
        )
        assert sum(e["kind"] == "workload.failed" for e in w) == 1
    cluster = wait_for(
        lambda: [e for e in stack.api("GET", "/clusters/bad-cluster/events").json() if e["kind"] == "cluster.failed"],
        30,
        "the bad cluster's error to be recorded",
    )
    assert "no longer passes this version's checks" in cluster[0]["message"]
    assert stack.api("GET", "/clusters/bad-cluster").json()["phase"] == "Unmanaged"

    # The bad workloads can still be deleted.
    for name in ("pp%0A", "broken"):
        assert stack.api("DELETE", f"/workloads/{name}").status_code == 202
    for name in ("pp%0A", "broken"):
        wait_for(lambda name=name: stack.api("GET", f"/workloads/{name}").status_code == 404, 30, f"{name} deleted")
    assert stack.api("DELETE", "/clusters/bad-cluster").status_code == 204
    assert HTTP.get(f"{stack.url}/readyz", timeout=5).status_code == 200
    stack.api("DELETE", "/workloads/healthy")
    wait_for(lambda: stack.api("GET", "/workloads/healthy").status_code == 404, 30, "healthy deleted")


def _serving(w: dict[str, Any]) -> int:
    """Replicas of the workload that run and answer their health check, wherever they are."""
    return sum(1 for r in w["replicas"] if r["phase"] == "Running")


def test_drain_is_make_before_break(stack: Stack) -> None:
    assert stack.api("POST", "/workloads", json=_demo("mover")).status_code == 201
    before = wait_for(lambda: _running(stack, "mover"), 60, "mover to run")
    counts: dict[str, int] = {}
    for r in before["replicas"]:
        counts[r["cluster"]] = counts.get(r["cluster"], 0) + 1
    source = max(counts, key=lambda c: counts[c])
    leaving = [r for r in before["replicas"] if r["cluster"] == source]
    assert stack.api("POST", f"/clusters/{source}/drain").status_code == 200

    # Observe the stored states throughout the move: never fewer than 3 replicas serving.
    lowest = 3
    deadline = time.monotonic() + 60
    while True:
        w = _get(stack, "mover")
        lowest = min(lowest, _serving(w))
        if _running(stack, "mover") and all(r["cluster"] != source for r in w["replicas"]):
            break
        assert time.monotonic() < deadline, f"replicas did not leave {source}: {w['replicas']}"
    assert lowest >= 3, f"only {lowest} of 3 replicas served during the drain"

    # In the end the replaced replicas are stopped on the drained cluster.
    for r in leaving:
        wait_for(lambda r=r: not psutil.pid_exists(r["pid"]), 30, f"{r['id']} to stop")
    kinds = [e["kind"] for e in stack.api("GET", "/workloads/mover/events").json()]
    assert kinds.count("replica.rescheduled") == len(leaving) and kinds.count("replica.replaced") == len(leaving)
    assert "workload.degraded" not in kinds

    # explain shows every replica where it runs now, with the decision that put it there.
    explained = stack.api("GET", "/workloads/mover/placement").json()
    now = _get(stack, "mover")["replicas"]
    assert {(r["replica"], r["cluster"], r["node"]) for r in explained["replicas"]} == {
        (r["id"], r["cluster"], r["node"]) for r in now
    }
    history = stack.api("GET", "/workloads/mover/decisions").json()
    by_id = {d["id"]: d for d in history}
    for r in explained["replicas"]:
        assert r["verdict"]["node"] == r["node"] and r["verdict"]["replicas"] >= 1
        placed = by_id[r["decision"]]["assignments"]
        assert {"index": r["index"], "cluster": r["cluster"], "node": r["node"]} in placed
    shown = stack.cli("workload", "explain", "mover").stdout
    assert all(r["replica"] in shown for r in explained["replicas"])

    # The history pages with a cursor, within declared bounds.
    assert len(history) >= 2  # the first placement and the move
    first = stack.api("GET", "/workloads/mover/decisions", params={"limit": 1}).json()
    rest = stack.api("GET", "/workloads/mover/decisions", params={"after": first[0]["id"]}).json()
    assert first + rest == history
    for params in ({"limit": 0}, {"limit": 501}, {"after": -1}, {"after": 2**63}):
        assert stack.api("GET", "/workloads/mover/decisions", params=params).status_code == 422, params
    stack.api("POST", f"/clusters/{source}/uncordon")


def test_pending_reason_names_every_filter_once_without_the_phase_word(stack: Stack) -> None:
    doc = {"name": "secret", "deployment": {"command": ["sleep", "60"], "isolation": "confidential"}}
    assert stack.api("POST", "/workloads", json=doc).status_code == 201
    w = wait_for(
        lambda: (x := _get(stack, "secret"))["phase"] == "Pending" and "fits nowhere" in x["message"] and x,
        30,
        "secret to be Pending with a reason",
    )
    assert not w["message"].lower().startswith("pending")
    assert "6 nodes rejected: runtime (" in w["message"] and "), tee (" in w["message"]
    stack.api("DELETE", "/workloads/secret")
