"""One control plane per store: a PostgreSQL session advisory lock held for the life of ``nemo up``.

Two ``nemo up`` on two data directories but one PostgreSQL database would each run the reconcile loop and its
own agents for the same clusters: every replica deployed twice, each plane adopting or stopping what the other
runs. The loops do not share work, so a second plane refuses to start instead, naming the first.

The lock lives on a connection of its own, in autocommit (no transaction left open): PostgreSQL releases it when
that session ends, so a ``nemo up`` killed by SIGKILL leaves no stale lock (its socket closes with it), and the
session's TCP keepalives are short so that a holder whose host vanished is let go in under a minute. The holder
names itself in its session's ``application_name`` (pid and API URL), which a refused plane reads from
``pg_stat_activity`` through ``pg_locks``. A thread checks the session every 2 s and takes the lock again when
the session ended (a PostgreSQL restart); if another plane took it in between, this one stops. On SQLite the
lease is ``store.file_lock.FileLock`` on a file beside the database (``nemo.db.lock``): the data directory's lock
covers only a database inside that directory, and two planes with their own data directories may name one file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from nemo_kernel.store.file_lock import FileLock, FileLockHeld

log = logging.getLogger(__name__)

CONTROL_PLANE_LOCK = 0x6E656D6F_706C616E
"""The advisory lock's key ("nemoplan"); advisory locks are per database, so other databases never collide."""

_NAME_LIMIT = 63  # PostgreSQL cuts application_name to NAMEDATALEN - 1 bytes

_HOLDER = text(
    "SELECT a.pid, a.application_name, host(a.client_addr) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND l.classid::bigint = :high AND l.objid::bigint = :low"
)


class StoreInUse(Exception):
    """Another control plane holds the store; the message names it."""


class StoreUnreachable(Exception):
    """The store did not answer when the lease was asked for."""


class ControlPlaneLease:
    """The lease of one store for one control plane; :meth:`acquire` it before any loop runs."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self._holder = ""
        self._connection: Connection | None = None
        self._file: FileLock | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def acquire(self, api_url: str) -> None:
        """Take the lease, naming this plane by its pid and ``api_url``, or raise :class:`StoreInUse` at once
        (never waits)."""
        if self.url.drivername.startswith("sqlite"):
            self._file = self._lock_file(api_url)
            return
        self._holder = f"nemo up pid {os.getpid()}, API {api_url}"
        self._connection = self._take()

    def _lock_file(self, api_url: str) -> FileLock | None:
        database = self.url.database
        if not database or database == ":memory:":  # a private database: nobody else can open it
            return None
        path = Path(database).resolve()
        lock = FileLock(path.with_name(f"{path.name}.lock"))
        try:
            lock.acquire()
        except FileLockHeld as held:
            pid, url = held.holder.get("pid", "unknown"), held.holder.get("url") or "not serving yet"
            raise StoreInUse(
                f"another `nemo up` (pid {pid}, API {url}) is running on the store {self._shown}; two would both "
                "deploy every workload: use that one, or give this one another database (NEMO_DATABASE_URL)"
            ) from None
        lock.record(api_url)
        return lock

    def watch(self, lost: Callable[[str], None], every: float = 2.0) -> None:
        """Check the lease every ``every`` seconds from a thread of its own, and take it again when its session
        ended (PostgreSQL restarted, or an administrator ended the session): else a second plane could start.
        If another plane took it meanwhile, ``lost`` is called once with the refusal, and this plane must stop."""
        if self._connection is None:
            return
        self._watcher = threading.Thread(target=self._watch, args=(lost, every), name="store-lease", daemon=True)
        self._watcher.start()

    def release(self) -> None:
        """Give the lease up (closing the session releases the lock; so does the end of the process)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._file is not None:
            self._file.release()
            self._file = None

    def _watch(self, lost: Callable[[str], None], every: float) -> None:
        while not self._stop.wait(every):
            connection = self._connection
            if connection is not None:
                try:
                    connection.exec_driver_sql("SELECT 1")  # the session lives, so it holds the lock
                    continue
                except DBAPIError:
                    log.warning("the store's lease session ended; taking the lease again")
                    with contextlib.suppress(DBAPIError):
                        connection.close()
                    self._connection = None
            try:
                self._connection = self._take()
                log.info("the store's lease is held again")
            except StoreUnreachable as exc:
                log.warning("%s; trying again in %g s", exc, every)
            except StoreInUse as exc:
                lost(str(exc))
                return

    def _take(self) -> Connection:
        # A bounded connect: the watcher retries on its own, and stopping `nemo up` waits for it.
        engine = create_engine(
            self.url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
        )
        try:
            connection = engine.connect()
        except OperationalError as exc:
            reason = " ".join(str(exc.orig or exc).split())  # psycopg's message spans lines; the CLI says one
            raise StoreUnreachable(f"cannot reach the store {self._shown}: {reason}") from None
        try:
            connection.execute(text("SELECT set_config('application_name', :name, false)"),
                               {"name": self._holder.encode()[:_NAME_LIMIT].decode(errors="ignore")})  # fmt: skip
            # Seconds: a holder whose host stopped answering (no FIN, no RST) loses the lock within ~25 s.
            for setting, value in (("idle", 10), ("interval", 5), ("count", 3)):
                connection.exec_driver_sql(f"SET tcp_keepalives_{setting} = {value}")
            if not connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": CONTROL_PLANE_LOCK}).scalar():
                raise StoreInUse(self._refusal(connection))
        except BaseException:
            connection.close()
            raise
        return connection

    @property
    def _shown(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def _refusal(self, connection: Connection) -> str:
        row = connection.execute(
            _HOLDER, {"high": CONTROL_PLANE_LOCK >> 32, "low": CONTROL_PLANE_LOCK & 0xFFFFFFFF}
        ).first()
        # Released between our try and this query: still refused, the next start will find the store free.
        who = "another control plane"
        if row is not None:
            name, address = row[1] or "an unnamed session", row[2] or "a local socket"
            who = f"another control plane ({name}; PostgreSQL backend {row[0]}, connected from {address})"
        return (
            f"{who} is running on the store {self._shown}; two would both deploy every workload: use that one, "
            "or give this one another database (NEMO_DATABASE_URL)"
        )
