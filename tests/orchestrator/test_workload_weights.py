"""Weights end to end, through a running `nemo up`: NEMO_WEIGHTS sets the deployment's preference, a workload's own
``placement.weights`` overrides it for that workload, and each stored decision says which weights it used."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.stack import Stack, expect_error, running_stack, wait_for

pytestmark = pytest.mark.e2e


def _cluster(name: str, cpu_hour_eur: float, carbon_intensity: float) -> dict[str, Any]:
    return {
        "name": name,
        "tier": "edge",
        "region": "eu-south",
        "country": "ES",
        "prices": {"cpu_hour_eur": cpu_hour_eur, "gib_hour_eur": 0.004},
        "carbon_intensity": carbon_intensity,
        "nodes": [{"name": f"{name}-n1", "cpu": 4, "memory_mib": 4096}],
    }


CLUSTERS = {"clusters": [_cluster("cheap", 0.01, 700), _cluster("green", 0.05, 30)]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("weights")
    clusters = root / "clusters.yaml"
    clusters.write_text(yaml.safe_dump(CLUSTERS))
    env = {"NEMO_CLUSTERS_FILE": str(clusters), "NEMO_RECONCILE_INTERVAL": "0.3", "NEMO_WEIGHTS": '{"cost": 3}'}
    with running_stack(root / "data", env) as s:
        yield s


def _workload(name: str, **placement: Any) -> dict[str, Any]:
    return {
        "name": name,
        "deployment": {"command": ["sleep", "600"], "replicas": 1, "ports": [], "placement": placement},
    }


def _decision(stack: Stack, name: str) -> dict[str, Any]:
    def placed() -> dict[str, Any] | None:
        response = stack.api("GET", f"/workloads/{name}/placement")
        return response.json() if response.status_code == 200 and response.json()["outcome"] == "Placed" else None

    return wait_for(placed, 30, f"a decision placing {name}")


def test_a_workloads_weights_override_nemo_weights(stack: Stack) -> None:
    assert stack.api("POST", "/workloads", json=_workload("by-default")).status_code == 201
    assert (
        stack.api("POST", "/workloads", json=_workload("green", weights={"carbon": 10, "cost": 0})).status_code == 201
    )

    default, green = _decision(stack, "by-default"), _decision(stack, "green")

    assert [(a["cluster"], a["node"]) for a in default["assignments"]] == [("cheap", "cheap-n1")]
    # NEMO_WEIGHTS, the criteria it leaves out at their defaults (balance and latency 1, energy 0)
    assert default["weights"] == {"cost": 3.0, "carbon": 1.0, "balance": 1.0, "latency": 1.0, "energy": 0.0}
    assert [(a["cluster"], a["node"]) for a in green["assignments"]] == [("green", "green-n1")]
    assert green["weights"] == {"cost": 0.0, "carbon": 10.0, "balance": 1.0, "latency": 1.0, "energy": 0.0}
    descriptor = stack.api("GET", "/workloads/green").json()["descriptor"]
    assert descriptor["deployment"]["placement"]["weights"] == {"carbon": 10.0, "cost": 0.0}


def test_an_unknown_criterion_is_refused_naming_it(stack: Stack) -> None:
    response = stack.api("POST", "/workloads", json=_workload("typo", weights={"carbn": 10}))

    error = expect_error(response, 422, "invalid")
    assert [d["field"] for d in error["details"]] == ["deployment.placement.weights.carbn"]
    assert stack.api("GET", "/workloads/typo").status_code == 404  # nothing stored
