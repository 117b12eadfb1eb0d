"""One ``nemo up`` per data directory: an exclusive lock held for the life of the process.

Two control planes on one data directory would share its store and its agents: the second overwrites
``endpoint.json``, and when it stops it deletes that file and stops every agent, so the CLI loses the first one.
The lock is ``flock(2)`` on ``DATA_DIR/nemo.lock``: the kernel releases it when the process ends, however it ends
(a SIGKILL leaves no stale lock), and the file records who holds it (pid and API URL) for the refusal message.
The file is never deleted: removing a lock file while another process opens it would give two holders.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

LOCK_FILE_NAME = "nemo.lock"


class DataDirectoryInUse(Exception):
    """Another process holds the data directory's lock; the message names its pid and URL."""


class DataDirectoryLock:
    """The lock of one data directory; :meth:`acquire` it before touching anything in the directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`DataDirectoryInUse` at once (never waits)."""
        # O_CLOEXEC: agents, the gateway and replicas must not inherit the lock and keep it after we are gone.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            pid = holder.get("pid", "unknown")
            url = holder.get("url") or "not serving yet"
            raise DataDirectoryInUse(
                f"another `nemo up` (pid {pid}, API {url}) is running on the data directory {self.data_dir}; "
                "use that one, or give this one another data directory (--data-dir / NEMO_DATA_DIR)"
            ) from None
        self._fd = fd
        self.record(None)

    def record(self, url: str | None) -> None:
        """Write this process's pid and API URL into the lock file, for a second ``nemo up`` to name."""
        if self._fd is None:
            raise RuntimeError("the data directory lock is not held")
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
