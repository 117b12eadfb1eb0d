"""Remembering which messages were already handled: replay refusal and idempotent handling share one record."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

PersistHook = Callable[[str, float], None]


class SeenMessages:
    """Message keys seen recently, with bounded memory.

    An entry lives ``ttl`` seconds (past that, the timestamp window refuses the message anyway, so forgetting it is
    safe) and at most ``capacity`` entries are kept (the oldest go first, with a warning: a burst that large within
    the window weakens replay protection, so size ``capacity`` to rate x ttl).

    ``persist`` is called with ``(key, expires_at)`` for each new entry; give it something that survives a restart
    (ideally written in the same transaction as the handler's effect) and pass the stored entries back as ``initial``.
    """

    def __init__(
        self,
        *,
        ttl: float = 600.0,
        capacity: int = 200_000,
        persist: PersistHook | None = None,
        initial: Iterable[tuple[str, float]] = (),
    ) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._persist = persist
        self._expiry: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self.restore(initial)

    def restore(self, entries: Iterable[tuple[str, float]]) -> None:
        """Take back ``(key, expires_at)`` entries from a persistent record (expired ones are skipped)."""
        now = time.time()
        with self._lock:
            for key, expires_at in sorted(entries, key=lambda item: item[1]):
                if expires_at > now and self._expiry.get(key, 0.0) < expires_at:
                    self._expiry[key] = expires_at
            self._prune(now)

    @property
    def persistent(self) -> bool:
        """Whether :meth:`add` also writes somewhere that survives a restart (and may block on I/O)."""
        return self._persist is not None

    def __contains__(self, key: object) -> bool:
        with self._lock:
            expires_at = self._expiry.get(key) if isinstance(key, str) else None
            return expires_at is not None and expires_at > time.time()

    def __len__(self) -> int:
        return len(self._expiry)

    def add(self, key: str, timestamp: float | None = None) -> bool:
        """Record ``key`` (for a message stamped ``timestamp``); returns False if it was already there."""
        now = time.time()
        expires_at = max(timestamp if timestamp is not None else now, now) + self.ttl
        with self._lock:
            if key in self._expiry and self._expiry[key] > now:
                return False
            self._expiry[key] = expires_at
            self._expiry.move_to_end(key)
            self._prune(now)
        if self._persist is not None:
            self._persist(key, expires_at)
        return True

    def _prune(self, now: float) -> None:
        while self._expiry:
            key, expires_at = next(iter(self._expiry.items()))
            if expires_at <= now:
                self._expiry.popitem(last=False)
            elif len(self._expiry) > self.capacity:
                log.warning("seen-message record full (%d): forgetting %s before it expires", self.capacity, key)
                self._expiry.popitem(last=False)
            else:
                break
