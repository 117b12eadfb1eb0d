"""The directory of module public keys, kept in the store and answered from memory.

Why here: the directory is the bus's :class:`~nemo_kernel.bus.identity.KeyDirectory` protocol persisted in the
store, and ``bus`` and ``store`` may not import each other; the orchestrator is the lowest layer that may import
both, and the control plane is the one component that owns the directory (the admin API writes through it).

It also keeps each module's declared subscriptions (``bus_module_subscriptions``): the routing key patterns it reads,
which decide the recipients of events (:meth:`StoredKeyDirectory.readers`) and the bindings the in-process bus allows
(it is that bus's :class:`~nemo_kernel.bus.subscriptions.ReadPermissions`).

Freshness: lookups sit on the message path, so they never touch the database. A write through this object commits,
then reloads the snapshot before returning, so revocation takes effect in this process at once. Changes made by
another process (another control-plane replica) are picked up by :meth:`StoredKeyDirectory.keep_fresh`, which
reloads every ``reload_interval`` seconds: such a change is seen here at most ``reload_interval`` seconds (plus one
reload query) after it was committed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from nemo_kernel.bus import KeyConflict, ModuleKeys, UnknownKey
from nemo_kernel.bus.subscriptions import BUILTIN_SUBSCRIPTIONS, readers, validate_subscriptions
from nemo_kernel.domain import utcnow
from nemo_kernel.store import Database
from nemo_kernel.store.tables import ModuleKeyRow, ModuleSubscriptionsRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyRecord:
    """One stored key with what the directory knows about its life."""

    keys: ModuleKeys
    current: bool
    current_since: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class _Snapshot:
    # Replaced whole on every reload, so readers on other threads never see a half-built directory.
    records: tuple[KeyRecord, ...]
    by_id: dict[tuple[str, str], ModuleKeys]
    current: dict[str, ModuleKeys]
    subscriptions: dict[str, tuple[str, ...]]

    @classmethod
    def of(cls, rows: list[ModuleKeyRow], subscriptions: list[ModuleSubscriptionsRow]) -> _Snapshot:
        # Rows come ordered by current_since: the last live key of a module is its current one.
        current: dict[str, ModuleKeys] = {}
        loaded: list[tuple[ModuleKeyRow, ModuleKeys]] = []
        for row in rows:
            keys = ModuleKeys(
                module=row.module,
                key_id=row.key_id,
                signing_public=bytes(row.signing_public),
                encryption_public=bytes(row.encryption_public),
                revoked=row.revoked,
                created_at=row.created_at.timestamp(),
            )
            loaded.append((row, keys))
            if not row.revoked:
                current[row.module] = keys
        records = tuple(
            KeyRecord(keys, current.get(keys.module) == keys, row.current_since, row.revoked_at)
            for row, keys in sorted(loaded, key=lambda item: (item[0].module, item[0].created_at, item[0].key_id))
        )
        declared = {row.module: tuple(row.patterns) for row in subscriptions}
        return cls(records, {(k.module, k.key_id): k for _, k in loaded}, current, declared)


class StoredKeyDirectory:
    """A :class:`~nemo_kernel.bus.identity.KeyDirectory` in ``bus_module_keys``, read from an in-memory snapshot.

    Call :meth:`reload` once the store is migrated (the control plane does at start), and run :meth:`keep_fresh`
    to follow changes made by other processes.
    """

    def __init__(self, db: Database, *, reload_interval: float = 5.0) -> None:
        self._db = db
        self.reload_interval = reload_interval
        self._snapshot = _Snapshot((), {}, {}, {})
        self._write_lock = threading.RLock()  # a write holds it through its own reload

    # ---- reads: memory only ----

    def get(self, module: str, key_id: str) -> ModuleKeys:
        """One key of a module, revoked or not; raises :class:`UnknownKey`."""
        keys = self._snapshot.by_id.get((module, key_id))
        if keys is None:
            raise UnknownKey(f"no key {key_id!r} for module {module!r}")
        return keys

    def current(self, module: str) -> ModuleKeys:
        """The module's current key: its live key most recently registered or rotated to."""
        keys = self._snapshot.current.get(module)
        if keys is None:
            raise UnknownKey(f"module {module!r} has no valid key")
        return keys

    def records(self, module: str | None = None) -> list[KeyRecord]:
        """Every key (of one module) with whether it is current and when it was revoked."""
        return [r for r in self._snapshot.records if module is None or r.keys.module == module]

    def live_modules(self) -> list[str]:
        """Modules that hold a non-revoked key, sorted."""
        return sorted(self._snapshot.current)

    def subscriptions(self, module: str) -> tuple[str, ...]:
        """The routing key patterns ``module`` declared (a built-in module's defaults if it declared nothing)."""
        declared = self._snapshot.subscriptions.get(module)
        return declared if declared is not None else BUILTIN_SUBSCRIPTIONS.get(module, ())

    def readers(self, routing_key: str) -> list[str]:
        """Modules with a live key allowed to read ``routing_key``: the recipients of an event, sorted."""
        return readers(routing_key, {m: self.subscriptions(m) for m in self._snapshot.current})

    # ---- writes: commit, then refresh the snapshot before returning ----

    def register(self, keys: ModuleKeys, *, subscriptions: Sequence[str] | None = None) -> None:
        """Add a key; it becomes the module's current key. Re-registering a key changes nothing.

        ``subscriptions``, when given, replace the module's declared patterns in the same transaction.
        Raises :class:`KeyConflict` if the key is registered for another module.
        """
        patterns = None if subscriptions is None else validate_subscriptions(subscriptions)
        with self._writing() as s:
            row = s.get(ModuleKeyRow, keys.key_id)
            if row is not None:
                _check_owner(row, keys.module)
            else:
                s.add(_new_row(keys))
            if patterns is not None:
                _declare(s, keys.module, patterns)

    def declare(self, module: str, subscriptions: Sequence[str]) -> None:
        """Replace the routing key patterns ``module`` reads (validated: AMQP topic patterns)."""
        patterns = validate_subscriptions(subscriptions)
        with self._writing() as s:
            _declare(s, module, patterns)

    def rotate(
        self, keys: ModuleKeys, *, revoke_previous: bool = False, subscriptions: Sequence[str] | None = None
    ) -> None:
        """Make ``keys`` the module's current key (added if new); optionally revoke every other key of the module.

        ``subscriptions``, when given, replace the module's declared patterns in the same transaction.
        Raises :class:`KeyConflict` if the key is revoked or belongs to another module.
        """
        patterns = None if subscriptions is None else validate_subscriptions(subscriptions)
        with self._writing() as s:
            if patterns is not None:
                _declare(s, keys.module, patterns)
            now = utcnow()
            row = s.get(ModuleKeyRow, keys.key_id)
            if row is None:
                s.add(_new_row(keys, now))
            else:
                _check_owner(row, keys.module)
                if row.revoked:
                    raise KeyConflict(f"key {keys.key_id} of {keys.module!r} is revoked and cannot become current")
                row.current_since = now
            if revoke_previous:
                others = select(ModuleKeyRow).where(
                    ModuleKeyRow.module == keys.module, ModuleKeyRow.key_id != keys.key_id
                )
                for old in s.scalars(others):
                    _revoke_row(old, now)

    def revoke(self, module: str, key_id: str | None = None) -> list[str]:
        """Revoke one key, or every key of ``module``; returns the key ids now revoked. Raises :class:`UnknownKey`."""
        with self._writing() as s:
            query = select(ModuleKeyRow).where(ModuleKeyRow.module == module)
            if key_id is not None:
                query = query.where(ModuleKeyRow.key_id == key_id)
            rows = list(s.scalars(query.order_by(ModuleKeyRow.created_at)))
            if not rows:
                what = f"no key {key_id!r} for module {module!r}" if key_id else f"module {module!r} has no keys"
                raise UnknownKey(what)
            now = utcnow()
            for row in rows:
                _revoke_row(row, now)
            return [row.key_id for row in rows]

    # ---- freshness ----

    def reload(self) -> None:
        """Read the whole directory from the store (it is small: a few keys per module).

        Under the write lock: a background reload that read the rows just before a revocation committed must not
        install its older snapshot after the revocation's own reload (the revoked key would be accepted again).
        """
        with self._write_lock, self._db.snapshot() as s:  # a read: it waits for no writer
            rows = list(s.scalars(select(ModuleKeyRow).order_by(ModuleKeyRow.current_since, ModuleKeyRow.key_id)))
            self._snapshot = _Snapshot.of(rows, list(s.scalars(select(ModuleSubscriptionsRow))))

    async def keep_fresh(self) -> None:
        """Reload every ``reload_interval`` seconds until cancelled (a failed reload keeps the last snapshot).

        On SQLite, a reload is skipped while nothing was committed to the store since the last one
        (``Database.commit_watch``): an idle control plane does not read the directory every few seconds."""
        commits = self._db.commit_watch()
        loaded: int | None = None  # the commit counter before the last successful reload
        try:
            while True:
                await asyncio.sleep(self.reload_interval)  # the freshness bound for other processes' changes
                now = commits.look()  # before the read: a commit after it is seen by the next look
                if now is not None and now == loaded:
                    continue
                try:
                    await asyncio.to_thread(self.reload)
                except Exception:
                    log.exception("reloading the module key directory failed; keeping the last one")
                    continue
                loaded = now
        finally:
            commits.close()

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        # Writes are serialised in this process so that each one's reload sees it and no older snapshot wins.
        with self._write_lock:
            with self._db.transaction() as s:
                yield s
            self.reload()

    # Last in the class body: the name shadows the builtin for annotations below it.
    def list(self, module: str | None = None) -> list[ModuleKeys]:
        """Every key (of one module), grouped by module, oldest first within a module."""
        return [r.keys for r in self.records(module)]


def _new_row(keys: ModuleKeys, now: datetime | None = None) -> ModuleKeyRow:
    now = now or utcnow()
    return ModuleKeyRow(
        key_id=keys.key_id,
        module=keys.module,
        signing_public=keys.signing_public,
        encryption_public=keys.encryption_public,
        revoked=False,
        created_at=now,
        current_since=now,
        revoked_at=None,
    )


def _declare(s: Session, module: str, patterns: tuple[str, ...]) -> None:
    row = s.get(ModuleSubscriptionsRow, module)
    if row is None:
        s.add(ModuleSubscriptionsRow(module=module, patterns=list(patterns), updated_at=utcnow()))
    else:
        row.patterns = list(patterns)


def _check_owner(row: ModuleKeyRow, module: str) -> None:
    if row.module != module:
        raise KeyConflict(f"key {row.key_id} is registered for module {row.module!r}, not {module!r}")


def _revoke_row(row: ModuleKeyRow, now: datetime) -> None:
    if not row.revoked:
        row.revoked = True
        row.revoked_at = now
