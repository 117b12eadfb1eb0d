"""Migrations on a real `nemo up`: replicas move between local clusters while a client calls them through the
gateway at 200 requests/s; stateless moves lose no request, a stateful counter keeps every acknowledged increment,
bad moves are refused, a target dying mid-transfer rolls back, and a control plane killed mid-move resumes."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stack import Stack, expect_error, running_stack, wait_for
from tests.traffic import SteadyClient

pytestmark = pytest.mark.e2e

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


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("migrations")
    clusters = base / "clusters.yaml"
    clusters.write_text(CLUSTERS)
    with running_stack(base / "data", {"NEMO_CLUSTERS_FILE": str(clusters)}) as started:
        for name in ("cloud-eu", "iot-gateway"):
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
    wait_for(lambda: _gateway(stack, "GET", f"/{name}/").status_code == 200, 60, f"{name} served by the gateway")


def _gateway(stack: Stack, method: str, path: str) -> Any:
    import httpx

    return httpx.request(method, f"{stack.gateway_url}{path}", timeout=5)


def replica_of(stack: Stack, name: str) -> dict[str, Any]:
    """The workload's one desired running replica."""
    workload = stack.api("GET", f"/workloads/{name}").json()
    running = [r for r in workload["replicas"] if r["phase"] == "Running"]
    assert len(running) >= 1, workload
    return dict(running[0])


def migrate(stack: Stack, name: str, to: dict[str, str], **extra: Any) -> dict[str, Any]:
    started = stack.api("POST", "/migrations", json={"workload": name, "to": to, **extra})
    assert started.status_code == 202, started.text
    return dict(started.json())


