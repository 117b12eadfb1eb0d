"""Fault injection over HTTP and the CLI against a running `nemo up` with simulated clusters (and a local one)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from tests.stack import Stack, running_stack, wait_for
from tests.stack import expect_error as _error

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)


def _sim(name: str, nodes: int) -> dict[str, Any]:
    return {
        "name": name,
        "driver": "sim",
        "tier": "edge",
        "region": "eu-south",
        "country": "ES",
        "sim": {"start_delay_s": 0.2, "seed": 1},
        "nodes": [{"name": f"{name}-n{i}", "cpu": 4, "memory_mib": 4096} for i in range(nodes)],
    }


CLUSTERS = {
    "clusters": [
        _sim("sim-a", 2),
        _sim("sim-b", 1),
        {"name": "local-c", "tier": "cloud", "region": "eu-central", "country": "DE",
         "nodes": [{"name": "lc-1", "cpu": 2, "memory_mib": 2048}]},
    ]
}  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("faults")
    clusters = root / "clusters.yaml"
    clusters.write_text(yaml.safe_dump(CLUSTERS))
    env = {"NEMO_CLUSTERS_FILE": str(clusters), "NEMO_RECONCILE_INTERVAL": "0.2", "NEMO_HEARTBEAT_TIMEOUT": "0.5"}
    with running_stack(root / "data", env) as s:
        wait_for(lambda: _phase(s, "sim-a") == "Ready" and _phase(s, "sim-b") == "Ready", 60, "sim clusters ready")
        yield s


def _phase(stack: Stack, cluster: str) -> str:
    return str(stack.api("GET", f"/clusters/{cluster}").json()["phase"])


def _kinds(stack: Stack, cluster: str) -> list[str]:
    return [e["kind"] for e in stack.api("GET", f"/clusters/{cluster}/events").json()]


def _token(stack: Stack, client_id: str, role: str) -> str:
    created = stack.api("POST", "/clients", json={"client_id": client_id, "roles": [role]})
    assert created.status_code == 201, created.text
    return stack.token(client_id, created.json()["secret"])


def test_a_partition_makes_the_cluster_not_ready_until_it_ends_by_itself(stack: Stack) -> None:
    operator = _token(stack, "fault-operator", "nemo-operator")
    started = stack.api("POST", "/clusters/sim-b/faults", token=operator, json={"kind": "partition", "for_s": 3})
    assert started.status_code == 201, started.text
    fault = started.json()
    assert (fault["cluster"], fault["spec"]["kind"], fault["spec"]["for_s"]) == ("sim-b", "partition", 3.0)
    assert [f["id"] for f in stack.api("GET", "/clusters/sim-b/faults").json()] == [fault["id"]]
    wait_for(lambda: _phase(stack, "sim-b") == "NotReady", 30, "sim-b NotReady while partitioned")
    wait_for(lambda: "cluster.fault_ended" in _kinds(stack, "sim-b"), 30, "the fault's end recorded")
    wait_for(lambda: _phase(stack, "sim-b") == "Ready", 30, "sim-b Ready again")
    kinds = _kinds(stack, "sim-b")
    assert kinds.count("cluster.fault_started") == kinds.count("cluster.fault_ended") == 1
    assert kinds.index("cluster.fault_started") < kinds.index("cluster.not_ready") < kinds.index("cluster.fault_ended")
    assert stack.api("GET", "/clusters/sim-b/faults").json() == []


def test_node_down_marks_the_node_not_ready(stack: Stack) -> None:
    done = stack.cli("cluster", "fault", "sim-a", "--node", "sim-a-n1", "--down", "--for", "2s", "-o", "json")
    assert '"node_down"' in done.stdout

    def ready() -> dict[str, bool]:
        return {n["spec"]["name"]: n["ready"] for n in stack.api("GET", "/clusters/sim-a/nodes").json()}

    wait_for(lambda: ready() == {"sim-a-n0": True, "sim-a-n1": False}, 30, "sim-a-n1 NotReady")
    wait_for(lambda: ready() == {"sim-a-n0": True, "sim-a-n1": True}, 30, "sim-a-n1 Ready once the fault ended")


def _fault_events(stack: Stack) -> int:
    return sum(_kinds(stack, c).count("cluster.fault_started") for c in ("sim-a", "sim-b", "local-c"))


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"kind": "down"}, {"for_s"}),
        ({"kind": "down", "for_s": 1e12}, {"for_s"}),
        ({"kind": "down", "for_s": -1}, {"for_s"}),
        ({"kind": "down", "for_s": "60"}, {"for_s"}),
        ({"kind": "fire", "for_s": 5}, {"kind"}),
        ({"kind": "slow", "slow_ms": 10**12, "for_s": 5}, {"slow_ms"}),
        ({"kind": "down", "for_s": 5, "extra": 1}, {"extra"}),
    ],
)
def test_bad_fault_parameters_are_refused_naming_the_field_and_change_nothing(
    stack: Stack, body: dict[str, Any], fields: set[str]
) -> None:
    before = _fault_events(stack)
    error = _error(stack.api("POST", "/clusters/sim-a/faults", json=body), 422, "invalid")
    assert fields <= {d["field"] for d in error["details"]}
    assert _fault_events(stack) == before


def test_unknown_cluster_or_node_is_404_a_local_cluster_409_and_nothing_is_recorded(stack: Stack) -> None:
    before = _fault_events(stack)
    _error(stack.api("POST", "/clusters/nope/faults", json={"kind": "down", "for_s": 5}), 404, "not_found")
    body = {"kind": "node_down", "node": "ghost", "for_s": 5}
    error = _error(stack.api("POST", "/clusters/sim-a/faults", json=body), 404, "not_found")
    assert error["details"] == {"kind": "node", "name": "sim-a/ghost"}
    _error(stack.api("POST", "/clusters/local-c/faults", json={"kind": "down", "for_s": 5}), 409, "unsupported")
    _error(stack.api("GET", "/clusters/nope/faults"), 404, "not_found")
    assert _fault_events(stack) == before
    assert _phase(stack, "sim-a") == "Ready"


def test_faults_need_the_operator_role(stack: Stack) -> None:
    viewer = _token(stack, "fault-viewer", "nemo-viewer")
    refused = stack.api("POST", "/clusters/sim-a/faults", token=viewer, json={"kind": "down", "for_s": 5})
    assert _error(refused, 403, "insufficient_scope")["details"] == {"required_role": "nemo-operator"}
    assert stack.api("GET", "/clusters/sim-a/faults", token=viewer).status_code == 200
    # operators inject faults, but registering or removing a cluster stays an admin's
    operator = _token(stack, "fault-operator-2", "nemo-operator")
    assert stack.api("POST", "/clusters/sim-a/cordon", token=operator).status_code == 403
    assert httpx.codes.is_success(stack.api("GET", "/clusters/sim-a/faults", token=operator).status_code)


def test_the_cli_refuses_a_fault_it_cannot_describe(stack: Stack) -> None:
    for args in (["--down", "--partition"], ["--node", "sim-a-n0"], [], ["--slow", "50", "--for", "soon"]):
        done = stack.cli("cluster", "fault", "sim-a", *args, check=False)
        assert done.returncode != 0, args
    assert _phase(stack, "sim-a") == "Ready"
