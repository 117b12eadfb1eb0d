"""`nemo cluster drain NAME --wait` on a real `nemo up`: it returns once the cluster runs nothing, and fails, saying
how many replicas are left, when one cannot leave within the timeout."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.stack import Stack, running_stack, wait_for

pytestmark = pytest.mark.e2e

CLUSTERS = {
    "clusters": [
        {
            "name": name,
            "tier": "edge",
            "region": "eu-south",
            "country": "ES",
            "nodes": [{"name": f"{name}-n1", "cpu": 2, "memory_mib": 2048}],
        }
        for name in ("left", "right")
    ]
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("drain-cli")
    clusters = root / "clusters.yaml"
    clusters.write_text(yaml.safe_dump(CLUSTERS))
    with running_stack(root / "data", {"NEMO_CLUSTERS_FILE": str(clusters)}) as s:
        for name in ("left", "right"):
            wait_for(lambda n=name: s.api("GET", f"/clusters/{n}").json()["phase"] == "Ready", 60, f"{name} Ready")
        yield s


def _apply(stack: Stack, name: str, **placement: Any) -> list[dict[str, Any]]:
    body = {"name": name, "deployment": {"command": ["sleep", "600"], "replicas": 1, "placement": placement}}
    assert stack.api("POST", "/workloads", json=body).status_code == 201

    def running() -> list[dict[str, Any]] | None:
        w = stack.api("GET", f"/workloads/{name}").json()
        return list(w["replicas"]) if w["phase"] == "Running" else None

    return wait_for(running, 60, f"{name} to run")


def _hosted(stack: Stack, cluster: str) -> int:
    return sum(n["replicas"] + n["stopping"] for n in stack.api("GET", f"/clusters/{cluster}/nodes").json())


def test_drain_wait_returns_once_the_cluster_runs_nothing(stack: Stack) -> None:
    [replica] = _apply(stack, "roamer")
    drained = replica["cluster"]
    done = stack.cli("cluster", "drain", drained, "--wait", "--timeout", "90")
    assert f"cluster {drained} drained: it runs no replica" in done.stdout
    assert _hosted(stack, drained) == 0
    # released replicas included: the moved one is listed once, where it went, as soon as the command returns
    [moved] = stack.api("GET", "/workloads/roamer").json()["replicas"]
    assert moved["cluster"] != drained
    stack.api("POST", f"/clusters/{drained}/uncordon")
    stack.api("DELETE", "/workloads/roamer")


def test_drain_wait_fails_naming_what_is_left_when_a_replica_cannot_leave(stack: Stack) -> None:
    _apply(stack, "anchored", clusters=["left"])
    done = stack.cli("cluster", "drain", "left", "--wait", "--timeout", "3", check=False)
    assert done.returncode != 0
    assert "cluster left still runs 1 replicas after 3 s" in done.stderr + done.stdout
    assert stack.api("GET", "/workloads/anchored").json()["phase"] == "Running"  # it keeps serving where it is
    stack.api("POST", "/clusters/left/uncordon")