def finished(stack: Stack, migration_id: int, timeout: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        m = stack.api("GET", f"/migrations/{migration_id}").json()
        return m if m["phase"] in ("Completed", "Failed", "RolledBack") else None

    return wait_for(done, timeout, f"migration {migration_id} to finish", interval=0.1)


def other_cluster(cluster: str) -> str:
    return "iot-gateway" if cluster == "cloud-eu" else "cloud-eu"


def amd64_node(cluster: str) -> str:
    return f"{cluster}-n1"


def test_a_stateless_move_loses_no_request(stack: Stack) -> None:
    deploy(stack, "web", "demo_service.py", stateful=False)
    source = replica_of(stack, "web")
    target = other_cluster(source["cluster"])

    with SteadyClient("GET", f"{stack.gateway_url}/web/") as client:
        wait_for(lambda: client.report.ok >= 100, 30, "traffic flowing")
        migration = migrate(stack, "web", {"cluster": target})
        assert migration["mode"] == "stateless" and migration["phase"] == "Planned"
        done = finished(stack, migration["id"])
        seen = client.report.ok
        wait_for(lambda: client.report.ok >= seen + 100, 30, "traffic after the move")
    report = client.report

    assert done["phase"] == "Completed", done
    assert [t["phase"] for t in done["timings"]] == ["Planned", "Preparing", "Switching", "Cleaning"]
    assert report.failed == 0, report.statuses
    now = replica_of(stack, "web")
    assert now["cluster"] == target and now["id"] == done["target_replica"]
    assert _gateway(stack, "GET", "/web/").json()["replica"] == done["target_replica"]
    print(f"stateless: {report.sent} sent, 0 failed, longest gap {report.longest_gap_ms:.0f} ms")


def _count(stack: Stack, name: str) -> int:
    return int(_gateway(stack, "GET", f"/{name}/").json()["count"])


def test_a_stateful_counter_keeps_every_increment_from_the_cloud_to_the_iot_cluster(stack: Stack) -> None:
    deploy(stack, "counter", "counter_service.py", stateful=True)
    if replica_of(stack, "counter")["cluster"] != "cloud-eu":  # placed on the IoT cluster: bring it to the cloud
        assert finished(stack, migrate(stack, "counter", {"cluster": "cloud-eu"})["id"])["phase"] == "Completed"
    acknowledged = _count(stack, "counter")

    with SteadyClient("POST", f"{stack.gateway_url}/counter/increment") as client:
        wait_for(lambda: client.report.ok >= 100, 30, "increments flowing")
        migration = migrate(stack, "counter", {"cluster": "iot-gateway", "node": "iot-gateway-n1"})
        assert migration["mode"] == "stateful"
        done = finished(stack, migration["id"])
        seen = client.report.ok
        wait_for(lambda: client.report.ok >= seen + 100, 30, "increments after the move")
    report = client.report

    assert done["phase"] == "Completed", done
    assert [t["phase"] for t in done["timings"]] == ["Planned", "Preparing", "Transferring", "Switching", "Cleaning"]
    assert replica_of(stack, "counter")["cluster"] == "iot-gateway"
    # every increment the client was told about is there, and none it was refused
    assert _count(stack, "counter") == acknowledged + report.ok
    assert set(report.statuses) <= {"200", "503"}, report.statuses
    assert done["downtime_ms"] is not None
    print(
        f"stateful: {report.sent} sent, {report.failed} refused while frozen, longest gap "
        f"{report.longest_gap_ms:.0f} ms, control plane's freeze-to-switch {done['downtime_ms']} ms"
    )


def test_recreate_stops_then_starts_and_counts_what_clients_missed(stack: Stack) -> None:
    deploy(stack, "baseline", "demo_service.py", stateful=False)
    source = replica_of(stack, "baseline")

    with SteadyClient("GET", f"{stack.gateway_url}/baseline/") as client:
        wait_for(lambda: client.report.ok >= 100, 30, "traffic flowing")
        migration = migrate(stack, "baseline", {"cluster": other_cluster(source["cluster"])}, mode="recreate")
        done = finished(stack, migration["id"])
        seen = client.report.ok
        wait_for(lambda: client.report.ok >= seen + 100, 30, "traffic after the move")

    assert done["phase"] == "Completed", done
    assert done["downtime_ms"] is not None and done["downtime_ms"] > 0
    # The seed's baseline: while nothing runs the gateway has no replica to send to.
    assert client.report.failed > 0 and "503" in client.report.statuses
    print(f"recreate: {client.report.failed} failed, longest gap {client.report.longest_gap_ms:.0f} ms")


def _client(stack: Stack, client_id: str, roles: list[str]) -> str:
    created = stack.api("POST", "/clients", json={"client_id": client_id, "roles": roles})
    assert created.status_code == 201, created.text
    return stack.token(client_id, str(created.json()["secret"]))


def test_bad_moves_are_refused_and_change_nothing(stack: Stack) -> None:
    deploy(stack, "ledger", "counter_service.py", stateful=True)
    source = replica_of(stack, "ledger")
    here, there = source["cluster"], other_cluster(source["cluster"])
    before = stack.api("GET", "/migrations").json()

    def refused(body: dict[str, Any], status: int, code: str, token: Any = None) -> dict[str, Any]:
        kwargs = {"token": token} if token is not None else {}
        return expect_error(stack.api("POST", "/migrations", json=body, **kwargs), status, code)

    # a stateful move to an arm64 node: its state may not be understood there
    error = refused({"workload": "ledger", "to": {"cluster": "iot-gateway", "node": "iot-gateway-n2"}}, 409,
                    "architecture_mismatch")  # fmt: skip
    assert error["details"] == {"field": "to", "source": "amd64", "target": "arm64"}
    # the replica's own node
    refused({"workload": "ledger", "to": {"cluster": here, "node": source["node"]}}, 422, "same_as_source")
    # unknown names, each named
    assert refused({"workload": "nope", "to": {"cluster": there}}, 404, "not_found")["details"]["kind"] == "workload"
    missing = refused({"workload": "ledger", "to": {"cluster": "mars"}}, 404, "not_found")
    assert missing["details"] == {"kind": "cluster", "name": "mars"}
    missing = refused({"workload": "ledger", "replica": "ledger-v1-0-zzzzzz", "to": {"cluster": there}}, 404,
                      "not_found")  # fmt: skip
    assert missing["details"]["kind"] == "replica"
    missing = refused({"workload": "ledger", "to": {"cluster": there, "node": "n9"}}, 404, "not_found")
    assert missing["details"] == {"kind": "node", "name": f"{there}/n9"}
    # a runtime the node lacks: the runtime filter, named
    runh = {"cluster": "iot-gateway", "node": "iot-gateway-n1", "runtime": "runh"}
    error = refused({"workload": "ledger", "to": runh}, 409, "target_refused")
    assert error["details"]["filter"] == "runtime"
    # schema: a bad mode, an extra field, a bad name
    refused({"workload": "ledger", "to": {"cluster": there}, "mode": "teleport"}, 422, "invalid")
    refused({"workload": "ledger", "to": {"cluster": there}, "speed": 9}, 422, "invalid")
    refused({"workload": "Ledger\n", "to": {"cluster": there}}, 422, "invalid")
    # a viewer may look, not move
    viewer = _client(stack, "migration-viewer", ["nemo-viewer"])
    refused({"workload": "ledger", "to": {"cluster": there}}, 403, "insufficient_scope", token=viewer)
    assert stack.api("GET", "/migrations", token=viewer).status_code == 200

    assert stack.api("GET", "/migrations").json() == before  # nothing was stored
    # an operator may; a second move of the same workload while the first runs is refused, naming the first
    operator = _client(stack, "migration-operator", ["nemo-operator"])
    first = stack.api("POST", "/migrations", json={"workload": "ledger", "to": {"cluster": there}}, token=operator)
    assert first.status_code == 202, first.text
    second = refused({"workload": "ledger", "to": {"cluster": there}}, 409, "migration_running")
    assert second["details"]["migration"] == first.json()["id"]
    assert finished(stack, first.json()["id"])["phase"] == "Completed"


def test_a_filter_refusing_an_explicit_target_is_named(stack: Stack) -> None:
    deploy(stack, "cloudonly", "demo_service.py", stateful=False, placement={"tiers": ["cloud"]})
    error = expect_error(
        stack.api("POST", "/migrations", json={"workload": "cloudonly", "to": {"cluster": "iot-gateway"}}),
        409,
        "target_refused",
    )
    assert error["details"]["filter"] == "tier" and "iot-gateway" in error["message"]


def test_a_target_killed_mid_transfer_rolls_back_with_nothing_lost(stack: Stack) -> None:
    # Each import takes a second, as a large state would: long enough to kill the target while it imports.
    deploy(stack, "tally", "counter_service.py", stateful=True, env={"COUNTER_IMPORT_DELAY": "1.0"})
    source = replica_of(stack, "tally")
    acknowledged = _count(stack, "tally")

    with SteadyClient("POST", f"{stack.gateway_url}/tally/increment") as client:
        wait_for(lambda: client.report.ok >= 100, 30, "increments flowing")
        migration = migrate(stack, "tally", {"cluster": other_cluster(source["cluster"])})

        def transferring() -> dict[str, Any] | None:
            m = stack.api("GET", f"/migrations/{migration['id']}").json()
            return m if m["phase"] in ("Transferring", "Switching") else None

        moving = wait_for(transferring, 90, "the hand-off to start", interval=0.05)
        target = next(r for r in stack.api("GET", "/workloads/tally").json()["replicas"]
                      if r["id"] == moving["target_replica"])  # fmt: skip
        os.kill(target["pid"], signal.SIGKILL)
        done = finished(stack, migration["id"])
        seen = client.report.ok
        # the source takes writes again (thawed if it was frozen)
        wait_for(lambda: client.report.ok >= seen + 100, 30, "increments after the rollback")

    assert done["phase"] == "RolledBack", done
    assert replica_of(stack, "tally")["id"] == source["id"]
    assert _count(stack, "tally") == acknowledged + client.report.ok
    workload = stack.api("GET", "/workloads/tally").json()
    wait_for(lambda: [r["id"] for r in stack.api("GET", "/workloads/tally").json()["replicas"]] == [source["id"]],
             30, "the target to be removed")  # fmt: skip
    assert workload["phase"] == "Running"


def test_a_control_plane_killed_mid_move_resumes_on_restart(stack: Stack) -> None:
    deploy(stack, "vault", "counter_service.py", stateful=True, env={"COUNTER_IMPORT_DELAY": "1.0"})
    source = replica_of(stack, "vault")
    for _ in range(25):
        assert _gateway(stack, "POST", "/vault/increment").status_code == 200
    acknowledged = _count(stack, "vault")
    migration = migrate(stack, "vault", {"cluster": other_cluster(source["cluster"])})

    def frozen() -> bool:
        return stack.api("GET", f"/migrations/{migration['id']}").json()["phase"] == "Switching"

    wait_for(frozen, 90, "the source to be frozen", interval=0.05)
    stack.stop(signal.SIGKILL)  # mid hand-off: the source is frozen, the delta not yet imported
    stack.start()

    done = finished(stack, migration["id"])
    assert done["phase"] == "Completed", done
    replicas = stack.api("GET", "/workloads/vault").json()["replicas"]
    wait_for(lambda: len(stack.api("GET", "/workloads/vault").json()["replicas"]) == 1, 30, "one replica left")
    assert replica_of(stack, "vault")["id"] == done["target_replica"], replicas
    wait_for(lambda: _gateway(stack, "GET", "/vault/").status_code == 200, 30, "the gateway of the new control plane")
    assert _count(stack, "vault") == acknowledged
    assert _gateway(stack, "POST", "/vault/increment").json()["count"] == acknowledged + 1  # one writer, unfrozen
