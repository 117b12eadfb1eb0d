"""A real `nemo up` with two local clusters (cloud and IoT), and the helpers the migration and drain tests share:
deploy an example service behind the gateway, call it, move it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.stack import HTTP, Stack, running_stack, wait_for

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# A cloud cluster and an IoT cluster with an amd64 gateway box next to an arm64 board.
CLUSTERS = """
clusters:
  - name: cloud-eu
    tier: cloud
    region: eu-central
    country: DE
    nodes:
      - {name: cloud-eu-n1, architecture: amd64, cpu: 8, memory_mib: 16384, runtimes: [runc, runh]}
      - {name: cloud-eu-n2, architecture: amd64, cpu: 8, memory_mib: 16384, runtimes: [runc]}
  - name: iot-gateway
    tier: iot
    region: eu-south
    country: ES
    nodes:
      - {name: iot-gateway-n1, architecture: amd64, cpu: 2, memory_mib: 2048, runtimes: [runc]}
      - {name: iot-gateway-n2, architecture: arm64, cpu: 2, memory_mib: 2048, runtimes: [runc]}
"""
CLUSTER_NAMES = ("cloud-eu", "iot-gateway")


@contextmanager
def two_cluster_stack(base: Path) -> Iterator[Stack]:
    """`nemo up` on the two clusters of :data:`CLUSTERS`, yielded once both are Ready."""
    clusters = base / "clusters.yaml"
    clusters.write_text(CLUSTERS)
    with running_stack(base / "data", {"NEMO_CLUSTERS_FILE": str(clusters)}) as started:
        for name in CLUSTER_NAMES:
            wait_for(
                lambda n=name: started.api("GET", f"/clusters/{n}").json()["phase"] == "Ready", 60, f"{name} Ready"
            )
        yield started


def deploy(stack: Stack, name: str, service: str, *, stateful: bool, env: dict[str, str] | None = None,
           placement: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Apply one replica of an example service and expose it at /NAME on the gateway; wait until it answers."""
    deployment: dict[str, Any] = {
        "command": ["python3", "-u", service],
        "working_dir": str(EXAMPLES),
        "replicas": 1,
        "stateful": stateful,
        "resources": {"cpu": 0.25, "memory_mib": 64},
        "ports": [{"name": "http", "port": 8080}],
        "health": {"http_path": "/healthz", "timeout_seconds": 1.0},
        "env": env or {},
    }
    # Stateful ones stay on amd64, so that every move between the two clusters is possible.
    placement = placement or ({"architectures": ["amd64"]} if stateful else None)
    if placement:
        deployment["placement"] = placement
    body = {"name": name, "namespace": "default", "services": [{"Name": name}], "deployment": deployment}
    applied = stack.api("POST", "/workloads", json=body)
    assert applied.status_code in (200, 201), applied.text
    stack.cli("gateway", "expose", name, "--path", f"/{name}")
    wait_for(lambda: through_gateway(stack, "GET", f"/{name}/").status_code == 200, 60, f"{name} served by the gateway")


def through_gateway(stack: Stack, method: str, path: str) -> httpx.Response:
    """One request to the stack's gateway."""
    return HTTP.request(method, f"{stack.gateway_url}{path}", timeout=5)


def count_of(stack: Stack, name: str) -> int:
    """The count a counter service exposed at /NAME answers with."""
    return int(through_gateway(stack, "GET", f"/{name}/").json()["count"])


def migrate(stack: Stack, name: str, to: dict[str, str], **extra: Any) -> dict[str, Any]:
    """Start a migration of the workload through the API; the answer is the planned migration."""
    started = stack.api("POST", "/migrations", json={"workload": name, "to": to, **extra})
    assert started.status_code == 202, started.text
    return dict(started.json())
