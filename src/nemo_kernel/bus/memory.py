"""The in-process bus: the embedded default. Same semantics as the RabbitMQ backend, within one process."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nemo_kernel.bus.base import Handler, Message, topic_matches
from nemo_kernel.bus.errors import DeadLetter
from nemo_kernel.bus.subscriptions import ReadPermissions, check_bindings, queue_owner

log = logging.getLogger(__name__)


@dataclass
class _Queue:
    name: str
    patterns: list[str]
    messages: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    consumer: asyncio.Task[None] | None = None


class _InProcessSubscription:
    def __init__(self, bus: InProcessBus, queue: _Queue) -> None:
        self._bus = bus
        self._queue = queue

    async def cancel(self) -> None:
        task = self._queue.consumer
        self._queue.consumer = None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class InProcessBus:
    """A topic exchange with named queues in one event loop.

    A failing handler gets the message again (``redelivered=True``) up to ``max_deliveries`` times,
    then the message goes to :attr:`dead_letters`.

    With ``read_permissions`` (the module key directory), bindings follow the broker's rule: the module owning a
    queue (``<module>`` or ``<module>.<anything>``) may bind only what its declared subscriptions cover, else
    :class:`~nemo_kernel.bus.subscriptions.BindingRefused` (see :mod:`nemo_kernel.bus.subscriptions`).
    """

    def __init__(self, max_deliveries: int = 5, *, read_permissions: ReadPermissions | None = None) -> None:
        self._queues: dict[str, _Queue] = {}
        self.max_deliveries = max_deliveries
        self.read_permissions = read_permissions
        self.dead_letters: list[tuple[str, Message, str]] = []
        self.published = 0

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Cancel every consumer."""
        for queue in self._queues.values():
            await _InProcessSubscription(self, queue).cancel()

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Route a message to every queue with a matching binding."""
        message = Message(
            routing_key=routing_key,
            body=body,
            message_id=message_id or uuid.uuid4().hex,
            timestamp=time.time(),
            content_type=content_type,
            headers=dict(headers or {}),
        )
        for queue in self._queues.values():
            if any(topic_matches(p, routing_key) for p in queue.patterns):
                queue.messages.put_nowait(message)
        self.published += 1
        return message.message_id

    async def subscribe(self, queue: str, patterns: Sequence[str], handler: Handler) -> _InProcessSubscription:
        """Declare (or re-bind) ``queue`` and start consuming it; refuses bindings its module may not make."""
        if self.read_permissions is not None:
            # Checked whole before anything is declared, so a refused subscription leaves no queue behind.
            module = queue_owner(queue)
            check_bindings(module, self.read_permissions.subscriptions(module), patterns)
        q = self._queues.get(queue)
        if q is None:
            q = self._queues[queue] = _Queue(queue, list(patterns))
        else:
            q.patterns = sorted(set(q.patterns) | set(patterns))
        if q.consumer is not None:
            raise RuntimeError(f"queue {queue!r} already has a consumer")
        q.consumer = asyncio.create_task(self._consume(q, handler), name=f"bus-consumer-{queue}")
        return _InProcessSubscription(self, q)

    def depth(self, queue: str) -> int:
        """Messages waiting in ``queue``."""
        return self._queues[queue].messages.qsize()

    async def _consume(self, queue: _Queue, handler: Handler) -> None:
        while True:
            message = await queue.messages.get()
            for attempt in range(1, self.max_deliveries + 1):
                try:
                    await handler(message)
                    break
                except asyncio.CancelledError:
                    raise
                except DeadLetter as exc:
                    self.dead_letters.append((queue.name, message, exc.reason))
                    break
                except Exception as exc:
                    log.warning(
                        "handler of queue %s failed on %s (attempt %d): %s",
                        queue.name,
                        message.routing_key,
                        attempt,
                        exc,
                    )
                    message = Message(**{**message.__dict__, "redelivered": True})
            else:
                self.dead_letters.append((queue.name, message, "handler failed"))
