"""PPEF's ``notify`` and ``move`` policies end to end in-process, on SQLite and PostgreSQL: a violation's reaction
records the act pending, the SLA action runner carries it out once (a webhook POST to a real HTTP server on
loopback; a migration to the cluster the decision engine prefers for the SLO's kind) and records what happened."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.orchestrator.test_commands import FrontDoor

from nemo_kernel.domain import ClusterPhase, ClusterSpec, EventKind, ReplicaPhase, WorkloadDescriptor
from nemo_kernel.domain.addresses import AddressAllowlist
from nemo_kernel.domain.errors import ApiError
from nemo_kernel.domain.sla import SlaAction, SlaSpec, SlaState
from nemo_kernel.orchestrator.commands import SlaCommands
from nemo_kernel.orchestrator.decision import DecisionEngine
from nemo_kernel.orchestrator.reactions import load_reactions
from nemo_kernel.orchestrator.reactions_dispatcher import ReactionDispatcher
from nemo_kernel.orchestrator.sla_actions import SlaActionRunner
from nemo_kernel.store import Database, NotFound, events, slas, workloads
from nemo_kernel.store.tables import ClusterRow, MigrationRow


class Hooks:
    """A real HTTP server on loopback that records every request; ``/moved`` answers a redirect to ``/target``."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.host_headers: list[str | None] = []
        received, host_headers = self.received, self.host_headers

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append((self.path, json.loads(self.rfile.read(length) or b"{}")))
                host_headers.append(self.headers.get("Host"))
                if self.path == "/moved":
                    self.send_response(302)
                    self.send_header("Location", "/target")
                else:
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    server = Hooks()
    yield server
    server.close()


@pytest.fixture
def door(database: Database, tmp_path: Path) -> FrontDoor:
    """Three ready clusters: ``home`` (dear, dirty), ``cheap`` and ``green``."""
    door = FrontDoor(database, tmp_path)
    for name, cpu_eur, carbon in (("home", 0.5, 800.0), ("cheap", 0.001, 700.0), ("green", 0.4, 10.0)):
        door.commands.clusters.add(
            ClusterSpec.model_validate(
                {
                    "name": name,
                    "tier": "cloud",
                    "region": "eu",
                    "country": "ES",
                    "prices": {"cpu_hour_eur": cpu_eur, "gib_hour_eur": 0.01},
                    "carbon_intensity": carbon,
                    "nodes": [{"name": f"{name}-n1", "cpu": 4, "memory_mib": 4096}],
                }
            )
        )
    with database.transaction() as s:
        for row in s.scalars(select(ClusterRow)):
            row.phase = ClusterPhase.READY.value
    deployment = {"command": ["sleep", "600"], "replicas": 1, "ports": [], "resources": {"cpu": 1}}
    door.commands.workloads.apply(WorkloadDescriptor.model_validate({"name": "demo", "deployment": deployment}))
    with database.transaction() as s:
        w = workloads.get_workload(s, "default", "demo")
        w.needs_placement = False
        r = workloads.bind_replicas(s, w, [workloads.Binding(0, "home", "home-n1", "runc")], cpu=1, memory_mib=64)[0]
        r.phase = ReplicaPhase.RUNNING.value
    return door


def runner(door: FrontDoor, hosts: tuple[str, ...] = ("127.0.0.1",)) -> SlaActionRunner:
    return SlaActionRunner(
        door.db, door.commands.migrations, DecisionEngine(), webhook_hosts=hosts, webhook_timeout=5.0
    )


def violate(door: FrontDoor, policies: list[dict[str, Any]], slo_kind: str = "latency", name: str = "gold") -> None:
    """An Active SLA with ``policies`` whose only SLO goes Violated; its reactions run."""
    slo: dict[str, Any] = {"name": "slo", "kind": slo_kind, "threshold": 0.25}
    spec = SlaSpec.model_validate({"name": name, "workload": "demo", "slos": [slo], "policies": policies})
    SlaCommands(door.db, ["127.0.0.1", "localhost"]).apply(spec)
    with door.db.transaction() as s:
        row = slas.get_sla(s, "default", name)
        slas.set_sla_state(s, row, SlaState.ACTIVE, "workload deployed")
        slas.set_sla_state(s, row, SlaState.VIOLATED, "SLO slo violated", slos=["slo"])


