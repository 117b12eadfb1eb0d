"""A cluster declared with a slow, lossy link to the control plane: requests through `nemo up`'s gateway to its
replica cross the emulated link, a change of the link through the API takes effect while it runs, removing it gives
direct speed back, and a bad link is refused naming the field and changes nothing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from nemo_kernel.access.policy import ADMIN, required_role
from tests.stack import ROOT, Stack, running_stack, wait_for

pytestmark = pytest.mark.e2e

SLOW = {"latency_ms": 50, "jitter_ms": 10, "loss": 0.05}
CLUSTERS = {
    "clusters": [
        {
            "name": "edge-slow",
            "tier": "edge",
            "region": "eu-south",
            "country": "ES",
            "nodes": [{"name": "n1", "cpu": 2, "memory_mib": 2048}],
            "links": {"controlplane": SLOW},
        }
    ]
}
DEMO = {
    "name": "demo",
    "deployment": {
        "command": ["python3", "-u", "demo_service.py"],
        "working_dir": str(ROOT / "examples"),
        "replicas": 1,
        "resources": {"cpu": 0.1, "memory_mib": 32},
        "ports": [{"name": "http", "port": 8080}],
        "health": {"http_path": "/healthz", "timeout_seconds": 2.0},
    },
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("links")
    clusters = root / "clusters.yaml"
    clusters.write_text(yaml.safe_dump(CLUSTERS))
    env = {"NEMO_CLUSTERS_FILE": str(clusters), "NEMO_RECONCILE_INTERVAL": "0.3", "NEMO_HEARTBEAT_INTERVAL": "0.3"}
    with running_stack(root / "data", env) as s:
        s.cli("gateway", "expose", "demo", "--path", "/demo")
        demo = root / "demo.yaml"
        demo.write_text(yaml.safe_dump(DEMO))
        s.cli("workload", "apply", "-f", str(demo), "--wait", "--timeout", "60")
        yield s


def _round_trips(stack: Stack, n: int) -> list[float] | None:
    """``n`` requests to the replica through the gateway; None if one failed (the URL is being switched)."""
    took = []
    # one client: on this shared 2-core machine a new client per request costs more than the link under test
    with httpx.Client(trust_env=False, timeout=10) as client:
        for _ in range(n):
            started = time.monotonic()
            response = client.get(f"{stack.gateway_url}/demo/")
            if response.status_code != 200:
                return None
            took.append(time.monotonic() - started)
    return took


def _fastest_at_least(stack: Stack, seconds: float) -> list[float] | None:
    """The round trips if even the fastest took ``seconds`` (what a link's delay guarantees, whatever the load)."""
    took = _round_trips(stack, 9)
    return took if took is not None and min(took) >= seconds else None


def _fastest_below(stack: Stack, seconds: float) -> list[float] | None:
    took = _round_trips(stack, 9)
    return took if took is not None and min(took) < seconds else None


def _links(stack: Stack) -> dict[str, Any]:
    links: dict[str, Any] = stack.api("GET", "/clusters/edge-slow").json()["spec"]["links"]
    return links


def test_requests_through_the_gateway_cross_the_declared_link(stack: Stack) -> None:
    # the replica's URL goes through the agent's proxy as soon as it runs: every round trip pays both directions
    # 2 x (50 - 10) ms is the least a round trip can take; a typical one takes 2 x 50 ms
    took = wait_for(lambda: _fastest_at_least(stack, 0.080), 30, "requests through the slow link")
    assert statistics.median(took) >= 0.100, took


def test_a_bad_link_is_refused_naming_the_field_and_changes_nothing(stack: Stack) -> None:
    before = _links(stack)
    yaml_body = {"content-type": "application/yaml"}
    cases = [
        ({"controlplane": {"latency_ms": 1e9}}, "controlplane.latency_ms"),
        ({"controlplane": {"loss": 101}}, "controlplane.loss"),
        ({"controlplane": {"bandwidth_mbps": -1}}, "controlplane.bandwidth_mbps"),
        ({"edge-b": {"latency_ms": "5"}}, "edge-b.latency_ms"),
        ({"edge-slow": {}}, "edge-slow"),  # no link to itself
        ({"controlplane": {}, "edge-typo": {"latency_ms": 5}}, "edge-typo"),  # no cluster of that name
    ]
    for body, field in cases:
        refused = stack.api("PUT", "/clusters/edge-slow/links", json=body)
        assert refused.status_code == 422, refused.text
        assert [d["field"] for d in refused.json()["error"]["details"]] == [field], refused.text
    nan = stack.api("PUT", "/clusters/edge-slow/links", content="controlplane: {jitter_ms: .nan}", headers=yaml_body)
    assert nan.status_code == 422, nan.text
    assert nan.json()["error"]["details"][0]["field"] == "controlplane.jitter_ms", nan.text
    bad_peer = stack.api("PUT", "/clusters/edge-slow/links", json={"Not_A_Cluster": {}})
    assert bad_peer.status_code == 422 and "DNS label" in bad_peer.text, bad_peer.text
    assert stack.api("PUT", "/clusters/nowhere/links", json={}).status_code == 404
    assert stack.api("PUT", "/clusters/edge-slow/links", json=[]).status_code == 422
    assert required_role("PUT", "/api/v1/clusters/edge-slow/links") == ADMIN  # as every cluster change
    assert _links(stack) == before


def test_changing_the_link_takes_effect_and_removing_it_restores_direct_speed(stack: Stack) -> None:
    changed = stack.api("PUT", "/clusters/edge-slow/links", json={"controlplane": {"latency_ms": 150}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["spec"]["links"]["controlplane"]["latency_ms"] == 150
    wait_for(lambda: _fastest_at_least(stack, 0.300), 30, "the slower link to take effect")

    assert stack.api("PUT", "/clusters/edge-slow/links", json={}).status_code == 200
    # no request can be faster than 2 x 40 ms while any of the links above is emulated
    wait_for(lambda: _fastest_below(stack, 0.075), 30, "direct speed once the link is removed")
    kinds = [e["kind"] for e in stack.api("GET", "/clusters/edge-slow/events").json()]
    assert kinds.count("cluster.links_changed") == 2, kinds

    # back as declared
    assert stack.api("PUT", "/clusters/edge-slow/links", json={"controlplane": SLOW}).status_code == 200
    wait_for(lambda: _fastest_at_least(stack, 0.080), 30, "the declared link again")
