"""Wake-ups instead of polls: a loop waits for a signal that something it handles was stored, or a fallback period.

:class:`Wakeup` is set from any thread (a commit happens in a worker thread) and awaited by one loop. The store's
:meth:`~nemo_kernel.store.Database.event_wakeup` gives one that is set after every commit of this process that
recorded an event; the fallback period of the wait covers what other processes commit.

:class:`CommitWatch` tells, in microseconds, whether anyone committed to a SQLite store since it last looked
(``PRAGMA data_version`` on a connection of its own), so a process that polls another's changes (the gateway)
runs its queries only after a commit. On PostgreSQL it cannot tell, and the reader queries as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading


class Wakeup:
    """A signal set from any thread and awaited by one asyncio loop; a set before the wait is not lost."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()  # bound to the loop of the first wait (asyncio binds events lazily)

    def set(self) -> None:
        """Wake the waiting loop, or the next wait if none waits now (thread-safe)."""
        with self._lock:
            self._pending = True
            loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is left to wake
                loop.call_soon_threadsafe(self._event.set)

    async def wait(self, at_most: float) -> bool:
        """Wait until set (since the last wait returned) or ``at_most`` seconds pass; True if it was set."""
        with self._lock:
            self._loop = asyncio.get_running_loop()
            if self._pending:
                self._pending = False
                self._event.clear()
                return True
        try:
            async with asyncio.timeout(at_most):
                await self._event.wait()
        except TimeoutError:
            return False
        with self._lock:
            self._pending = False
        # A set() racing with this clear leaves its call_soon_threadsafe queued: the next wait returns at once,
        # which is one extra pass, never a lost wake-up.
        self._event.clear()
        return True


class CommitWatch:
    """A token that changes whenever anything is committed to a SQLite database, for a polling reader."""

    def __init__(self, path: str | None) -> None:
        """``path`` is the SQLite file; None (PostgreSQL, an in-memory database) makes :meth:`look` answer None."""
        self._connection: sqlite3.Connection | None = None
        if path is not None:
            # timeout=0: a look never waits for a lock; a failed look answers None and the caller's query waits.
            self._connection = sqlite3.connect(path, timeout=0, check_same_thread=False)

    def look(self) -> int | None:
        """The database's commit counter as this watch sees it, in microseconds; None when it cannot tell.

        ``PRAGMA data_version`` changes when another connection commits; this connection never writes, so every
        commit counts, this process's own included. A reader keeps the token of its last successful read and reads
        again only when the token differs or is None."""
        if self._connection is None:
            return None
        try:
            row = self._connection.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:
            return None
        return int(row[0])

    def close(self) -> None:
        """Close the watch's connection."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class IdleSkip:
    """Whether a store-polling loop's next pass may be skipped: it was not woken, and nothing was committed to the
    store (:class:`CommitWatch`) since its last pass found nothing to do. When the watch cannot tell (PostgreSQL),
    never. Every commit counts, not only those the loop reads: a skip is safe, a pass in vain only costs one."""

    def __init__(self, watch: CommitWatch) -> None:
        """``watch`` is the loop's own (it is closed with this)."""
        self._watch = watch
        self._looked: int | None = None  # the counter before the pass under way
        self._idle_at: int | None = None  # the counter before the last pass that found nothing to do

    def needed(self, woken: bool) -> bool:
        """Call before each pass; False: skip it (``woken``: the loop's wake-up was set, or a timed act is due)."""
        self._looked = self._watch.look()  # before the pass: a commit during it is seen by the next look
        return woken or self._looked is None or self._looked != self._idle_at

    def done(self, idle: bool) -> None:
        """Call after each pass that ran: ``idle`` when it found nothing to do (and did not fail)."""
        self._idle_at = self._looked if idle else None

    def close(self) -> None:
        """Close the watch."""
        self._watch.close()
