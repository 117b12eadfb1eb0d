"""A replica that burns more CPU than it requested, on a real `nemo up`: the collector's samples show it in
`nemo top` and `nemo metrics query`, and the findings loop records one analytics.bottleneck on its workload."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.stack import Stack, running_stack, wait_for

pytestmark = pytest.mark.e2e
# The collector (issue 10, items 1-2) lands on its own branch; until it is merged nothing feeds the store in `nemo up`.
pytest.importorskip("nemo_kernel.orchestrator.collect", reason="needs the metrics collector")

CLUSTERS = {
    "clusters": [
        {
            "name": "edge-a",
            "tier": "edge",
            "region": "eu-south",
            "country": "ES",
            "nodes": [{"name": "ea-1", "cpu": 2, "memory_mib": 2048}],
        }
    ]
}
BURNER = {
    "name": "burner",
    "deployment": {
        "command": ["python3", "-c", "while True: pass"],
        "replicas": 1,
        "ports": [],
        "resources": {"cpu": 0.25, "memory_mib": 64},
    },
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("busy")
    clusters = root / "clusters.yaml"
    clusters.write_text(yaml.safe_dump(CLUSTERS))
    env = {
        "NEMO_CLUSTERS_FILE": str(clusters),
        "NEMO_RECONCILE_INTERVAL": "0.3",
        "NEMO_METRICS_INTERVAL": "1",
        "NEMO_FINDINGS_INTERVAL": "2",
        "NEMO_BOTTLENECK_FOR": "6",
    }
    with running_stack(root / "data", env) as s:
        assert s.api("POST", "/workloads", json=BURNER).status_code == 201
        wait_for(lambda: s.api("GET", "/workloads/burner").json()["phase"] == "Running", 60, "the burner running")
        yield s


def _replica(stack: Stack) -> str:
    [replica] = stack.api("GET", "/workloads/burner").json()["replicas"]
    return str(replica["id"])


def test_a_burning_replica_is_an_analytics_bottleneck(stack: Stack) -> None:
    def bottleneck() -> dict[str, Any] | None:
        found = stack.api("GET", "/workloads/burner/events").json()
        return next((e for e in found if e["kind"] == "analytics.bottleneck"), None)

    event = wait_for(bottleneck, 120, "analytics.bottleneck on the burner's workload")
    assert event["data"]["signal"] == "replica.cpu" and event["data"]["labels"]["replica"] == _replica(stack)
    assert event["data"]["ratio"] >= 0.9 and event["data"]["capacity"] == 0.25
    # Once per episode: it goes on burning, and no second event comes while it does.
    wait_for(
        lambda: stack.api("GET", "/metrics/top/workloads", params={"window": "10s"}).json()["rows"], 30, "a top row"
    )
    kinds = [e["kind"] for e in stack.api("GET", "/workloads/burner/events").json()]
    assert kinds.count("analytics.bottleneck") == 1 and "analytics.bottleneck_cleared" not in kinds


def test_nemo_top_and_metrics_query_show_it(stack: Stack) -> None:
    def busy() -> dict[str, Any] | None:
        top = json.loads(stack.cli("top", "workloads", "--once", "-o", "json", "--window", "10s").stdout)
        rows = [r for r in top["rows"] if r["workload"] == "burner" and (r["cpu_cores"] or 0) > 0.2]
        return rows[0] if rows else None

    row = wait_for(busy, 60, "the burner in nemo top", interval=1.0)
    assert row["namespace"] == "default" and row["replicas"] == 1 and row["memory_bytes"] > 0
    answer = stack.cli_json(
        "metrics", "query", 'nemo_replica_cpu_seconds_total{workload="burner"}', "-a", "rate", "-w", "10s"
    )
    [series] = answer["series"]
    assert answer["source"] == "embedded" and series["labels"]["replica"] == _replica(stack)
    assert series["labels"]["cluster"] == "edge-a" and series["points"][-1][1] > 0.2
