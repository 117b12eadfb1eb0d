"""The control plane's record of handled bus messages, kept in ``bus_seen_messages`` so that it survives a restart.

A :class:`~nemo_kernel.bus.replay.SeenMessages` answers from memory; this gives it a ``persist`` hook and the
unexpired entries to restore at start, so replay refusal and idempotent handling hold across restarts. It lives in the
orchestrator for the same reason as the key directory: ``bus`` and ``store`` may not import each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from nemo_kernel.domain import utcnow
from nemo_kernel.store import Database
from nemo_kernel.store.tables import SeenMessageRow

#: Per dialect: its INSERT ... ON CONFLICT (the store runs on SQLite and PostgreSQL).
_INSERTS: Mapping[str, Callable[[type[SeenMessageRow]], sqlite.Insert | postgresql.Insert]] = {
    "sqlite": sqlite.insert,
    "postgresql": postgresql.insert,
}


class StoredSeenRecord:
    """The rows of one consumer (a queue name) in ``bus_seen_messages``."""

    def __init__(self, db: Database, consumer: str) -> None:
        self._db = db
        self.consumer = consumer

    def persist(self, key: str, expires_at: float) -> None:
        """Record a handled message (the ``persist`` hook of :class:`SeenMessages`).

        Written synchronously, before the message is acknowledged: a record written later could be lost in a crash
        that the broker's redelivery then turns into a second handling.
        """
        when = datetime.fromtimestamp(expires_at, UTC)
        with self._db.transaction() as s:
            # One statement, not merge's SELECT then INSERT: two writers of one key (a redelivery handled by another
            # consumer of the queue) must both succeed rather than one failing on the primary key.
            insert = _INSERTS[s.get_bind().dialect.name]
            s.execute(
                insert(SeenMessageRow)
                .values(consumer=self.consumer, message_key=key, expires_at=when)
                .on_conflict_do_update(
                    index_elements=[SeenMessageRow.consumer, SeenMessageRow.message_key], set_={"expires_at": when}
                )
            )

    def load(self) -> list[tuple[str, float]]:
        """The unexpired entries, as ``(key, expires_at)``."""
        with self._db.transaction() as s:
            rows = s.execute(
                select(SeenMessageRow.message_key, SeenMessageRow.expires_at).where(
                    SeenMessageRow.consumer == self.consumer, SeenMessageRow.expires_at > utcnow()
                )
            )
            return [(key, expires_at.timestamp()) for key, expires_at in rows]

    def prune(self) -> int:
        """Delete expired entries (of every consumer); returns how many went."""
        with self._db.transaction() as s:
            result = s.execute(delete(SeenMessageRow).where(SeenMessageRow.expires_at <= utcnow()))
            return int(getattr(result, "rowcount", 0) or 0)
