"""What every descriptor, cluster spec and petition must be, whichever way it arrives (API, bus, file)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from nemo_kernel.clusters.fleet import generate_fleet
from nemo_kernel.config.defaults import load_clusters_file
from nemo_kernel.domain import (
    ClusterSpec,
    DeploymentSpec,
    TeeType,
    WorkloadDescriptor,
    derived_name,
    is_dns_label,
)
from nemo_kernel.orchestrator.intake import DeployPetition, JoinPetition

ROOT = Path(__file__).resolve().parents[2]

WORKLOAD: dict[str, Any] = {
    "name": "web",
    "namespace": "shop",
    "description": "a shop",
    "services": [
        {
            "Name": "api",
            "Properties": [{"tier": "gold"}, {"replicated": True}],
            "Microservices": [{"Name": "http", "Endpoints": ["/"]}],
        }
    ],
    "deployment": {
        "command": ["python3", "app.py"],
        "replicas": 2,
        "resources": {"cpu": 0.5, "memory_mib": 128},
        "env": {"MODE": "prod"},
        "placement": {"node_labels": {"zone": "a"}, "tiers": ["edge"]},
        "health": {"http_path": "/healthz", "timeout_seconds": 2},
    },
}

CLUSTER: dict[str, Any] = {
    "name": "edge-a",
    "tier": "edge",
    "region": "eu-south",
    "country": "ES",
    "labels": {"site": "madrid"},
    "prices": {"cpu_hour_eur": 0.02, "gib_hour_eur": 0.002},
    "carbon_intensity": 120,
    "nodes": [{"name": "n1", "cpu": 4, "memory_mib": 8192, "labels": {"zone": "a"}, "power": {"max_watts": 300}}],
}


def changed(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``document`` with the value at the dotted ``path`` (list indexes as numbers) replaced."""
    out = copy.deepcopy(document)
    *parents, last = path.split(".")
    target: Any = out
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[int(last) if isinstance(target, list) else last] = value
    return out


