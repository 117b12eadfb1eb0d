"""Migrations on a real `nemo up`: replicas move between local clusters while a client calls them through the
gateway at 200 requests/s; stateless moves lose no request, a stateful counter keeps every acknowledged increment,
bad moves are refused, a target dying mid-transfer rolls back, and a control plane killed mid-move resumes."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stack import Stack, expect_error, wait_for
from tests.traffic import SteadyClient
from tests.two_clusters import count_of, deploy, migrate, through_gateway, two_cluster_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with two_cluster_stack(tmp_path_factory.mktemp("migrations")) as started:
        yield started


def replica_of(stack: Stack, name: str) -> dict[str, Any]:
    """The workload's one desired running replica."""
    workload = stack.api("GET", f"/workloads/{name}").json()
    running = [r for r in workload["replicas"] if r["phase"] == "Running"]
    assert len(running) >= 1, workload
    return dict(running[0])


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
    assert through_gateway(stack, "GET", "/web/").json()["replica"] == done["target_replica"]
    print(f"stateless: {report.sent} sent, 0 failed, longest gap {report.longest_gap_ms:.0f} ms")


def test_a_stateful_counter_keeps_every_increment_from_the_cloud_to_the_iot_cluster(stack: Stack) -> None:
    deploy(stack, "counter", "counter_service.py", stateful=True)
    if replica_of(stack, "counter")["cluster"] != "cloud-eu":  # placed on the IoT cluster: bring it to the cloud
        assert finished(stack, migrate(stack, "counter", {"cluster": "cloud-eu"})["id"])["phase"] == "Completed"
    acknowledged = count_of(stack, "counter")

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
    assert count_of(stack, "counter") == acknowledged + report.ok
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
    acknowledged = count_of(stack, "tally")

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
    assert count_of(stack, "tally") == acknowledged + client.report.ok
    workload = stack.api("GET", "/workloads/tally").json()
    wait_for(lambda: [r["id"] for r in stack.api("GET", "/workloads/tally").json()["replicas"]] == [source["id"]],
             30, "the target to be removed")  # fmt: skip
    assert workload["phase"] == "Running"


def test_a_control_plane_killed_mid_move_resumes_on_restart(stack: Stack) -> None:
    deploy(stack, "vault", "counter_service.py", stateful=True, env={"COUNTER_IMPORT_DELAY": "1.0"})
    source = replica_of(stack, "vault")
    for _ in range(25):
        assert through_gateway(stack, "POST", "/vault/increment").status_code == 200
    acknowledged = count_of(stack, "vault")
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
    wait_for(
        lambda: through_gateway(stack, "GET", "/vault/").status_code == 200, 30, "the gateway of the new control plane"
    )
    assert count_of(stack, "vault") == acknowledged
    assert (
        through_gateway(stack, "POST", "/vault/increment").json()["count"] == acknowledged + 1
    )  # one writer, unfrozen
