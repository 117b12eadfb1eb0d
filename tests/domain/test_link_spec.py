"""A cluster's emulated links (``links``): strict, finite and bounded like every field users write, refused naming
the field, and one model of a link for the domain and the drivers."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nemo_kernel import clusters
from nemo_kernel.domain import MAX_LINKS, ClusterSpec, Link


def cluster(links: Any) -> dict[str, Any]:
    return {
        "name": "edge-a",
        "tier": "edge",
        "region": "eu",
        "country": "ES",
        "nodes": [{"name": "n1", "cpu": 1, "memory_mib": 512}],
        "links": links,
    }


def test_links_are_kept_as_written_and_default_to_none() -> None:
    spec = ClusterSpec.model_validate(
        cluster({"controlplane": {"latency_ms": 50, "jitter_ms": 10, "loss": 0.05}, "cloud-1": {"bandwidth_mbps": 8}})
    )
    assert spec.links["controlplane"] == Link(latency_ms=50, jitter_ms=10, loss=0.05)
    assert spec.links["cloud-1"].bandwidth_mbps == 8
    assert spec.links["cloud-1"].latency_ms == 0
    assert spec.model_dump(mode="json")["links"]["controlplane"] == {
        "latency_ms": 50.0,
        "jitter_ms": 10.0,
        "loss": 0.05,
        "bandwidth_mbps": None,
    }
    assert ClusterSpec.model_validate({k: v for k, v in cluster({}).items() if k != "links"}).links == {}


def test_the_drivers_link_is_the_domains() -> None:
    assert clusters.Link is Link


@pytest.mark.parametrize(
    ("links", "loc", "kind"),
    [
        ({"controlplane": {"latency_ms": 1e9}}, ("links", "controlplane", "latency_ms"), "less_than_equal"),
        ({"controlplane": {"loss": 1.01}}, ("links", "controlplane", "loss"), "less_than_equal"),
        ({"controlplane": {"loss": 101}}, ("links", "controlplane", "loss"), "less_than_equal"),
        ({"controlplane": {"jitter_ms": float("nan")}}, ("links", "controlplane", "jitter_ms"), "finite_number"),
        ({"controlplane": {"latency_ms": float("inf")}}, ("links", "controlplane", "latency_ms"), "finite_number"),
        ({"controlplane": {"latency_ms": -1}}, ("links", "controlplane", "latency_ms"), "greater_than_equal"),
        ({"controlplane": {"bandwidth_mbps": 0}}, ("links", "controlplane", "bandwidth_mbps"), "greater_than"),
        ({"controlplane": {"latency_ms": "50"}}, ("links", "controlplane", "latency_ms"), "float_type"),
        ({"controlplane": {"latency_ms": True}}, ("links", "controlplane", "latency_ms"), "float_type"),
        ({"controlplane": {"delay": 5}}, ("links", "controlplane", "delay"), "extra_forbidden"),
        ({"Cloud_1": {}}, ("links",), "value_error"),
        ({"cloud-1\n": {}}, ("links",), "value_error"),
        ({"edge-a": {}}, ("links",), "value_error"),  # no link to itself
        ({f"p{i}": {} for i in range(MAX_LINKS + 1)}, ("links",), "too_long"),
        ([], ("links",), "dict_type"),
    ],
)
def test_bad_links_are_refused_naming_the_field(links: Any, loc: tuple[str, ...], kind: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ClusterSpec.model_validate(cluster(links))
    errors = refused.value.errors()
    assert [(e["loc"], e["type"]) for e in errors] == [(loc, kind)], errors
