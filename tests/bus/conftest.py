"""Fixtures for bus tests: a throw-away vhost on the machine's broker, and a private node for destructive tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import aio_pika
import pytest

from nemo_kernel.bus import InProcessBus
from nemo_kernel.bus.rabbitmq import RabbitMqBus

from .rabbit_node import PrivateRabbit


async def eventually(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Wait until ``condition()`` holds, checking every few milliseconds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def dead_letters(url: str, queue: str, count: int) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Consume (and ack) ``queue``'s dead-letter queue on the broker at ``url`` until ``count`` messages came."""
    received: list[aio_pika.abc.AbstractIncomingMessage] = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        dead_queue = await channel.declare_queue(f"{queue}.dead", passive=True)

        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            received.append(message)
            await message.ack()

        await dead_queue.consume(keep)
        await eventually(lambda: len(received) >= count, what=f"{count} dead letter(s) in {queue}.dead")
    return received


@pytest.fixture(scope="session")
def private_rabbit() -> Iterator[PrivateRabbit]:
    """A private node (own name, ports, data dir, TLS, management), stopped and removed afterwards, even on failure."""
    node = PrivateRabbit()
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.fixture(params=["memory", "rabbitmq"])
async def any_bus(request: pytest.FixtureRequest, shared_vhost: str) -> AsyncIterator[InProcessBus | RabbitMqBus]:
    """Each backend in turn, with ``max_deliveries=3``."""
    bus: InProcessBus | RabbitMqBus
    bus = InProcessBus(max_deliveries=3) if request.param == "memory" else RabbitMqBus(shared_vhost, max_deliveries=3)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.close()