async def react(door: FrontDoor) -> None:
    dispatcher = ReactionDispatcher(door.db, load_reactions())
    while await dispatcher.run_once():
        pass


def audit(door: FrontDoor, name: str = "gold") -> list[SlaAction]:
    with door.db.transaction() as s:
        return list(reversed(slas.list_actions(s, slas.get_sla(s, "default", name))))


async def test_a_notify_webhook_is_posted_once_with_the_slo_and_the_bus_event_stays(
    door: FrontDoor, hooks: Hooks
) -> None:
    violate(door, [{"action": "notify", "webhook": f"{hooks.url}/hook", "triggers": ["violated"]}])
    await react(door)
    assert [(a.action, a.pending) for a in audit(door)] == [("notify", True)]
    assert hooks.received == []  # the reaction itself never calls the network

    assert await runner(door).run_once() == 1
    assert await runner(door).run_once() == 0  # done once

    [(path, body)] = hooks.received
    assert path == "/hook"
    assert (body["sla"], body["namespace"], body["slo"], body["status"], body["target"]) == (
        "gold",
        "default",
        "slo",
        "Violated",
        0.25,
    )
    assert set(body) >= {"value", "predicted_at", "confidence"}
    [act] = audit(door)
    assert not act.pending and "by webhook to 127.0.0.1 (204)" in act.outcome
    with door.db.transaction() as s:
        actions = [e for e in events.history(s, "sla/default/gold") if e.kind == EventKind.SLA_ACTION]
    assert [e.data["outcome"] for e in actions][-1] == act.outcome


async def test_a_redirect_is_not_followed_and_a_dead_webhook_does_not_stop_the_others(
    door: FrontDoor, hooks: Hooks
) -> None:
    violate(door, [{"action": "notify", "webhook": "http://127.0.0.1:9/hook"}])  # discard port: nothing listens
    violate(door, [{"action": "notify", "webhook": f"{hooks.url}/moved"}], name="silver")
    await react(door)

    assert await runner(door).run_once() == 2

    assert [p for p, _ in hooks.received] == ["/moved"]  # the redirect to /target was not followed
    assert "webhook to 127.0.0.1 failed: ConnectError" in audit(door)[0].outcome
    assert "webhook to 127.0.0.1 answered 302" in audit(door, "silver")[0].outcome


async def test_a_webhook_host_not_allowed_is_refused_at_apply_and_not_sent_later(door: FrontDoor, hooks: Hooks) -> None:
    spec = SlaSpec.model_validate(
        {
            "name": "gold",
            "workload": "demo",
            "slos": [{"name": "slo", "kind": "latency", "threshold": 0.25}],
            "policies": [{"action": "notify", "webhook": "https://hooks.example.org/x"}],
        }
    )
    for hosts in ((), ("127.0.0.1",)):
        with pytest.raises(ApiError) as refused:
            SlaCommands(door.db, hosts).apply(spec)
        assert refused.value.status == 422
        [detail] = refused.value.details  # type: ignore[misc]
        assert detail["field"] == "policies[0].webhook" and "hooks.example.org" in detail["message"]
    with door.db.transaction() as s, pytest.raises(NotFound):
        slas.get_sla(s, "default", "gold")  # nothing stored
    # allowed when applied, then the admin narrowed NEMO_WEBHOOK_HOSTS: the runner does not send it
    violate(door, [{"action": "notify", "webhook": f"{hooks.url}/hook"}])
    await react(door)
    assert await runner(door, hosts=()).run_once() == 1
    assert hooks.received == []
    assert "host 127.0.0.1 is not allowed" in audit(door)[0].outcome


