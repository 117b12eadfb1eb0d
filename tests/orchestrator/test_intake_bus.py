"""The Integration Component over the secure bus, and every stored state change published on it, sealed.

Petitions (``intent.#``) are carried out only when they arrive as valid envelopes from registered, non-revoked
modules; everything else is dead-lettered with a reason and counted. Events reach every module with a live key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import yaml
from prometheus_client import REGISTRY

from nemo_kernel.bus import InProcessBus, Message, ModuleIdentity, SecureBus
from nemo_kernel.bus.rabbitmq import DEAD_REASON_HEADER, RabbitMqBus
from nemo_kernel.clusters.local import LocalProvider
from nemo_kernel.config import Settings
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.store import clusters, events

INTAKE_DEAD = "orchestrator.intake.dead"


def _settings(tmp_path: Path, bus_url: str | None) -> Settings:
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    return Settings(
        data_dir=tmp_path / "data",
        clusters_file=clusters,
        reconcile_interval=0.2,
        bus_url=bus_url,
        petition_roots=[tmp_path / "root"],
    )


@pytest.fixture(params=["memory", "rabbitmq"])
async def plane(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ControlPlane]:
    """A control plane on the in-process bus, and on RabbitMQ as `NEMO_BUS_URL` selects it."""
    bus_url = request.getfixturevalue("shared_vhost") if request.param == "rabbitmq" else None
    cp = ControlPlane(_settings(tmp_path, bus_url))
    assert isinstance(cp.bus, RabbitMqBus if bus_url else InProcessBus)
    await cp.start()
    try:
        yield cp
    finally:
        await cp.stop()
        for name in ("managed-1", "managed-2"):
            await LocalProvider(cp.settings).forget(name)


def module(plane: ControlPlane, name: str, subscriptions: Sequence[str] = ()) -> SecureBus:
    """A third-party module registered in the plane's directory (reading ``subscriptions``) on the plane's bus."""
    identity = ModuleIdentity.generate(name)
    plane.directory.register(identity.public(), subscriptions=subscriptions)
    return SecureBus(plane.bus, identity, plane.directory)


async def _until(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    async def poll() -> Any:
        while not (value := await asyncio.to_thread(predicate)):
            await asyncio.sleep(0.05)
        return value

    return await asyncio.wait_for(poll(), timeout)


def _history(plane: ControlPlane, subject: str) -> list[events.Event]:
    with plane.db.transaction() as s:
        return events.history(s, subject)


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("nemo_bus_refused_total", {"reason": reason}) or 0.0


class DeadLetters:
    """The intake's dead letters, by message id: reasons as each backend records them."""

    def __init__(self, plane: ControlPlane, bus_url: str | None) -> None:
        self._plane = plane
        self._url = bus_url
        self._seen: dict[str, str] = {}

    async def reason(self, message_id: str, timeout: float = 20.0) -> str:
        async def poll() -> str:
            while message_id not in self._seen:
                await self._collect()
                if message_id not in self._seen:
                    await asyncio.sleep(0.05)
            return self._seen[message_id]

        return await asyncio.wait_for(poll(), timeout)

    async def _collect(self) -> None:
        if isinstance(self._plane.bus, InProcessBus):
            for queue, message, reason in self._plane.bus.dead_letters:
                if queue == "orchestrator.intake":
                    self._seen[message.message_id] = reason
            return
        assert self._url is not None
        connection = await aio_pika.connect(self._url)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(INTAKE_DEAD, passive=True)
            while (incoming := await queue.get(fail=False)) is not None:
                self._seen[incoming.message_id or ""] = str((incoming.headers or {}).get(DEAD_REASON_HEADER))
                await incoming.ack()
        finally:
            await connection.close()


@pytest.fixture
def dead(plane: ControlPlane) -> DeadLetters:
    return DeadLetters(plane, plane.settings.bus_url)


async def test_join_petition_from_a_registered_module_is_carried_out_once(plane: ControlPlane) -> None:
    acme, observer = module(plane, "acme"), module(plane, "observer", ["cluster.#", "intent.accepted"])
    seen: list[tuple[str, Message]] = []

    async def watch(sender: str, message: Message) -> None:
        seen.append((sender, message))

    await observer.subscribe("observer", ["cluster.#", "intent.accepted"], watch)
    body = yaml.safe_dump({"numberofclusters": 2}).encode()
    envelope = acme.seal("intent.clusters.join", body, ["orchestrator"], content_type="application/yaml")
    for _ in range(2):  # the second copy is a duplicate delivery of the same envelope
        await plane.bus.publish("intent.clusters.join", envelope.to_bytes(), message_id=envelope.message_id)

    def names() -> list[str]:
        with plane.db.transaction() as s:
            return [c.name for c in clusters.list_clusters(s)]

    assert await _until(lambda: names() == ["managed-1", "managed-2"])
    # Both clusters' state changes reach the observer after being stored, in order, signed by the orchestrator.
    await _until(lambda: sum(m.routing_key == "cluster.ready" for _, m in seen) == 2)
    assert {sender for sender, _ in seen} == {"orchestrator"}
    registered = [json.loads(m.body) for _, m in seen if m.routing_key == "cluster.registered"]
    assert [e["subject"] for e in registered] == ["cluster/managed-1", "cluster/managed-2"]
    accepted = _history(plane, f"intent/acme/{envelope.message_id}")
    assert [e.kind for e in accepted] == ["intent.accepted"] and accepted[0].data["sender"] == "acme"
    assert names() == ["managed-1", "managed-2"]


