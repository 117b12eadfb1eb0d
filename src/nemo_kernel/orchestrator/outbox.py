"""Publishes stored events on the bus, in order, after they are committed (transactional outbox)."""

from __future__ import annotations

import asyncio
import logging

from nemo_kernel.bus import Bus, encode_json
from nemo_kernel.domain import Event
from nemo_kernel.store import Database
from nemo_kernel.store import events as event_store

log = logging.getLogger(__name__)


class OutboxPublisher:
    """Sends every unpublished event to the bus under its kind as routing key; at least once, in id order."""

    def __init__(self, db: Database, bus: Bus) -> None:
        self._db = db
        self._bus = bus

    async def publish_pending(self, batch: int = 500) -> int:
        """Publish what is waiting; returns how many events were sent."""
        pending = await asyncio.to_thread(self._fetch, batch)
        done: list[int] = []
        try:
            for event in pending:
                await self._bus.publish(
                    event.kind,
                    encode_json(event.model_dump(mode="json")),
                    message_id=f"event-{event.id}",
                )
                done.append(event.id)
        finally:
            if done:
                await asyncio.to_thread(self._mark, done)
        return len(done)

    def _fetch(self, batch: int) -> list[Event]:
        with self._db.transaction() as s:
            return event_store.unpublished(s, batch)

    def _mark(self, ids: list[int]) -> None:
        with self._db.transaction() as s:
            event_store.mark_published(s, ids)