async def test_an_allowed_name_that_resolves_to_loopback_is_posted_only_when_the_admin_lists_the_address(
    door: FrontDoor, hooks: Hooks
) -> None:
    # DNS rebinding / SSRF: the admin allowed a name, and DNS points it at loopback (localhost always does)
    port = hooks.server.server_address[1]
    violate(door, [{"action": "notify", "webhook": f"http://localhost:{port}/hook"}])
    await react(door)
    assert await runner(door, hosts=("localhost",)).run_once() == 1
    assert hooks.received == []
    outcome = audit(door)[0].outcome
    assert "webhook not sent: host localhost resolves to 127.0.0.1 is not a global address" in outcome, outcome

    # the admin lists the loopback network too: posted to the address checked, the name kept in Host
    violate(door, [{"action": "notify", "webhook": f"http://localhost:{port}/hook"}], name="silver")
    await react(door)
    assert await runner(door, hosts=("localhost", "127.0.0.0/8")).run_once() == 1
    assert [p for p, _ in hooks.received] == ["/hook"] and hooks.host_headers == [f"localhost:{port}"]
    assert "by webhook to localhost (204)" in audit(door, "silver")[0].outcome


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1",
     "fd00:ec2::254", "fe80::1", "::ffff:127.0.0.1"],
)  # fmt: skip
def test_an_address_that_is_not_global_is_refused_unless_listed(address: str) -> None:
    assert "not a global address" in (
        AddressAllowlist.of("NEMO_WEBHOOK_HOSTS", ["hooks.example.com"]).refusal(address) or ""
    )
    listed = AddressAllowlist.of(
        "NEMO_WEBHOOK_HOSTS", ["hooks.example.com", "127.0.0.0/8", "10.0.0.0/8", "::/0", "0.0.0.0/0"]
    )
    assert listed.refusal(address) is None
    assert (
        AddressAllowlist.of("NEMO_WEBHOOK_HOSTS", []).refusal("93.184.216.34") is None
    )  # a global address needs no listing


def test_a_webhook_to_an_address_in_a_listed_network_is_accepted_at_apply(door: FrontDoor) -> None:
    def spec(url: str) -> SlaSpec:
        return SlaSpec.model_validate(
            {
                "name": "gold",
                "workload": "demo",
                "slos": [{"name": "slo", "kind": "latency", "threshold": 0.25}],
                "policies": [{"action": "notify", "webhook": url}],
            }
        )

    commands = SlaCommands(door.db, ["10.0.0.0/8"])
    with pytest.raises(ApiError) as refused:
        commands.apply(spec("http://11.0.0.1/x"))
    assert refused.value.status == 422
    result, _ = commands.apply(spec("http://10.1.2.3/x"))
    assert result.outcome == "created"


@pytest.mark.parametrize(("kind", "target"), [("cost", "cheap"), ("energy", "green")])
async def test_move_re_places_the_replica_through_migration_on_the_cluster_better_for_the_slo(
    door: FrontDoor, kind: str, target: str
) -> None:
    violate(door, [{"action": "move", "triggers": ["violated"], "cooldown": "10m"}], slo_kind=kind)
    await react(door)
    [act] = audit(door)
    assert (act.action, act.pending, act.slo) == ("move", True, "slo")

    assert await runner(door).run_once() == 1

    with door.db.transaction() as s:
        [migration] = s.scalars(select(MigrationRow)).all()
        assert (migration.source_cluster, migration.target_cluster) == ("home", target)
        assert (migration.mode, migration.requested_by) == ("stateless", "sla:default/gold")
    [act] = audit(door)
    assert not act.pending and f"to {target}" in act.outcome and f"migration {migration.id} started" in act.outcome
    # hysteresis and cooldown: the same violation again within the cooldown moves nothing more
    with door.db.transaction() as s:
        row = slas.get_sla(s, "default", "gold")
        slas.set_sla_state(s, row, SlaState.ACTIVE, "back")
        slas.set_sla_state(s, row, SlaState.VIOLATED, "SLO slo violated", slos=["slo"])
    await react(door)
    assert len(audit(door)) == 1


async def test_a_move_the_migration_service_refuses_is_recorded_not_done(door: FrontDoor) -> None:
    violate(door, [{"action": "move"}], slo_kind="cost")
    with door.db.transaction() as s:  # every other cluster cordoned: nowhere to go
        for row in s.scalars(select(ClusterRow).where(ClusterRow.name != "home")):
            row.cordoned = True
    await react(door)
    assert await runner(door).run_once() == 1
    [act] = audit(door)
    assert act.outcome.startswith("not done:"), act.outcome
    with door.db.transaction() as s:
        assert s.scalars(select(MigrationRow)).all() == []
