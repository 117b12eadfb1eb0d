"""The rebalancer on a real `nemo up` with two local clusters: a workload placed on the dear, coal-fired cluster
(the green one was cordoned) moves to the green one once it takes work, through a make-before-break migration,
while a client calls it through the gateway at 200 requests/s without a failed request; `nemo rebalance --dry-run`
changes nothing; a viewer may not rebalance; bad input is refused naming the field; a second apply is 409."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stack import HTTP, Stack, expect_error, running_stack, wait_for
from tests.traffic import SteadyClient

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

CLUSTERS = """
clusters:
  - name: dear
    tier: cloud
    region: eu-central
    country: PL
    prices: {cpu_hour_eur: 0.09, gib_hour_eur: 0.012}
    carbon_intensity: 662
    nodes:
      - {name: dear-n1, cpu: 4, memory_mib: 4096}
  - name: green
    tier: cloud
    region: eu-north
    country: SE
    prices: {cpu_hour_eur: 0.03, gib_hour_eur: 0.004}
    carbon_intensity: 41
    nodes:
      - {name: green-n1, cpu: 4, memory_mib: 4096}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("rebalance")
    clusters = base / "clusters.yaml"
    clusters.write_text(CLUSTERS)
    with running_stack(base / "data", {"NEMO_CLUSTERS_FILE": str(clusters)}) as started:
        for name in ("dear", "green"):
            wait_for(lambda n=name: _phase(started, n) == "Ready", 60, f"{name} Ready")
        yield started


def _phase(stack: Stack, cluster: str) -> str:
    return str(stack.api("GET", f"/clusters/{cluster}").json()["phase"])


def _token(stack: Stack, client_id: str, role: str) -> str:
    created = stack.api("POST", "/clients", json={"client_id": client_id, "roles": [role]})
    assert created.status_code == 201, created.text
    return stack.token(client_id, created.json()["secret"])


def _replica(stack: Stack, name: str) -> dict[str, Any]:
    running = [r for r in stack.api("GET", f"/workloads/{name}").json()["replicas"] if r["phase"] == "Running"]
    assert len(running) == 1, running
    return dict(running[0])


def test_a_workload_moves_to_the_greener_cheaper_cluster_while_serving(stack: Stack) -> None:
    assert stack.api("POST", "/clusters/green/cordon").status_code == 200
    deployment = {
        "command": ["python3", "-u", "demo_service.py"],
        "working_dir": str(EXAMPLES),
        "replicas": 1,
        "resources": {"cpu": 0.25, "memory_mib": 64},
        "ports": [{"name": "http", "port": 8080}],
        "health": {"http_path": "/healthz", "timeout_seconds": 1.0},
    }
    body = {"name": "web", "namespace": "default", "services": [{"Name": "web"}], "deployment": deployment}
    assert stack.api("POST", "/workloads", json=body).status_code in (200, 201)
    stack.cli("gateway", "expose", "web", "--path", "/web")
    gateway = f"{stack.gateway_url}/web/"
    wait_for(lambda: HTTP.get(gateway, timeout=5).status_code == 200, 60, "web served by the gateway")
    assert _replica(stack, "web")["cluster"] == "dear"
    assert stack.api("POST", "/clusters/green/uncordon").status_code == 200

    # A dry run shows the move and changes nothing.
    dry = stack.cli_json("rebalance", "--dry-run")
    assert dry["state"] == "planned" and [(m["from_cluster"], m["to_cluster"]) for m in dry["moves"]] == [
        ("dear", "green")
    ]
    assert _replica(stack, "web")["cluster"] == "dear"
    assert stack.api("GET", "/migrations").json() == []

    viewer = _token(stack, "rebalance-viewer", "nemo-viewer")
    expect_error(stack.api("POST", "/rebalance", token=viewer, json={"apply": True}), 403, "insufficient_scope")
    assert stack.api("GET", f"/rebalance/{dry['id']}", token=viewer).status_code == 200
    operator = _token(stack, "rebalance-operator", "nemo-operator")
    for document, field in (({"max_moves": 0}, "max_moves"), ({"max_moves": 10**9}, "max_moves")):
        refused = stack.api("POST", "/rebalance", token=operator, json=document)
        assert refused.status_code == 422 and field in refused.text, refused.text
    unknown = stack.api("POST", "/rebalance", token=operator, json={"namespaces": ["nowhere"]})
    assert unknown.status_code == 404 and "nowhere" in unknown.text

    with SteadyClient("GET", gateway) as client:
        wait_for(lambda: client.report.ok >= 100, 30, "traffic flowing")
        applied = stack.api("POST", "/rebalance", token=operator, json={"apply": True})
        assert applied.status_code == 200, applied.text
        plan = applied.json()
        assert plan["state"] == "applying" and len(plan["moves"]) == 1, plan  # a skipped move says why here
        again = expect_error(stack.api("POST", "/rebalance", token=operator, json={"apply": True}), 409,
                             "rebalance_applying")  # fmt: skip
        assert again["details"]["rebalance"] == plan["id"]

        def ended() -> dict[str, Any] | None:
            current = stack.api("GET", f"/rebalance/{plan['id']}").json()
            return current if current["state"] != "applying" else None

        done = wait_for(ended, 120, "the plan applied", interval=0.2)
        seen = client.report.ok
        wait_for(lambda: client.report.ok >= seen + 100, 30, "traffic after the move")
    report = client.report

    assert done["state"] == "applied" and done["moves"][0]["state"] == "done", done
    assert report.failed == 0, report.statuses
    assert _replica(stack, "web")["cluster"] == "green"
    kinds = [e["kind"] for e in stack.api("GET", "/workloads/web/events").json()]
    assert "migration.completed" in kinds