def refused_fields(model: type[BaseModel], document: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(document)
    return {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}


def test_valid_documents_are_accepted() -> None:
    assert WorkloadDescriptor.model_validate(WORKLOAD).deployment is not None
    assert ClusterSpec.model_validate(CLUSTER).nodes[0].cpu == 4.0


@pytest.mark.parametrize("name", ["pp\n", "pp\r\n", "\npp", "p\np", "pp\x00"])
def test_a_name_never_ends_or_contains_a_newline(name: str) -> None:
    # `$` also matches before a final newline: a name must match in full.
    assert not is_dns_label(name)
    assert "name" in refused_fields(WorkloadDescriptor, changed(WORKLOAD, "name", name))
    assert "namespace" in refused_fields(WorkloadDescriptor, changed(WORKLOAD, "namespace", name))
    assert "name" in refused_fields(ClusterSpec, changed(CLUSTER, "name", name))
    assert "nodes.0.name" in refused_fields(ClusterSpec, changed(CLUSTER, "nodes.0.name", name))
    assert "name" in refused_fields(DeployPetition, {"name": name, "pathname": "/x"})
    assert "country" in refused_fields(ClusterSpec, changed(CLUSTER, "country", "ES\n"))


_MANY = {f"k{i}": "v" for i in range(64)}
_ONE_LINE = "one line of text"


@pytest.mark.parametrize(
    ("labels", "refused"),
    [
        ({"zone": "a"}, None),
        ({"example.org/zone": "eu-1.a_b"}, None),
        ({"zone": ""}, None),
        ({"gpu": "nvidia a100"}, None),
        ({"zone\n": "a"}, _ONE_LINE),
        ({"zone": "a\n"}, _ONE_LINE),
        ({"zone": "a\rb"}, _ONE_LINE),
        ({"zone": "a\u2028"}, _ONE_LINE),
        ({"": "a"}, _ONE_LINE),
        # bounded where labels are defined, not only by the size of a request
        (_MANY, None),
        ({**_MANY, "one-more": "v"}, "at most 64 labels, not 65"),
        ({"k" * 63: "v"}, None),
        ({"k" * 64: "v"}, "a label key is at most 63 characters"),
        ({f"{'p' * 253}/{'k' * 63}": "v"}, None),  # Kubernetes' longest qualified name
        ({f"{'p' * 254}/k": "v"}, "a label key is at most 63 characters, after an optional prefix of at most 253"),
        ({"example.org/" + "k" * 64: "v"}, "a label key is at most 63 characters"),
        ({"/a": "v"}, "prefix before the '/' is not empty"),
        ({"a/": "v"}, "name after the '/' is not empty"),
        ({"a/b/c": "v"}, "at most one '/'"),
        ({"Example.org/gpu": "v"}, "prefix is a DNS subdomain"),
        ({"example.org./gpu": "v"}, "prefix is a DNS subdomain"),
        ({"node-role.kubernetes.io/control-plane": ""}, None),
        ({"zone": "v" * 253}, None),
        ({"zone": "v" * 254}, "a label value is at most 253 characters"),
    ],
)
def test_labels_are_one_line_of_text_and_bounded(labels: dict[str, str], refused: str | None) -> None:
    for document, path in (
        (CLUSTER, "labels"),
        (CLUSTER, "nodes.0.labels"),
        (WORKLOAD, "deployment.placement.node_labels"),
    ):
        candidate = changed(document, path, labels)
        model: type[BaseModel] = ClusterSpec if document is CLUSTER else WorkloadDescriptor
        if refused is None:
            model.model_validate(candidate)
            continue
        with pytest.raises(ValidationError) as caught:
            model.model_validate(candidate)
        [error] = caught.value.errors()
        assert ".".join(str(p) for p in error["loc"]).startswith(path) and refused in error["msg"], error


def test_the_shipped_clusters_examples_and_generated_fleets_stay_valid() -> None:
    # the bounds on labels (and every other check) keep what NEMO ships and generates valid
    for spec in load_clusters_file(None):
        ClusterSpec.model_validate(spec)
    workloads = [p for p in sorted((ROOT / "examples").glob("*.yaml")) if not p.name.startswith("sla-")]
    assert len(workloads) == 5, workloads
    for example in workloads:
        WorkloadDescriptor.model_validate(yaml.safe_load(example.read_text()))
    assert len(generate_fleet(50, 5, seed=3)) == 50  # validated as it is made


@pytest.mark.parametrize(
    "path",
    [
        "description",
        "services.0.Name",
        "services.0.Microservices.0.Endpoints.0",
        "deployment.command.1",
        "deployment.env.MODE",
    ],
)
def test_a_lone_surrogate_is_refused_in_every_string(path: str) -> None:
    fields = refused_fields(WorkloadDescriptor, changed(WORKLOAD, path, "x\ud800"))
    assert any(f.split(".")[0] == path.split(".")[0] for f in fields), fields


def test_a_lone_surrogate_in_keys_and_properties_is_refused() -> None:
    assert refused_fields(WorkloadDescriptor, changed(WORKLOAD, "services.0.Properties.0", {"t\udc00": "x"}))
    assert refused_fields(WorkloadDescriptor, changed(WORKLOAD, "services.0.Properties.0", {"t": "\ud800"}))
    assert refused_fields(WorkloadDescriptor, changed(WORKLOAD, "deployment.env", {"A": "\ud800"}))
    assert "region" in refused_fields(ClusterSpec, changed(CLUSTER, "region", "eu\ud800"))


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize(
    ("document", "path"),
    [
        (CLUSTER, "nodes.0.cpu"),
        (CLUSTER, "carbon_intensity"),
        (CLUSTER, "prices.cpu_hour_eur"),
        (CLUSTER, "nodes.0.power.max_watts"),
        (WORKLOAD, "deployment.resources.cpu"),
        (WORKLOAD, "deployment.health.timeout_seconds"),
        (WORKLOAD, "services.0.Properties.0.tier"),
    ],
)
def test_non_finite_numbers_are_refused(document: dict[str, Any], path: str, value: float) -> None:
    model: type[BaseModel] = ClusterSpec if document is CLUSTER else WorkloadDescriptor
    fields = refused_fields(model, changed(document, path, value))
    assert any(f.startswith(path.rsplit(".", 1)[0]) for f in fields), fields


@pytest.mark.parametrize(
    ("document", "path", "value"),
    [
        (CLUSTER, "nodes.0.cpu", 100_001),
        (CLUSTER, "nodes.0.memory_mib", 2**63),
        (CLUSTER, "nodes.0.memory_mib", 2**40 + 1),
        (CLUSTER, "carbon_intensity", 1e6),
        (CLUSTER, "prices.gib_hour_eur", 1e9),
        (CLUSTER, "nodes.0.power.max_watts", 1e12),
        (WORKLOAD, "deployment.resources.memory_mib", 2**63),
        (WORKLOAD, "deployment.resources.cpu", 1e6),
        (WORKLOAD, "deployment.replicas", 1001),
        (WORKLOAD, "deployment.health.timeout_seconds", 1e6),
        (WORKLOAD, "services.0.Properties.0.tier", 2**64),
    ],
)
def test_numbers_beyond_sane_bounds_are_refused(document: dict[str, Any], path: str, value: float) -> None:
    model: type[BaseModel] = ClusterSpec if document is CLUSTER else WorkloadDescriptor
    fields = refused_fields(model, changed(document, path, value))
    assert any(f.startswith(path.rsplit(".", 1)[0]) for f in fields), fields


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("deployment.replicas", True),
        ("deployment.replicas", 2.0),
        ("deployment.replicas", "2"),
        ("deployment.resources.memory_mib", 1000.0),
        ("deployment.stateful", 1),
        ("deployment.stateful", "yes"),
        ("name", b"web"),
        ("description", 5),
        ("deployment.command.0", b"python3"),
        ("deployment.env.MODE", 1),
    ],
)
def test_types_are_strict(path: str, value: Any) -> None:
    assert refused_fields(WorkloadDescriptor, changed(WORKLOAD, path, value))


