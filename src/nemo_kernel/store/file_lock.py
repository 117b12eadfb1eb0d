"""An exclusive ``flock(2)`` on a file, held for the life of a process, with its holder recorded in the file.

The kernel releases the lock when the process ends, however it ends (a SIGKILL leaves no stale lock); the file
records who holds it (a small JSON object: pid, API URL) so that a refused process can name the holder. The file is
never deleted: removing a lock file while another process opens it would give two holders.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any


class FileLockHeld(Exception):
    """Another process holds the lock; ``holder`` is what it recorded (empty when it recorded nothing yet)."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        super().__init__(f"{path} is locked by pid {holder.get('pid', 'unknown')}")
        self.holder = holder


class FileLock:
    """The lock on one file; :meth:`acquire` it, :meth:`record` who holds it, :meth:`release` it (or exit)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and record this pid, or raise :class:`FileLockHeld` at once (never waits)."""
        # O_CLOEXEC: agents, the gateway and replicas must not inherit the lock and keep it after we are gone.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FileLockHeld(self.path, holder) from None
        self._fd = fd
        self.record(None)

    def record(self, url: str | None) -> None:
        """Write this process's pid and API URL into the lock file, for a refused process to name."""
        if self._fd is None:
            raise RuntimeError(f"the lock {self.path} is not held")
        data = json.dumps({"pid": os.getpid(), **({"url": url} if url else {})}).encode()
        # Rewritten in place: the lock belongs to this open file, and a new file put in its place would be unlocked.
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        """Give the lock up (the end of the process does too)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:  # caught between the holder's truncate and write
        return {}
    return data if isinstance(data, dict) else {}
