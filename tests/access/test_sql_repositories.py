"""The issuer's SQL repositories on SQLite and PostgreSQL: what the realm relies on, and tokens across restarts."""

from __future__ import annotations

import time
from dataclasses import replace

import jwt
import pytest

from nemo_kernel.access import InvalidToken
from nemo_kernel.access.issuer import Client, IdentityAdmin, KeyRing, User, sql_realm
from nemo_kernel.access.issuer.sql import (
    SqlClientRepository,
    SqlKeyRepository,
    SqlRevocationList,
    SqlUserRepository,
)
from nemo_kernel.store import Database
from nemo_kernel.store.tables import RevokedTokenRow

ISSUER = "http://127.0.0.1:7700/realms/nemo"


async def test_users_roundtrip_update_delete_and_realms_apart(database: Database) -> None:
    users = SqlUserRepository(database, "nemo")
    other = SqlUserRepository(database, "other")
    alice = User(
        username="alice",
        password_hash="$argon2id$x",
        realm_roles=frozenset({"nemo-viewer"}),
        client_roles={"nemo-api": frozenset({"read"})},
        email="alice@example.org",
    )
    await users.create_user(alice)
    await users.create_user(User(username="bob", password_hash="h"))
    await other.create_user(User(username="alice", password_hash="other"))
    got = await users.get_user("alice")
    assert got is not None
    assert (got.id, got.realm_roles, got.client_roles, got.email, got.enabled) == (
        alice.id,
        alice.realm_roles,
        alice.client_roles,
        alice.email,
        True,
    )
    assert abs(got.created_at - alice.created_at) < 1e-3
    changed = await users.update_user("alice", lambda u: replace(u, password_hash="h2", enabled=False))
    assert await users.get_user("alice") == changed
    assert (changed.id, changed.enabled, changed.password_hash, changed.email) == (alice.id, False, "h2", alice.email)
    assert [u.username for u in await users.list_users()] == ["alice", "bob"]
    assert (await other.get_user("alice")).password_hash == "other"  # type: ignore[union-attr]
    assert await users.delete_user("alice") is True
    assert await users.delete_user("alice") is False
    assert await users.get_user("alice") is None
    assert await other.get_user("alice") is not None


async def test_clients_roundtrip_update_delete(database: Database) -> None:
    clients = SqlClientRepository(database, "nemo")
    app = Client(
        client_id="app",
        secret_hash="$argon2id$y",
        grant_types=frozenset({"client_credentials", "password"}),
        realm_roles=frozenset({"nemo-operator"}),
    )
    await clients.create_client(app)
    await clients.create_client(Client(client_id="public", secret_hash=None))
    got = await clients.get_client("app")
    assert got is not None
    assert (got.id, got.grant_types, got.realm_roles, got.secret_hash) == (
        app.id,
        app.grant_types,
        app.realm_roles,
        app.secret_hash,
    )
    await clients.update_client("app", lambda c: replace(c, secret_hash="new"))
    assert (await clients.get_client("app")).secret_hash == "new"  # type: ignore[union-attr]
    assert [c.client_id for c in await clients.list_clients()] == ["app", "public"]
    assert await clients.delete_client("public") is True
    assert await clients.delete_client("public") is False
    assert [c.client_id for c in await clients.list_clients()] == ["app"]


async def test_revocations_are_kept_until_expiry_then_pruned(database: Database) -> None:
    revocations = SqlRevocationList(database, "nemo")
    await revocations.revoke("expired", time.time() - 1)
    assert await revocations.is_revoked("expired")
    await revocations.revoke("live", time.time() + 300)
    await revocations.revoke("live", time.time() + 600)  # revoking twice is fine
    assert await revocations.is_revoked("live")
    assert not await revocations.is_revoked("never")
    with database.transaction() as s:
        assert [r.jti for r in s.query(RevokedTokenRow).all()] == ["live"]


async def test_keys_persist_so_tokens_survive_a_restart(database: Database) -> None:
    first = sql_realm(database, "nemo", issuer_url=ISSUER)
    issued = await IdentityAdmin(first.users, first.clients).add_client("svc", roles=["nemo-viewer"])
    token = (await first.client_credentials(issued.client, ISSUER))["access_token"]
    # A second realm object on the same database is what the next `nemo up` builds.
    second = sql_realm(database, "nemo", issuer_url=ISSUER)
    principal = await second.local_verifier().verify(token)
    assert principal.client_id == "svc" and principal.realm_roles == {"nemo-viewer"}
    await second.revoke(issued.client, token)
    with pytest.raises(InvalidToken, match="not active"):
        await first.local_verifier().verify(token)


async def test_key_rotation_and_retirement_are_stored(database: Database) -> None:
    ring = KeyRing(SqlKeyRepository(database, "nemo"))
    old, _ = await ring.signing_key()
    new = await ring.rotate("ES256")
    await ring.retire(old.kid)
    keys = await SqlKeyRepository(database, "nemo").list_keys()
    assert [(k.kid, k.retired_at is not None) for k in keys] == [(old.kid, True), (new.kid, False)]
    reloaded = KeyRing(SqlKeyRepository(database, "nemo"))
    assert [k["kid"] for k in (await reloaded.jwks())["keys"]] == [new.kid]
    assert isinstance(await reloaded.key(new.kid, "ES256"), jwt.PyJWK)
    assert await SqlKeyRepository(database, "other").list_keys() == []
