"""The module key directory and the handled-message record in the store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from nemo_kernel.bus import KeyConflict, ModuleIdentity, ReplayGuard, SeenMessages, UnknownKey
from nemo_kernel.orchestrator.key_directory import StoredKeyDirectory
from nemo_kernel.orchestrator.seen_record import StoredSeenRecord
from nemo_kernel.store import Database


def directory_of(db: Database, reload_interval: float = 5.0) -> StoredKeyDirectory:
    directory = StoredKeyDirectory(db, reload_interval=reload_interval)
    directory.reload()
    return directory


def test_register_rotate_revoke_and_current(database: Database) -> None:
    directory = directory_of(database)
    first, second = ModuleIdentity.generate("ppef"), ModuleIdentity.generate("ppef")
    directory.register(first.public())
    directory.register(first.public())  # idempotent
    assert [k.key_id for k in directory.list("ppef")] == [first.key_id]
    assert directory.current("ppef").key_id == first.key_id
    assert directory.get("ppef", first.key_id).signing_public == first.signing_public

    directory.rotate(second.public())
    assert directory.current("ppef").key_id == second.key_id
    assert not directory.get("ppef", first.key_id).revoked  # in-flight messages signed with it still verify
    directory.rotate(first.public())  # rotating back to an older live key makes it current again
    assert directory.current("ppef").key_id == first.key_id

    assert directory.revoke("ppef", first.key_id) == [first.key_id]
    assert directory.get("ppef", first.key_id).revoked
    assert directory.current("ppef").key_id == second.key_id
    with pytest.raises(KeyConflict):
        directory.rotate(first.public())
    records = {r.keys.key_id: r for r in directory.records("ppef")}
    assert records[first.key_id].revoked_at is not None and records[second.key_id].current
    assert directory.live_modules() == ["ppef"]

    assert sorted(directory.revoke("ppef")) == sorted([first.key_id, second.key_id])
    with pytest.raises(UnknownKey):
        directory.current("ppef")
    assert directory.live_modules() == []


def test_rotate_can_revoke_previous_and_conflicts_are_refused(database: Database) -> None:
    directory = directory_of(database)
    old, new = ModuleIdentity.generate("security"), ModuleIdentity.generate("security")
    directory.register(old.public())
    directory.rotate(new.public(), revoke_previous=True)
    assert [(k.key_id, k.revoked) for k in directory.list("security")] == [(old.key_id, True), (new.key_id, False)]
    with pytest.raises(KeyConflict):  # the same public keys claimed by another module
        directory.register(replace(new.public(), module="other"))
    with pytest.raises(UnknownKey):
        directory.revoke("security", "0000000000000000")
    with pytest.raises(UnknownKey):
        directory.revoke("nobody")
    with pytest.raises(UnknownKey):
        directory.get("security", "0000000000000000")


async def test_another_process_changes_are_seen_within_the_reload_interval(database_url: str) -> None:
    # Two Database objects on one store stand for two control-plane replicas.
    mine, theirs = Database(database_url), Database(database_url)
    mine.migrate()
    try:
        here = directory_of(mine, reload_interval=0.2)
        there = directory_of(theirs)
        module = ModuleIdentity.generate("agent-1")
        there.register(module.public())
        with pytest.raises(UnknownKey):  # not yet: lookups never touch the database
            here.current("agent-1")
        fresh = asyncio.create_task(here.keep_fresh())
        try:
            start = time.monotonic()
            while not here.live_modules():
                await asyncio.sleep(0.02)
                assert time.monotonic() - start < 5, "the other replica's registration never showed up"
            there.revoke("agent-1")
            while not here.get("agent-1", module.key_id).revoked:
                await asyncio.sleep(0.02)
                assert time.monotonic() - start < 10, "the other replica's revocation never showed up"
        finally:
            fresh.cancel()
            await asyncio.gather(fresh, return_exceptions=True)
    finally:
        mine.dispose()
        theirs.dispose()


def test_seen_messages_survive_a_restart_and_expired_rows_are_pruned(database: Database) -> None:
    record = StoredSeenRecord(database, "orchestrator.intake")
    guard = ReplayGuard(300.0, SeenMessages(ttl=600.0, persist=record.persist))
    guard.remember("acme", "petition-1", time.time())
    long_id = "x" * 500  # longer than the column: stored under a digest, still recognised
    guard.remember("acme", long_id, time.time())
    record.persist("expired-key", time.time() - 5)
    StoredSeenRecord(database, "someone-else").persist("acme\x1fpetition-2", time.time() + 600)

    # "Restart": a fresh guard restored from the store refuses both as replays, nothing from other consumers.
    restarted = ReplayGuard(300.0, SeenMessages(ttl=600.0))
    restarted.seen.restore(record.load())
    assert len(restarted.seen) == 2
    for message_id in ("petition-1", long_id):
        with pytest.raises(Exception, match="already accepted"):
            restarted.check("acme", message_id, time.time())
    restarted.check("acme", "petition-2", time.time())  # the other consumer's record is not ours

    assert record.prune() == 1
    assert record.prune() == 0
