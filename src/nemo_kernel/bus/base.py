"""The bus interface: a topic exchange with named, durable queues per module (AMQP semantics).

Routing keys are dot-separated words (``workload.registered``). Binding patterns use AMQP topic rules:
``*`` matches exactly one word, ``#`` matches zero or more words.
Delivery is at least once: a handler that raises gets the message again, up to the backend's limit,
after which the message is dead-lettered. Handlers must therefore be idempotent on ``message_id``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Message:
    """A message as delivered to a handler."""

    routing_key: str
    body: bytes
    message_id: str
    timestamp: float
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    redelivered: bool = False

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


Handler = Callable[[Message], Awaitable[None]]


class Subscription(Protocol):
    """A running consumer of one queue."""

    async def cancel(self) -> None:
        """Stop consuming; messages stay in the queue if the backend keeps them."""


class Bus(Protocol):
    """What every bus backend offers (in-process now; RabbitMQ behind the same interface)."""

    async def start(self) -> None:
        """Connect (idempotent)."""

    async def close(self) -> None:
        """Stop consumers and disconnect."""

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Publish on the topic exchange; returns once the backend has accepted it. Returns the message id."""

    async def subscribe(self, queue: str, patterns: Sequence[str], handler: Handler) -> Subscription:
        """Declare ``queue`` bound to ``patterns`` and consume it with ``handler``."""


def encode_json(payload: Mapping[str, Any]) -> bytes:
    """Serialise a JSON payload the way every publisher of the project does."""
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether an AMQP topic binding ``pattern`` matches ``routing_key`` (``*`` one word, ``#`` zero or more)."""
    return _match(pattern.split("."), routing_key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    # Iterative over the pattern, recursive only on '#', whose alternatives are few in practice.
    p = 0
    w = 0
    while p < len(pattern):
        part = pattern[p]
        if part == "#":
            if p == len(pattern) - 1:
                return True
            return any(_match(pattern[p + 1 :], words[i:]) for i in range(w, len(words) + 1))
        if w >= len(words):
            return False
        if part not in ("*", words[w]):
            return False
        p += 1
        w += 1
    return w == len(words)
