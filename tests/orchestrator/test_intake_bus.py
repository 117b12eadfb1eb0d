"""The Integration Component over the bus, and every stored state change published on it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from nemo_kernel.bus import InProcessBus, Message, RabbitMqBus
from nemo_kernel.config import Settings
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.store import events, inventory


@pytest.fixture(params=["memory", "rabbitmq"])
async def plane(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ControlPlane]:
    """A control plane on the in-process bus, and on RabbitMQ as `NEMO_BUS_URL` selects it."""
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    bus_url = request.getfixturevalue("shared_vhost") if request.param == "rabbitmq" else None
    settings = Settings(data_dir=tmp_path / "data", clusters_file=clusters, reconcile_interval=0.2, bus_url=bus_url)
    cp = ControlPlane(settings)
    assert isinstance(cp.bus, RabbitMqBus if bus_url else InProcessBus)
    await cp.start()
    try:
        yield cp
    finally:
        await cp.stop()
        for name in ("managed-1", "managed-2"):
            await cp.resources._launcher.destroy(name)


async def _until(predicate, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    async def poll():  # type: ignore[no-untyped-def]
        while not (value := await asyncio.to_thread(predicate)):
            await asyncio.sleep(0.1)
        return value

    return await asyncio.wait_for(poll(), timeout)


async def test_join_petition_from_the_bus_is_idempotent(plane: ControlPlane) -> None:
    seen: list[Message] = []
    await plane.bus.subscribe("observer", ["cluster.#", "intent.accepted"], lambda m: _append(seen, m))
    body = yaml.safe_dump({"numberofclusters": 2}).encode()
    await plane.bus.publish("intent.clusters.join", body, message_id="petition-1", content_type="application/yaml")
    await plane.bus.publish("intent.clusters.join", body, message_id="petition-1")  # a redelivery

    def names() -> list[str]:
        with plane.db.transaction() as s:
            return [c.name for c in inventory.list_clusters(s)]

    assert await _until(lambda: names() == ["managed-1", "managed-2"])
    # Both clusters' state changes reach the bus after being stored, in order.
    await _until(lambda: sum(m.routing_key == "cluster.ready" for m in seen) == 2)
    registered = [json.loads(m.body) for m in seen if m.routing_key == "cluster.registered"]
    assert [e["subject"] for e in registered] == ["cluster/managed-1", "cluster/managed-2"]
    with plane.db.transaction() as s:
        assert [e.kind for e in events.history(s, "intent/petition-1")] == ["intent.accepted"]
    assert names() == ["managed-1", "managed-2"]


async def test_invalid_bus_petition_is_refused_and_recorded(plane: ControlPlane) -> None:
    await plane.bus.publish("intent.workloads.deploy", b"name: x\npathname: /does/not/exist", message_id="p-bad")

    def refusal() -> list[events.Event]:
        with plane.db.transaction() as s:
            return events.history(s, "intent/p-bad")

    found = await _until(refusal)
    assert found[0].kind == "intent.rejected" and "does not exist" in found[0].message


async def _append(into: list[Message], message: Message) -> None:
    into.append(message)
