"""Identity changes under real concurrency, on SQLite and on PostgreSQL: no lost update, no deleted
user or client brought back, and never a realm left without an enabled admin."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient

from nemo_kernel.access.issuer import (
    IdentityAdmin,
    IdentityConflict,
    IdentityNotFound,
    LastAdmin,
    Realm,
    SecretHasher,
    User,
    sql_realm,
)
from nemo_kernel.access.issuer.sql import SqlUserRepository
from nemo_kernel.access.policy import ADMIN
from nemo_kernel.api.errors import install_error_handlers
from nemo_kernel.store import Database
from tests.conftest import migrated_database

ROUNDS = 15
WRITERS = 8
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class GatedHasher(SecretHasher):
    """Hashes only once ``opened`` is set: the slow Argon2 step, held open while a concurrent change lands."""

    def __init__(self) -> None:
        super().__init__(FAST)
        self.hashing = threading.Event()
        self.opened = threading.Event()

    def hash(self, secret: str) -> str:
        """Signal that hashing started, wait for the gate, then hash."""
        self.hashing.set()
        if not self.opened.wait(timeout=30):
            raise TimeoutError("the gate was never opened")
        return super().hash(secret)


@pytest.fixture
def realm(database: Database) -> Realm:
    """A realm whose identities live in a SQLite file or in a fresh PostgreSQL database."""
    return sql_realm(database, "nemo")


def _admin(realm: Realm, hasher: SecretHasher | None = None) -> IdentityAdmin:
    return IdentityAdmin(realm.users, realm.clients, hasher or SecretHasher(FAST))


async def _during_hashing(hasher: GatedHasher, change: Awaitable[object]) -> None:
    """Once a concurrent task has started hashing, run ``change`` to completion; then let the hashing finish."""
    await asyncio.to_thread(hasher.hashing.wait, 30)
    try:
        await change
    finally:
        hasher.opened.set()


async def test_disable_during_a_password_change_is_not_lost(realm: Realm) -> None:
    admin = _admin(realm)
    await admin.add_user("alice", "alice-password", roles=["nemo-viewer"])
    hasher = GatedHasher()
    password = asyncio.create_task(_admin(realm, hasher).set_password("alice", "new-password"))
    await _during_hashing(hasher, admin.update_user("alice", enabled=False))
    await password
    alice = await admin.get_user("alice")
    assert alice.enabled is False  # the disable, answered first, survived the password change
    assert await hasher.verify(alice.password_hash, "new-password")  # and the password changed too


async def test_secret_reset_does_not_bring_back_a_deleted_client(realm: Realm) -> None:
    admin = _admin(realm)
    await admin.add_client("nemo-admin", roles=[ADMIN])
    await admin.add_client("svc", roles=[ADMIN])
    hasher = GatedHasher()
    reset = asyncio.create_task(_admin(realm, hasher).reset_client_secret("svc"))
    await _during_hashing(hasher, admin.remove_client("svc"))
    with pytest.raises(IdentityNotFound, match="no client 'svc'"):
        await reset
    assert await realm.clients.get_client("svc") is None
    assert [c.client_id for c in await admin.list_clients()] == ["nemo-admin"]


async def test_concurrent_patches_of_one_user_both_land(realm: Realm) -> None:
    admin = _admin(realm)
    for round_ in range(ROUNDS):
        name = f"user{round_}"
        await admin.add_user(name, "a-password", roles=["nemo-viewer"])
        await asyncio.gather(admin.update_user(name, enabled=False), admin.update_user(name, roles=["nemo-operator"]))
        user = await admin.get_user(name)
        assert (user.enabled, user.realm_roles) == (False, {"nemo-operator"}), f"round {round_}"


async def test_sql_update_is_atomic_across_threads(database: Database) -> None:
    # Writers released together, each adding its own role: every one of them must be in the result. (In memory, no
    # await splits an update, so there is nothing to race there.)
    users = SqlUserRepository(database, "nemo")
    await users.create_user(User(username="bob", password_hash="h"))
    barrier = threading.Barrier(WRITERS)

    def add_role(n: int) -> User:
        barrier.wait(timeout=30)
        return asyncio.run(users.update_user("bob", lambda u: replace(u, realm_roles=u.realm_roles | {f"r{n}"})))

    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(add_role, range(WRITERS)))
    bob = await users.get_user("bob")
    assert bob is not None and bob.realm_roles == {f"r{n}" for n in range(WRITERS)}


async def test_create_is_never_an_upsert(realm: Realm) -> None:
    await realm.users.create_user(User(username="carol", password_hash="first"))
    with pytest.raises(IdentityConflict, match="user 'carol' exists"):
        await realm.users.create_user(User(username="carol", password_hash="second"))
    assert (await realm.users.get_user("carol")).password_hash == "first"  # type: ignore[union-attr]
    with pytest.raises(IdentityNotFound, match="no user 'dan'"):
        await realm.users.update_user("dan", lambda u: u)


async def test_the_last_admin_cannot_be_disabled_demoted_or_removed(realm: Realm) -> None:
    admin = _admin(realm)
    await admin.add_client("nemo-admin", roles=[ADMIN])
    await admin.add_user("viewer", "a-password", roles=["nemo-viewer"])
    for refused in (
        admin.update_client("nemo-admin", enabled=False),
        admin.update_client("nemo-admin", roles=["nemo-viewer"]),
        admin.remove_client("nemo-admin"),
    ):
        with pytest.raises(LastAdmin, match="last enabled user or client with the nemo-admin role"):
            await refused
    assert (await admin.get_client("nemo-admin")).enabled
    await admin.remove_user("viewer")  # not an admin: nothing to keep
    # A second admin (a user) makes the client removable; then the user is the last one.
    await admin.add_user("root", "a-password", roles=[ADMIN])
    await admin.update_client("nemo-admin", enabled=False)
    with pytest.raises(LastAdmin):
        await admin.update_user("root", enabled=False)
    await admin.update_client("nemo-admin", enabled=True)
    await admin.remove_user("root")


async def test_concurrent_removals_of_the_last_two_admins_leave_one(realm: Realm) -> None:
    admin = _admin(realm)
    for round_ in range(ROUNDS):
        first, second = f"a{round_}", f"b{round_}"
        await admin.add_client(first, roles=[ADMIN])
        await admin.add_user(second, "a-password", roles=[ADMIN])
        outcomes = await asyncio.gather(
            admin.remove_client(first), admin.update_user(second, enabled=False), return_exceptions=True
        )
        assert sorted(type(o).__name__ for o in outcomes) in (["LastAdmin", "NoneType"], ["LastAdmin", "User"])
        admins = [c for c in await admin.list_clients() if c.enabled and ADMIN in c.realm_roles]
        admins += [u for u in await admin.list_users() if u.enabled and ADMIN in u.realm_roles]
        assert len(admins) == 1, f"round {round_}: {admins}"
        # The next round starts from no admin: straight through the repositories, which check only when asked.
        await realm.clients.delete_client(first)
        await realm.users.delete_user(second)


@pytest.fixture
def sqlite_realm(tmp_path: Path) -> Iterator[Realm]:
    """A realm in a SQLite file: for what does not depend on the database."""
    with migrated_database(f"sqlite:///{tmp_path / 'nemo.db'}") as db:
        yield sql_realm(db, "nemo")


def test_invalid_identity_is_422_naming_the_field_without_the_password(sqlite_realm: Realm) -> None:
    app = FastAPI()
    install_error_handlers(app)
    admin = _admin(sqlite_realm)

    @app.post("/password")
    async def set_password() -> None:
        await admin.set_password("anyone", "Xy7#q")

    @app.post("/user")
    async def add_user() -> None:
        await admin.add_user("no spaces", "long-enough-password")

    http = TestClient(app)
    for path, field in (("/password", "password"), ("/user", "username")):
        response = http.post(path)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "invalid"
        assert [d["field"] for d in error["details"]] == [field]
        assert "Xy7#q" not in response.text and "long-enough-password" not in response.text
