"""Connecting to the store and migrating it (SQLite file by default, PostgreSQL in production)."""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from nemo_kernel.store.signals import CommitWatch, Wakeup
from nemo_kernel.store.tables import EventRow

SNAPSHOT = "nemo_snapshot"
"""Execution option of the connections :meth:`Database.snapshot` reads through."""

IN_CHUNK = 500
"""Ids per ``IN (...)`` list: well under any backend's bound on parameters (PostgreSQL's protocol allows 65,535),
so a pass that handles 100,000 rows never builds one statement over all of them."""

_T = TypeVar("_T")


def in_chunks(ids: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """``ids`` in slices of at most :data:`IN_CHUNK`, one per ``IN (...)`` query."""
    for start in range(0, len(ids), IN_CHUNK):
        yield ids[start : start + IN_CHUNK]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling begins a transaction only before the first INSERT/UPDATE/DELETE, so
    # the reads before it would see other commits and a savepoint would commit on release; _sqlite_begin begins
    # every transaction instead (SQLAlchemy's documented recipe for pysqlite).
    dbapi_connection.isolation_level = None
    # WAL lets the API read while the reconcile loop writes; foreign keys are off by default in SQLite;
    # synchronous=FULL so that a 2xx answer means the data is on disk even if the process is killed.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # A transaction that may write takes the write lock when it begins (IMMEDIATE): one that read first and then
    # wrote after another writer committed would fail at once with "database is locked", busy timeout or not,
    # because SQLite cannot move its read snapshot forward. Snapshots only read, so they begin deferred.
    snapshot = connection.get_execution_options().get(SNAPSHOT, False)
    connection.exec_driver_sql("BEGIN" if snapshot else "BEGIN IMMEDIATE")


def _refuse_flush(_session: Session, _context: Any, _instances: Any) -> None:
    raise RuntimeError("a snapshot only reads: write through Database.transaction()")


_EVENTS_FLUSHED = "nemo_events_flushed"
"""Key in ``Session.info``: this transaction flushed at least one new event."""


def _note_events(session: Session, _context: Any) -> None:
    if any(isinstance(row, EventRow) for row in session.new):
        session.info[_EVENTS_FLUSHED] = True


def _forget_events(session: Session, transaction: SessionTransaction) -> None:
    # At the end of the outermost transaction (after its after_commit hook), whether it committed or not.
    if transaction.parent is None:
        session.info.pop(_EVENTS_FLUSHED, None)


def _create_owner_only(path: Path) -> None:
    # The store holds the issuer's private signing keys and the password hashes: a new SQLite file is created
    # 0600 (SQLite gives its -wal and -shm files the same mode). An existing file keeps the mode its owner chose.
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class Database:
    """One database: an engine, sessions bound to it, and its migrations."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.drivername.startswith("postgresql") and parsed.drivername == "postgresql":
            # psycopg 3 is the driver we ship; a bare postgresql:// URL would pick psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.url = parsed
        kwargs: dict[str, Any] = {}
        if parsed.drivername.startswith("sqlite"):
            if parsed.database and parsed.database != ":memory:":
                _create_owner_only(Path(parsed.database))
            # How long a transaction waits for another's write lock (busy timeout): 10 s unless the URL says
            # (``?timeout=SECONDS``); past it the store answers "database is locked" (the API's 503).
            connect_args: dict[str, Any] = {"check_same_thread": False}
            if "timeout" not in parsed.query:
                connect_args["timeout"] = 10.0
            kwargs["connect_args"] = connect_args
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: Engine = create_engine(parsed, **kwargs)
        if parsed.drivername.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._snapshots = sessionmaker(self.engine.execution_options(**{SNAPSHOT: True}), expire_on_commit=False)
        event.listen(self._snapshots, "before_flush", _refuse_flush)
        # Loops that handle stored events (outbox, reactions, SLA acts, migrations, faults) wait on a wake-up set
        # after each commit that recorded one, instead of polling the event log.
        self._event_wakeups: weakref.WeakSet[Wakeup] = weakref.WeakSet()
        self._commit_hooks: list[Callable[[], None]] = []
        event.listen(self._sessions, "after_flush", _note_events)
        event.listen(self._sessions, "after_commit", self._signal_commit)
        event.listen(self._sessions, "after_transaction_end", _forget_events)

    @property
    def is_sqlite(self) -> bool:
        """Whether this is a SQLite database."""
        return self.url.drivername.startswith("sqlite")

    def ping(self) -> None:
        """Raise if the database does not answer a trivial query (readiness checks)."""
        with self.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error.

        On SQLite it holds the write lock from its start, so transactions that write never fail on each other
        (they wait up to the busy timeout); use :meth:`snapshot` for one that only reads.
        """
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A session that only reads, in one transaction: a consistent snapshot that waits for no writer."""
        with self._snapshots() as session:  # begins at its first query; closing it ends the transaction
            yield session

    def event_wakeup(self) -> Wakeup:
        """A new wake-up, set after every commit of this process that recorded an event (until it is dropped).

        Other processes' events do not set it: a loop waits on it with a fallback period for those."""
        wakeup = Wakeup()
        self._event_wakeups.add(wakeup)
        return wakeup

    def commit_watch(self) -> CommitWatch:
        """A cheap detector of commits by anyone, for a process that polls this store (SQLite file only)."""
        database = self.url.database
        sqlite_file = self.is_sqlite and bool(database) and database != ":memory:"
        return CommitWatch(database if sqlite_file else None)

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` after every commit of this process, in the committing thread: it must be quick, never
        raise and never use the store (it tells another process to look: ``nemo up``'s gateway)."""
        self._commit_hooks.append(hook)

    def _signal_commit(self, session: Session) -> None:
        for hook in self._commit_hooks:
            hook()
        if session.info.pop(_EVENTS_FLUSHED, False):
            for wakeup in list(self._event_wakeups):
                wakeup.set()

    def migrate(self) -> None:
        """Bring the schema to the latest Alembic revision (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(resources.files("nemo_kernel.store") / "migrations"))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
