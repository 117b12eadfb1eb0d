"""One contract, every backend: InProcessBus (the reference) and RabbitMqBus (on a vhost of the machine's broker)."""

from __future__ import annotations

import asyncio
import collections
import uuid

import aio_pika

from nemo_kernel.bus import InProcessBus, Message
from nemo_kernel.bus.rabbitmq import DEAD_REASON_HEADER, RabbitMqBus

from .conftest import dead_letters, eventually


def _name(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


async def test_topic_routing_star_and_hash(any_bus: InProcessBus | RabbitMqBus) -> None:
    got: dict[str, list[str]] = {"q1": [], "q2": []}
    names = {"q1": _name("contract"), "q2": _name("contract")}

    async def into(key: str, message: Message) -> None:
        got[key].append(message.routing_key)

    await any_bus.subscribe(names["q1"], ["workload.*"], lambda m: into("q1", m))
    await any_bus.subscribe(names["q2"], ["#.decided", "sla.#"], lambda m: into("q2", m))
    for key in ("workload.registered", "workload.a.b", "placement.decided", "sla.violated", "sla", "other.x"):
        await any_bus.publish(key, b"{}")
    # Sentinels, published last, tell that everything routed before them has been delivered.
    await any_bus.publish("workload.zz-end", b"{}")
    await any_bus.publish("sla.zz-end", b"{}")
    await eventually(lambda: "workload.zz-end" in got["q1"] and "sla.zz-end" in got["q2"], what="sentinels")
    assert sorted(got["q1"]) == ["workload.registered", "workload.zz-end"]
    assert sorted(got["q2"]) == ["placement.decided", "sla", "sla.violated", "sla.zz-end"]


async def test_failed_handler_gets_the_message_again(any_bus: InProcessBus | RabbitMqBus) -> None:
    attempts: list[Message] = []

    async def flaky(message: Message) -> None:
        attempts.append(message)
        if len(attempts) < 3:
            raise RuntimeError("transient")

    await any_bus.subscribe(_name("contract"), ["retry.*"], flaky)
    mid = await any_bus.publish("retry.me", b'{"n":1}', message_id="m-1", headers={"trace": "t1"})
    await eventually(lambda: len(attempts) == 3, what="three attempts")
    assert mid == "m-1"
    assert [m.message_id for m in attempts] == ["m-1"] * 3
    assert [m.redelivered for m in attempts] == [False, True, True]
    assert attempts[-1].json() == {"n": 1}
    assert attempts[-1].headers["trace"] == "t1"


async def test_dead_letter_after_max_deliveries(any_bus: InProcessBus | RabbitMqBus, shared_vhost: str) -> None:
    attempts: list[str] = []
    queue = _name("contract")

    async def broken(message: Message) -> None:
        attempts.append(message.message_id)
        raise ValueError("always")

    await any_bus.subscribe(queue, ["poison.*"], broken)
    await any_bus.publish("poison.pill", b"{}", message_id="poison-1")
    if isinstance(any_bus, InProcessBus):
        await eventually(lambda: len(any_bus.dead_letters) == 1, what="dead letter")
        dead_queue, dead, reason = any_bus.dead_letters[0]
        assert (dead_queue, dead.message_id) == (queue, "poison-1")
    else:
        dead = await dead_letters(shared_vhost, queue, 1)
        assert [m.message_id for m in dead] == ["poison-1"]
        reason = str((dead[0].headers or {})[DEAD_REASON_HEADER])
    assert attempts == ["poison-1"] * 3
    assert "handler failed" in reason


async def test_rabbitmq_acks_out_of_order_handlers_and_nacks_exactly(shared_vhost: str) -> None:
    """Acks of one loop pass go out together (``multiple`` below the oldest open message): handlers that finish
    out of order, and failures that are nacked in between, must each be settled as themselves."""
    bus = RabbitMqBus(shared_vhost, prefetch=32)
    queue = _name("acks")
    seen: collections.Counter[int] = collections.Counter()
    handled: collections.Counter[int] = collections.Counter()

    async def handle(message: Message) -> None:
        n = int(message.body)
        seen[n] += 1
        await asyncio.sleep((n % 7) * 0.003)  # finish out of delivery order
        if n % 10 == 3 and seen[n] == 1:
            raise RuntimeError("first attempt fails")
        handled[n] += 1

    await bus.subscribe(queue, ["acks.#"], handle)
    for i in range(200):
        await bus.publish("acks.x", str(i).encode())
    await eventually(lambda: len(handled) == 200, what="all handled")
    await bus.close()  # closing settles the acks recorded so far, then unacked messages would return to the queue
    assert {n: c for n, c in seen.items() if c != 1} == {n: 2 for n in range(3, 200, 10)}
    assert set(handled.values()) == {1}

    connection = await aio_pika.connect(shared_vhost)
    try:
        channel = await connection.channel()
        left = await channel.declare_queue(queue, passive=True)
        assert left.declaration_result.message_count == 0  # every handled message was acknowledged
        await channel.queue_delete(queue)
        await channel.queue_delete(f"{queue}.dead")
    finally:
        await connection.close()


async def test_rabbitmq_consumes_again_after_a_broker_side_cancel(shared_vhost: str) -> None:
    """A broker-side ``basic.cancel`` (here: the queue is deleted under the consumer) does not end consumption."""
    bus = RabbitMqBus(shared_vhost, reconnect_interval=0.2)
    queue = _name("cancel")
    got: list[bytes] = []

    async def handle(message: Message) -> None:
        got.append(message.body)

    await bus.subscribe(queue, ["cancel.#"], handle)
    await bus.publish("cancel.x", b"1")
    await eventually(lambda: got == [b"1"], what="first message")
    connection = await aio_pika.connect(shared_vhost)
    try:
        channel = await connection.channel()
        await channel.queue_delete(queue)

        # aio-pika declares the queue and its bindings again when the channel recovers; publish until it is back.
        for _ in range(100):
            await bus.publish("cancel.x", b"2")
            await asyncio.sleep(0.2)
            if b"2" in got:
                break
        assert b"2" in got
        await channel.queue_delete(queue)
        await channel.queue_delete(f"{queue}.dead")
    finally:
        await connection.close()
        await bus.close()
