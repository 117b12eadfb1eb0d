"""Publishes stored events on the bus, in order, after they are committed (transactional outbox).

Events are sealed (signed by the control plane, encrypted end to end) for the modules allowed to read the event's
routing key: those with a live key whose declared subscriptions match it (:mod:`nemo_kernel.bus.subscriptions`),
the same declarations the broker's read permissions are provisioned from, the control plane itself excepted (it
wrote the event; its own subscription ``intent.#`` is for petitions, and taking its ``intent.accepted`` events
for petitions made it refuse them in an endless loop). An event no other module may read is not put on
the bus (an envelope needs a recipient); it stays in the store and the API like any other. The payload is encrypted
once and only its content key is wrapped per recipient (60 bytes each); a revoked module, or one whose subscriptions
no longer cover a key, is left out from the next batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from nemo_kernel.bus import SecureBus, encode_json
from nemo_kernel.domain import Event
from nemo_kernel.store import Database
from nemo_kernel.store import events as event_store

log = logging.getLogger(__name__)


class OutboxPublisher:
    """Sends every unpublished event to the bus under its kind as routing key; at least once, in id order."""

    def __init__(self, db: Database, bus: SecureBus, recipients: Callable[[str], Sequence[str]]) -> None:
        self._db = db
        self._bus = bus
        self._recipients = recipients

    async def publish_pending(self, batch: int = 500) -> int:
        """Publish what is waiting; returns how many events left the outbox (sent, or passed over because no module
        may read them: ``recipients(routing_key)`` names who may)."""
        pending = await asyncio.to_thread(self._fetch, batch)
        done: list[int] = []
        try:
            for event in pending:
                recipients = [m for m in self._recipients(event.kind) if m != self._bus.identity.module]
                if not recipients:
                    done.append(event.id)
                    continue
                await self._bus.publish(
                    event.kind,
                    encode_json(event.model_dump(mode="json")),
                    recipients,
                    message_id=f"event-{event.id}",
                )
                done.append(event.id)
        finally:
            if done:
                await asyncio.to_thread(self._mark, done)
        return len(done)

    def _fetch(self, batch: int) -> list[Event]:
        # A snapshot: woken by every event commit, the outbox must not queue for SQLite's write lock to read.
        with self._db.snapshot() as s:
            return event_store.unpublished(s, batch)

    def _mark(self, ids: list[int]) -> None:
        with self._db.transaction() as s:
            event_store.mark_published(s, ids)
