"""AMQP topic routing rules of the bus."""

from __future__ import annotations

import asyncio

import pytest

from nemo_kernel.bus import InProcessBus, Message
from nemo_kernel.bus.base import topic_matches


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("workload.*", "workload.registered", True),
        ("workload.*", "workload.replica.started", False),
        ("workload.#", "workload.replica.started", True),
        ("workload.#", "workload", True),
        ("#", "anything.at.all", True),
        ("*.started", "replica.started", True),
        ("*.started", "started", False),
        ("intent.#.deploy", "intent.workloads.deploy", True),
        ("intent.#.deploy", "intent.deploy", True),
        ("intent.#.deploy", "intent.workloads.join", False),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.c", False),
    ],
)
def test_topic_matching(pattern: str, key: str, matches: bool) -> None:
    assert topic_matches(pattern, key) is matches


async def test_routing_redelivery_and_dead_letter() -> None:
    bus = InProcessBus(max_deliveries=3)
    got: list[tuple[str, bool]] = []
    done = asyncio.Event()
    attempts = 0

    async def flaky(message: Message) -> None:
        nonlocal attempts
        attempts += 1
        got.append((message.routing_key, message.redelivered))
        if message.routing_key == "cluster.poison":
            if attempts >= 3:
                done.set()
            raise RuntimeError("cannot handle")

    await bus.subscribe("ops", ["cluster.*"], flaky)
    await bus.publish("workload.registered", b"{}")  # not bound: never delivered to ops
    await bus.publish("cluster.poison", b"{}")
    await asyncio.wait_for(done.wait(), 5)
    await bus.publish("cluster.ready", b"{}")
    while bus.depth("ops"):
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert got[:3] == [("cluster.poison", False), ("cluster.poison", True), ("cluster.poison", True)]
    assert [q for q, m, _ in bus.dead_letters] == ["ops"]
    await bus.close()
