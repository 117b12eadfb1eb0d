"""One ``nemo up`` per data directory: an exclusive lock held for the life of the process.

Two control planes on one data directory would share its store and its agents: the second overwrites
``endpoint.json``, and when it stops it deletes that file and stops every agent, so the CLI loses the first one.
The lock is ``store.file_lock.FileLock`` on ``DATA_DIR/nemo.lock`` (released by the kernel when the process ends,
however it ends; it records the holder's pid and API URL for the refusal message).
"""

from __future__ import annotations

from pathlib import Path

from nemo_kernel.store.file_lock import FileLock, FileLockHeld

LOCK_FILE_NAME = "nemo.lock"


class DataDirectoryInUse(Exception):
    """Another process holds the data directory's lock; the message names its pid and URL."""


class DataDirectoryLock:
    """The lock of one data directory; :meth:`acquire` it before touching anything in the directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._lock = FileLock(data_dir / LOCK_FILE_NAME)

    def acquire(self) -> None:
        """Take the lock, or raise :class:`DataDirectoryInUse` at once (never waits)."""
        try:
            self._lock.acquire()
        except FileLockHeld as held:
            pid = held.holder.get("pid", "unknown")
            url = held.holder.get("url") or "not serving yet"
            raise DataDirectoryInUse(
                f"another `nemo up` (pid {pid}, API {url}) is running on the data directory {self.data_dir}; "
                "use that one, or give this one another data directory (--data-dir / NEMO_DATA_DIR)"
            ) from None

    def record(self, url: str | None) -> None:
        """Write this process's pid and API URL into the lock file, for a second ``nemo up`` to name."""
        self._lock.record(url)

    def release(self) -> None:
        """Give the lock up (the end of the process does too)."""
        self._lock.release()
