"""Fixtures for bus tests: a throw-away vhost on the machine's broker, and a private node for destructive tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from nemo_kernel.bus import InProcessBus, RabbitMqBus

from .rabbit_node import PrivateRabbit


async def eventually(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Wait until ``condition()`` holds, checking every few milliseconds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


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
