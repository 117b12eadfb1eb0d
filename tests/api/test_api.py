"""The REST API over HTTP against a running `nemo up`: validation, errors, placement, petitions, cordon/drain."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.stack import Stack, running_stack, wait_for
from tests.stack import expect_error as _error

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)

CLUSTERS = {
    "clusters": [
        {
            "name": "cloud-a",
            "tier": "cloud",
            "region": "eu-central",
            "country": "DE",
            "prices": {"cpu_hour_eur": 0.05, "gib_hour_eur": 0.005},
            "carbon_intensity": 400,
            "nodes": [
                {"name": "ca-1", "cpu": 4, "memory_mib": 4096, "runtimes": ["runc", "kata-qemu-tdx"], "tee": "tdx"}
            ],
        },
        {
            "name": "edge-b",
            "tier": "edge",
            "region": "eu-south",
            "country": "ES",
            "prices": {"cpu_hour_eur": 0.02, "gib_hour_eur": 0.002},
            "carbon_intensity": 100,
            "nodes": [{"name": "eb-1", "cpu": 2, "memory_mib": 2048}],
        },
    ]
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("api")
    clusters = root / "clusters.yaml"
    clusters.write_text(yaml.safe_dump(CLUSTERS))
    # Petitions may read the tests' own temporary directories (test_petitions.py covers the refusals).
    roots = str(tmp_path_factory.getbasetemp())
    env = {"NEMO_CLUSTERS_FILE": str(clusters), "NEMO_RECONCILE_INTERVAL": "0.3", "NEMO_PETITION_ROOTS": roots}
    with running_stack(root / "data", env) as s:
        yield s


def _count(stack: Stack, path: str) -> int:
    return len(stack.api("GET", path).json())


def test_invalid_descriptor_names_fields_and_stores_nothing(stack: Stack) -> None:
    before = _count(stack, "/workloads")
    body = {
        "name": "bad",
        "services": [{"Name": "s", "Microservices": [{"Name": "m", "Endpoints": "x"}]}],
        "deployment": {"command": ["true"], "replicas": -1, "isolation": "quantum"},
    }
    error = _error(stack.api("POST", "/workloads", json=body), 422, "invalid")
    fields = {d["field"] for d in error["details"]}
    assert {"services[0].Microservices[0].Endpoints", "deployment.replicas", "deployment.isolation"} <= fields
    assert _count(stack, "/workloads") == before
    assert stack.api("GET", "/workloads/bad/events").status_code == 404


def test_malformed_body_and_missing_run_target(stack: Stack) -> None:
    _error(
        stack.api("POST", "/workloads", content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "malformed",
    )
    _error(
        stack.api("POST", "/workloads", content=b"name: [unclosed", headers={"content-type": "application/yaml"}),
        400,
        "malformed",
    )
    error = _error(stack.api("POST", "/workloads", json={"name": "x", "deployment": {"replicas": 1}}), 422, "invalid")
    assert error["details"][0]["field"] == "deployment"


def test_cluster_errors(stack: Stack) -> None:
    _error(stack.api("GET", "/clusters/nope"), 404, "not_found")
    _error(stack.api("DELETE", "/clusters/nope"), 404, "not_found")
    _error(stack.api("POST", "/clusters/nope/cordon"), 404, "not_found")
    dup = {**CLUSTERS["clusters"][1]}
    _error(stack.api("POST", "/clusters", json=dup), 409, "conflict")
    bad = {**dup, "name": "fresh", "country": "spain", "nodes": [{"name": "n", "cpu": 0, "memory_mib": 1}]}
    error = _error(stack.api("POST", "/clusters", json=bad), 422, "invalid")
    assert {d["field"] for d in error["details"]} == {"country", "nodes[0].cpu"}
    _error(stack.api("GET", "/clusters/fresh"), 404, "not_found")


def test_yaml_apply_versions_and_unchanged(stack: Stack, tmp_path: Path) -> None:
    doc = {
        "name": "sleeper",
        "namespace": "team-a",
        "deployment": {"command": ["sleep", "600"], "replicas": 1, "ports": []},
    }
    headers = {"content-type": "application/yaml"}
    first = stack.api("POST", "/workloads", content=yaml.safe_dump(doc), headers=headers)
    assert (first.status_code, first.json()["outcome"]) == (201, "created")
    same = stack.api("POST", "/workloads", content=yaml.safe_dump(doc), headers=headers)
    assert (same.status_code, same.json()["outcome"], same.json()["workload"]["version"]) == (200, "unchanged", 1)
    wait_for(
        lambda: stack.api("GET", "/workloads/sleeper", params={"namespace": "team-a"}).json()["phase"] == "Running",
        30,
        "version 1 running",
    )
    doc["deployment"]["env"] = {"MODE": "v2"}
    second = stack.api("POST", "/workloads", json=doc)
    assert (second.status_code, second.json()["outcome"], second.json()["workload"]["version"]) == (200, "updated", 2)

    def rolled_out() -> dict[str, Any] | None:
        w = stack.api("GET", "/workloads/sleeper", params={"namespace": "team-a"}).json()
        versions = {r["version"] for r in w["replicas"]}
        return w if w["phase"] == "Running" and versions == {2} else None

    wait_for(rolled_out, 30, "version 2 to replace version 1")
    kinds = [e["kind"] for e in stack.api("GET", "/workloads/sleeper/events", params={"namespace": "team-a"}).json()]
    assert "workload.updated" in kinds and "deployment.rolled_out" in kinds and "replica.removed" in kinds
    assert stack.api("DELETE", "/workloads/sleeper", params={"namespace": "team-a"}).status_code == 202


def test_constraints_pending_until_capacity_appears(stack: Stack) -> None:
    # Confidential needs a TEE node with a confidential runtime: only cloud-a qualifies, and it is in DE.
    doc = {
        "name": "secret",
        "deployment": {
            "command": ["sleep", "600"],
            "replicas": 1,
            "ports": [],
            "isolation": "confidential",
            "placement": {"countries": ["FR"]},
        },
    }
    assert stack.api("POST", "/workloads", json=doc).status_code == 201
    decision = wait_for(
        lambda: (r := stack.api("GET", "/workloads/secret/placement")).status_code == 200 and r.json(), 15, "a decision"
    )
    assert decision["outcome"] == "Pending"
    verdicts = {c["cluster"]: c for c in decision["candidates"]}
    assert verdicts["cloud-a"]["rejected_by"] == "data-residency"
    assert stack.api("GET", "/workloads/secret").json()["phase"] == "Pending"
    # Every node's verdict as things stand now, on request (not stored: the decision history is unchanged).
    history = stack.api("GET", "/workloads/secret/decisions").json()
    now = stack.api("GET", "/workloads/secret/placement/nodes").json()
    assert now["detail"] == "nodes" and now["outcome"] == "Pending"
    assert {c["cluster"]: c["rejected_by"] for c in now["candidates"]}["cloud-a"] == "data-residency"
    assert stack.api("GET", "/workloads/secret/decisions").json() == history
    missing = stack.api("GET", "/workloads/no-such/placement/nodes")
    assert missing.status_code == 404 and missing.json()["error"]["code"]
    # A French confidential cluster joins: the pending workload is placed there without being re-applied.
    fr = {
        "name": "cloud-fr",
        "tier": "cloud",
        "region": "eu-west",
        "country": "FR",
        "nodes": [{"name": "fr-1", "cpu": 2, "memory_mib": 2048, "runtimes": ["kata-qemu-snp"], "tee": "sev-snp"}],
    }
    assert stack.api("POST", "/clusters", json=fr).status_code == 201
    w = wait_for(
        lambda: (x := stack.api("GET", "/workloads/secret").json())["phase"] == "Running" and x,
        30,
        "the pending workload to be placed on the new cluster",
    )
    assert [(r["cluster"], r["node"]) for r in w["replicas"]] == [("cloud-fr", "fr-1")]
    decision = stack.api("GET", "/workloads/secret/placement").json()
    chosen = next(c for c in decision["candidates"] if c["cluster"] == "cloud-fr")
    assert chosen["runtime"] == "kata-qemu-snp" and chosen["replicas"] == 1
    nodes = stack.api("GET", "/clusters/cloud-fr/nodes").json()
    assert nodes[0]["replicas"] == 1 and nodes[0]["allocated_cpu"] == pytest.approx(0.1)
    stack.api("DELETE", "/workloads/secret")


def test_drain_moves_replicas_and_uncordon(stack: Stack) -> None:
    doc = {
        "name": "mover",
        "deployment": {
            "command": ["sleep", "600"],
            "replicas": 2,
            "ports": [],
            "placement": {"tiers": ["cloud", "edge"]},
        },
    }
    assert stack.api("POST", "/workloads", json=doc).status_code == 201
    w = wait_for(lambda: (x := stack.api("GET", "/workloads/mover").json())["phase"] == "Running" and x, 30, "mover")
    source = w["replicas"][0]["cluster"]
    assert stack.api("POST", f"/clusters/{source}/drain").json()["cordoned"] is True

    def moved() -> dict[str, Any] | None:
        x = stack.api("GET", "/workloads/mover").json()
        ok = x["phase"] == "Running" and all(r["cluster"] != source for r in x["replicas"])
        return x if ok else None

    wait_for(moved, 30, f"replicas to leave drained {source}")
    kinds = [e["kind"] for e in stack.api("GET", f"/clusters/{source}/events").json()]
    assert "cluster.draining" in kinds
    assert stack.api("POST", f"/clusters/{source}/uncordon").json()["cordoned"] is False
    stack.api("DELETE", "/workloads/mover")


def test_petitions_over_rest_join_and_deploy_from_git(stack: Stack, tmp_path: Path) -> None:
    joined = stack.api("POST", "/petitions", content=b"numberofclusters: 2", headers={"content-type": "text/yaml"})
    assert joined.status_code == 202, joined.text
    names = joined.json()["clusters"]
    assert len(names) == 2
    wait_for(
        lambda: all(stack.api("GET", f"/clusters/{n}").json()["phase"] == "Ready" for n in names),
        30,
        "managed clusters to be Ready",
    )

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "service.yaml").write_text(
        yaml.safe_dump(
            {"name": "ignored", "description": "from git", "deployment": {"command": ["sleep", "600"], "ports": []}}
        )
    )
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    petition = {"name": "service", "namespace": "default", "pathname": f"file://{repo}"}
    deployed = stack.api("POST", "/petitions", json=petition)
    assert deployed.status_code == 202, deployed.text
    assert deployed.json() == {"kind": "deploy", "workload": "default/service", "version": 1, "outcome": "created"}
    w = wait_for(lambda: (x := stack.api("GET", "/workloads/service").json())["phase"] == "Running" and x, 30, "svc")
    assert w["descriptor"]["description"] == "from git"

    bad = stack.api("POST", "/petitions", json={"name": "nothing", "pathname": f"file://{tmp_path}/missing"})
    assert "does not exist" in _error(bad, 422, "petition_refused")["message"]
    _error(stack.api("POST", "/petitions", json={"numberofclusters": 0}), 422, "invalid")
    assert stack.api("GET", "/workloads/nothing").status_code == 404
    stack.api("DELETE", "/workloads/service")


def test_replica_a_cluster_cannot_run_is_reported_not_retried(stack: Stack) -> None:
    # An image-only workload: the local driver cannot run images (Kubernetes can, once its driver lands).
    doc = {"name": "imaged", "deployment": {"image": "nginx:1.27", "replicas": 1, "ports": []}}
    assert stack.api("POST", "/workloads", json=doc).status_code == 201

    def rejected() -> list[dict[str, Any]]:
        return [e for e in stack.api("GET", "/workloads/imaged/events").json() if e["kind"] == "replica.rejected"]

    found = wait_for(rejected, 20, "the replica to be rejected")
    assert "refused the replica" in found[0]["message"]
    w = stack.api("GET", "/workloads/imaged").json()
    assert w["phase"] == "Deploying" and "refused" in w["replicas"][0]["message"]
    stack.api("DELETE", "/workloads/imaged")


def test_a_trailing_slash_is_not_redirected_to_where_the_host_header_points(stack: Stack) -> None:
    # Starlette's slash redirect built its Location from the Host header (anyone's address) and the API's own one
    # (a client behind the gateway that followed it bypassed the gateway): the path is simply not served.
    answer = stack.api("GET", "/clusters/", headers={"Host": "attacker.example"})
    assert answer.status_code == 404, answer.text
    assert "location" not in answer.headers
    assert answer.json()["error"]["code"] == "not_found"
    assert "cloud-a" in [c["name"] for c in stack.api("GET", "/clusters").json()]  # the path without it is served