def test_strict_types_still_read_enums_and_numbers_as_json_gives_them() -> None:
    spec = ClusterSpec.model_validate(changed(CLUSTER, "nodes.0.tee", "sev-snp"))
    assert spec.nodes[0].tee is TeeType.SEV_SNP
    assert spec.nodes[0].cpu == 4.0  # an integer is a fine float
    assert refused_fields(JoinPetition, {"numberofclusters": True}) == {"numberofclusters"}


def test_env_names_and_nul_bytes_are_refused() -> None:
    assert refused_fields(WorkloadDescriptor, changed(WORKLOAD, "deployment.env", {"A=B": "x"}))
    assert refused_fields(WorkloadDescriptor, changed(WORKLOAD, "deployment.env", {"A": "x\x00y"}))
    assert refused_fields(WorkloadDescriptor, changed(WORKLOAD, "deployment.command", ["a\x00b"]))


@pytest.mark.parametrize("tee", ["tdx", "sev-snp", "sev", "sgx", "any"])
def test_placement_tee_is_accepted_and_implies_a_tee(tee: str) -> None:
    descriptor = WorkloadDescriptor.model_validate(changed(WORKLOAD, "deployment.placement.tee", tee))
    deployment = descriptor.deployment
    assert deployment is not None and deployment.needs_tee
    expected = {t for t in TeeType if t is not TeeType.NONE} if tee == "any" else {TeeType(tee)}
    assert deployment.accepted_tees == expected


def test_placement_tee_refuses_unknown_types() -> None:
    for tee in ("none", "trustzone", True):
        assert refused_fields(WorkloadDescriptor, changed(WORKLOAD, "deployment.placement.tee", tee))
    assert DeploymentSpec(command=["x"]).accepted_tees == frozenset()


@pytest.mark.parametrize(
    ("display", "derived"),
    [
        ("Name", "name"),
        ("My Service", "my-service"),
        ("μService 1", "service-1"),
        ("Café  Olé!", "cafe-ole"),
        ("--x--", "x"),
    ],
)
def test_derived_names_are_readable_dns_labels(display: str, derived: str) -> None:
    assert derived_name(display) == derived


def test_derived_names_without_ascii_or_too_long_stay_distinct() -> None:
    for a, b in (("日本", "中国"), ("a" * 70, "a" * 71)):
        assert derived_name(a) != derived_name(b)
        assert is_dns_label(derived_name(a)) and is_dns_label(derived_name(b))
        assert derived_name(a) == derived_name(a)


def test_the_seed_descriptor_is_a_catalogue_entry_with_a_derived_id() -> None:
    document = yaml.safe_load((ROOT / "examples" / "seed-cmdt-descriptor.yaml").read_text())
    descriptor = WorkloadDescriptor.model_validate(document)

    assert (descriptor.name, descriptor.display_name) == ("name", "Name")
    assert descriptor.deployment is None and not descriptor.runnable
    (service,) = descriptor.services
    assert [m.name for m in service.microservices] == ["μService 1", "μService 2"]
    assert service.properties == [{"Property 1": "Value 1"}, {"Property 2": "Value 2"}]
    # What is stored reads back as the same descriptor, not as a new version.
    stored = descriptor.model_dump(mode="json")
    assert WorkloadDescriptor.model_validate(stored).model_dump(mode="json") == stored


@pytest.mark.parametrize("name", ["pp\n", " ", "a\u2028b", "x" * 254])
def test_a_display_name_is_one_line_of_text(name: str) -> None:
    assert "name" in refused_fields(WorkloadDescriptor, changed(WORKLOAD, "name", name))


def test_a_display_name_cannot_contradict_an_explicit_one() -> None:
    assert refused_fields(WorkloadDescriptor, {**WORKLOAD, "name": "My Shop", "display_name": "Other"})
    same = WorkloadDescriptor.model_validate({**WORKLOAD, "name": "My Shop", "display_name": "My Shop"})
    assert (same.name, same.display_name) == ("my-shop", "My Shop")


def test_a_cluster_holds_at_most_5000_nodes() -> None:
    # Every pass reads every node of every cluster: an unbounded list is a memory and CPU bomb for one admin typo.
    def cluster(nodes: int) -> dict[str, Any]:
        return {
            "name": "big",
            "tier": "edge",
            "region": "r",
            "country": "ES",
            "nodes": [{"name": f"n{i}", "cpu": 1, "memory_mib": 64} for i in range(nodes)],
        }

    assert refused_fields(ClusterSpec, cluster(5001)) == {"nodes"}
    assert ClusterSpec.model_validate(cluster(5000)).nodes[-1].name == "n4999"
