"""End to end over RabbitMQ: a third-party module joins with `nemo module keygen|register`, sends a signed and
encrypted petition that `nemo up` carries out, receives the control plane's sealed events, and is refused (dead
letter, log line, metric) once `nemo module revoke` has run."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest
import yaml

from nemo_kernel.bus import Message, ModuleIdentity, ModuleKeys, SecureBus
from nemo_kernel.bus.envelope import Envelope
from nemo_kernel.bus.identity import InMemoryKeyDirectory
from nemo_kernel.bus.rabbitmq import DEAD_REASON_HEADER, RabbitMqBus
from tests.stack import HTTP, Stack, running_stack, wait_for

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)


@pytest.fixture
def stack(tmp_path: Path, shared_vhost: str) -> Iterator[Stack]:
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    env = {"NEMO_BUS_URL": shared_vhost, "NEMO_CLUSTERS_FILE": str(clusters), "NEMO_RECONCILE_INTERVAL": "0.3"}
    with running_stack(tmp_path / "data", env) as s:
        yield s


def _orchestrator_keys(stack: Stack) -> ModuleKeys:
    # What a module learns from the directory (read access): the current public keys of the control plane.
    entry = stack.api("GET", "/modules/orchestrator").json()
    current = next(k for k in entry["keys"] if k["current"])
    return ModuleKeys.from_dict({**current, "module": "orchestrator"})


async def _dead_letter_reason(url: str, message_id: str, timeout: float = 30.0) -> str:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue("orchestrator.intake.dead", passive=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            incoming = await queue.get(fail=False)
            if incoming is None:
                await asyncio.sleep(0.1)  # poll interval of an empty queue
                continue
            await incoming.ack()
            if incoming.message_id == message_id:
                return str((incoming.headers or {}).get(DEAD_REASON_HEADER))
        raise AssertionError(f"{message_id} was not dead-lettered within {timeout}s")
    finally:
        await connection.close()


def _refused(stack: Stack, reason: str) -> float:
    for line in HTTP.get(f"{stack.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(f'nemo_bus_refused_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


async def test_third_party_module_joins_sends_a_sealed_petition_and_is_refused_once_revoked(
    stack: Stack, shared_vhost: str, tmp_path: Path
) -> None:
    identity_file, public_file = tmp_path / "acme.json", tmp_path / "acme.pub.json"
    stack.cli("module", "keygen", "acme", "--out", str(identity_file), "--public", str(public_file))
    # It declares what it reads: the control plane seals for it only events with those routing keys.
    stack.cli("module", "register", "acme", "--keys", str(public_file), "--subscribe", "cluster.registered")
    # Another module reads the petitions' outcomes.
    auditor = ModuleIdentity.generate("auditor").public().to_dict()
    assert stack.api("POST", "/modules", json={**auditor, "subscriptions": ["intent.*"]}).status_code == 201

    acme = SecureBus(
        RabbitMqBus(shared_vhost),
        ModuleIdentity.load(identity_file),
        InMemoryKeyDirectory([_orchestrator_keys(stack), ModuleKeys.from_dict(json.loads(public_file.read_text()))]),
    )
    events: list[tuple[str, Message]] = []
    tapped: list[tuple[str, list[str]]] = []  # (routing key, recipients) of each event on the exchange
    tap_connection = await aio_pika.connect(shared_vhost)  # guest: may bind '#' on this test vhost

    async def on_event(sender: str, message: Message) -> None:
        events.append((sender, message))

    async def sniff(raw: aio_pika.abc.AbstractIncomingMessage) -> None:
        if (raw.message_id or "").startswith("event-"):
            tapped.append((raw.routing_key or "", Envelope.from_bytes(raw.body).recipient_names))
        await raw.ack()

    try:
        channel = await tap_connection.channel()
        tap = await channel.declare_queue("", exclusive=True)
        await tap.bind("nemo", "#")
        await tap.consume(sniff)
        await acme.subscribe("acme.events", ["cluster.registered"], on_event)
        join = yaml.safe_dump({"numberofclusters": 1}).encode()
        await acme.publish("intent.clusters.join", join, ["orchestrator"], message_id="acme-join-1")

        clusters = await asyncio.to_thread(
            wait_for, lambda: stack.cli_json("cluster", "list"), 60, "the petition's cluster"
        )
        assert [c["spec"]["name"] for c in clusters] == ["managed-1"]
        # The control plane's events reach the module sealed for it and signed by the orchestrator.
        await asyncio.to_thread(wait_for, lambda: events, 30, "the cluster.registered event")
        sender, message = events[0]
        assert sender == "orchestrator" and json.loads(message.body)["subject"] == "cluster/managed-1"
        accepted = ("intent.accepted", ["auditor"])
        await asyncio.to_thread(wait_for, lambda: accepted in tapped, 30, "the petition's outcome on the bus")
        # Each event is sealed for the modules declared for it: acme gets no copy of the petition's outcome, and
        # the control plane none of its own intent.* events (its intake took them for petitions, endlessly).
        assert {key for key, recipients in tapped if "acme" in recipients} == {"cluster.registered"}
        assert [t for t in tapped if t[0].startswith("intent.")] == [accepted]

        before = _refused(stack, "revoked_key")
        stack.cli("module", "revoke", "acme")
        await acme.publish("intent.clusters.join", join, ["orchestrator"], message_id="acme-join-2")
        assert await _dead_letter_reason(shared_vhost, "acme-join-2") == "revoked_key"
        assert _refused(stack, "revoked_key") == before + 1
        log = (stack.data_dir.parent / f"{stack.data_dir.name}-nemo-up.log").read_text()
        assert "refused message acme-join-2" in log and "revoked_key" in log
        assert "PRIVATE KEY" not in log
        assert [c["spec"]["name"] for c in stack.cli_json("cluster", "list")] == ["managed-1"]
    finally:
        await tap_connection.close()
        await acme.close()