async def test_invalid_petition_is_refused_and_recorded(plane: ControlPlane, tmp_path: Path) -> None:
    acme = module(plane, "acme")
    body = yaml.safe_dump({"name": "x", "pathname": str(tmp_path / "root" / "missing.yaml")}).encode()
    message_id = await acme.publish("intent.workloads.deploy", body, ["orchestrator"], message_id="p-bad")
    found = await _until(lambda: _history(plane, f"intent/acme/{message_id}"))
    assert found[0].kind == "intent.rejected" and "does not exist" in found[0].message


async def test_bus_petitions_read_only_under_the_roots_and_never_record_a_file(
    plane: ControlPlane, tmp_path: Path
) -> None:
    acme = module(plane, "acme")
    root = tmp_path / "root"
    root.mkdir()
    (root / "shadow").write_text("root:$6$s3cr3t:19000:0:99999:7:::\n")
    (root / "svc.yaml").write_text(yaml.safe_dump({"deployment": {"command": ["sleep", "60"], "ports": []}}))

    async def petition(message_id: str, pathname: str) -> events.Event:
        body = yaml.safe_dump({"name": "svc", "pathname": pathname}).encode()
        await acme.publish("intent.workloads.deploy", body, ["orchestrator"], message_id=message_id)
        found: list[events.Event] = await _until(lambda: _history(plane, f"intent/acme/{message_id}"))
        return found[0]

    missing, existing = await petition("p-missing", "/does/not/exist"), await petition("p-passwd", "/etc/passwd")
    for refused in (missing, existing):
        assert refused.kind == "intent.rejected" and "NEMO_PETITION_ROOTS" in refused.message
        assert "root:" not in json.dumps(refused.data)
    assert missing.data["error"] == existing.data["error"]  # the same whether the file exists or not
    shadow = await petition("p-shadow", str(root / "shadow"))
    assert shadow.kind == "intent.rejected" and "not a NEMO descriptor" in shadow.message
    assert "s3cr3t" not in json.dumps(shadow.data) and "root:" not in shadow.message
    assert (await petition("p-good", str(root / "svc.yaml"))).kind == "intent.accepted"


async def test_anything_but_a_valid_envelope_from_a_live_module_is_dead_lettered(
    plane: ControlPlane, dead: DeadLetters
) -> None:
    acme, stranger = module(plane, "acme"), SecureBus(plane.bus, ModuleIdentity.generate("stranger"), plane.directory)
    join = yaml.safe_dump({"numberofclusters": 1}).encode()
    before = {r: _refused(r) for r in ("malformed", "unknown_sender", "revoked_key", "replay", "not_a_recipient")}

    await plane.bus.publish("intent.clusters.join", join, message_id="plain-1")  # plaintext
    # Sealed by a module the directory does not know (for the orchestrator's real key).
    sealed = stranger.seal("intent.clusters.join", join, ["orchestrator"], message_id="stranger-1")
    await plane.bus.publish("intent.clusters.join", sealed.to_bytes(), message_id="stranger-1")
    # Addressed to another module only.
    await acme.publish("intent.clusters.join", join, ["acme"], message_id="not-for-me-1")
    assert await dead.reason("plain-1") == "malformed"
    assert await dead.reason("stranger-1") == "unknown_sender"
    assert await dead.reason("not-for-me-1") == "not_a_recipient"

    # A valid petition, then the very same bytes again once it is handled: a replay.
    good = acme.seal("intent.clusters.join", join, ["orchestrator"], message_id="good-1")
    await plane.bus.publish("intent.clusters.join", good.to_bytes(), message_id="good-1")
    await _until(lambda: _history(plane, "intent/acme/good-1"))
    await plane.bus.publish("intent.clusters.join", good.to_bytes(), message_id="good-1")
    assert await dead.reason("good-1") == "replay"

    # Revocation through the directory takes effect on the very next message.
    plane.directory.revoke("acme")
    await acme.bus.publish(
        "intent.clusters.join",
        acme.seal("intent.clusters.join", join, ["orchestrator"], message_id="revoked-1").to_bytes(),
        message_id="revoked-1",
    )
    assert await dead.reason("revoked-1") == "revoked_key"

    for reason in before:
        assert _refused(reason) >= before[reason] + 1, reason
    for message_id in ("plain-1", "stranger-1", "not-for-me-1", "revoked-1"):
        assert _history(plane, f"intent/acme/{message_id}") == []
    with plane.db.transaction() as s:
        assert [c.name for c in clusters.list_clusters(s)] == ["managed-1"]  # only good-1 was carried out


async def test_replay_refusal_survives_a_restart(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    settings = _settings(tmp_path, None)
    first = ControlPlane(settings)
    await first.start()
    try:
        acme = module(first, "acme")
        body = yaml.safe_dump({"name": "x", "pathname": "/does/not/exist"}).encode()
        envelope = acme.seal("intent.workloads.deploy", body, ["orchestrator"], message_id="once")
        await first.bus.publish("intent.workloads.deploy", envelope.to_bytes(), message_id="once")
        await _until(lambda: _history(first, "intent/acme/once"))
    finally:
        await first.stop()

    second = ControlPlane(settings)  # a restart: same data directory and store, fresh memory
    await second.start()
    try:
        assert second.identity.key_id == first.identity.key_id  # the identity file was reused
        assert second.directory.current("acme").key_id == acme.identity.key_id
        await second.bus.publish("intent.workloads.deploy", envelope.to_bytes(), message_id="once")
        assert await DeadLetters(second, None).reason("once") == "replay"
        assert len(_history(second, "intent/acme/once")) == 1
    finally:
        await second.stop()
