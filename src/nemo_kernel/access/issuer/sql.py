"""The built-in issuer's repositories on the store (SQLite or PostgreSQL), one realm each.

The repository protocols are async while the store is synchronous SQLAlchemy, so every call runs its transaction
in a worker thread (``asyncio.to_thread``) and the event loop never waits on the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from nemo_kernel.access.issuer.identities import Client, User
from nemo_kernel.access.issuer.keys import KeyRing, SigningAlgorithm, SigningKey
from nemo_kernel.access.issuer.realm import Realm
from nemo_kernel.store import Database
from nemo_kernel.store.tables import IdentityClientRow, IdentityUserRow, RevokedTokenRow, SigningKeyRow

__all__ = ["SqlClientRepository", "SqlKeyRepository", "SqlRevocationList", "SqlUserRepository", "sql_realm"]

T = TypeVar("T")


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _roles_out(roles: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    return {client: frozenset(r) for client, r in roles.items()}


def _roles_in(roles: Mapping[str, frozenset[str]]) -> dict[str, list[str]]:
    return {client: sorted(r) for client, r in roles.items()}


class _SqlRepository:
    """One database and one realm; ``_run`` executes a function in a transaction off the event loop."""

    def __init__(self, db: Database, realm: str) -> None:
        self._db = db
        self._realm = realm

    async def _run(self, work: Callable[[Session], T]) -> T:
        def in_transaction() -> T:
            with self._db.transaction() as session:
                return work(session)

        return await asyncio.to_thread(in_transaction)


class SqlUserRepository(_SqlRepository):
    """:class:`~nemo_kernel.access.issuer.UserRepository` on the ``identity_users`` table."""

    def _user(self, row: IdentityUserRow) -> User:
        return User(
            username=row.username,
            password_hash=row.password_hash,
            id=row.id,
            realm_roles=frozenset(row.realm_roles),
            client_roles=_roles_out(row.client_roles),
            enabled=row.enabled,
            email=row.email,
            created_at=row.created_at.timestamp(),
        )

    async def get_user(self, username: str) -> User | None:
        """The user, or ``None``."""

        def work(s: Session) -> User | None:
            row = s.scalar(select(IdentityUserRow).filter_by(realm=self._realm, username=username))
            return None if row is None else self._user(row)

        return await self._run(work)

    async def save_user(self, user: User) -> None:
        """Insert or replace by username (a concurrent insert of the same name fails on the unique key)."""
        values = {
            "id": user.id,
            "password_hash": user.password_hash,
            "realm_roles": sorted(user.realm_roles),
            "client_roles": _roles_in(user.client_roles),
            "enabled": user.enabled,
            "email": user.email,
            "created_at": _when(user.created_at),
        }

        def work(s: Session) -> None:
            where = (IdentityUserRow.realm == self._realm, IdentityUserRow.username == user.username)
            if s.execute(update(IdentityUserRow).where(*where).values(**values)).rowcount == 0:  # type: ignore[attr-defined]
                s.execute(insert(IdentityUserRow).values(realm=self._realm, username=user.username, **values))

        await self._run(work)

    async def delete_user(self, username: str) -> bool:
        """Delete; whether it existed."""

        def work(s: Session) -> bool:
            stmt = delete(IdentityUserRow).filter_by(realm=self._realm, username=username)
            return bool(s.execute(stmt).rowcount)  # type: ignore[attr-defined]

        return await self._run(work)

    async def list_users(self) -> list[User]:
        """All users of the realm by username."""

        def work(s: Session) -> list[User]:
            rows = s.scalars(select(IdentityUserRow).filter_by(realm=self._realm).order_by(IdentityUserRow.username))
            return [self._user(r) for r in rows]

        return await self._run(work)


class SqlClientRepository(_SqlRepository):
    """:class:`~nemo_kernel.access.issuer.ClientRepository` on the ``identity_clients`` table."""

    def _client(self, row: IdentityClientRow) -> Client:
        return Client(
            client_id=row.client_id,
            secret_hash=row.secret_hash,
            id=row.id,
            grant_types=frozenset(row.grant_types),
            realm_roles=frozenset(row.realm_roles),
            client_roles=_roles_out(row.client_roles),
            enabled=row.enabled,
            created_at=row.created_at.timestamp(),
        )

    async def get_client(self, client_id: str) -> Client | None:
        """The client, or ``None``."""

        def work(s: Session) -> Client | None:
            row = s.scalar(select(IdentityClientRow).filter_by(realm=self._realm, client_id=client_id))
            return None if row is None else self._client(row)

        return await self._run(work)

    async def save_client(self, client: Client) -> None:
        """Insert or replace by client id (a concurrent insert of the same id fails on the unique key)."""
        values = {
            "id": client.id,
            "secret_hash": client.secret_hash,
            "grant_types": sorted(client.grant_types),
            "realm_roles": sorted(client.realm_roles),
            "client_roles": _roles_in(client.client_roles),
            "enabled": client.enabled,
            "created_at": _when(client.created_at),
        }

        def work(s: Session) -> None:
            where = (IdentityClientRow.realm == self._realm, IdentityClientRow.client_id == client.client_id)
            if s.execute(update(IdentityClientRow).where(*where).values(**values)).rowcount == 0:  # type: ignore[attr-defined]
                s.execute(insert(IdentityClientRow).values(realm=self._realm, client_id=client.client_id, **values))

        await self._run(work)

    async def delete_client(self, client_id: str) -> bool:
        """Delete; whether it existed."""

        def work(s: Session) -> bool:
            stmt = delete(IdentityClientRow).filter_by(realm=self._realm, client_id=client_id)
            return bool(s.execute(stmt).rowcount)  # type: ignore[attr-defined]

        return await self._run(work)

    async def list_clients(self) -> list[Client]:
        """All clients of the realm by client id."""

        def work(s: Session) -> list[Client]:
            rows = s.scalars(
                select(IdentityClientRow).filter_by(realm=self._realm).order_by(IdentityClientRow.client_id)
            )
            return [self._client(r) for r in rows]

        return await self._run(work)


class SqlKeyRepository(_SqlRepository):
    """:class:`~nemo_kernel.access.issuer.KeyRepository` on ``signing_keys``: tokens outlive a restart."""

    async def list_keys(self) -> list[SigningKey]:
        """All keys of the realm, retired ones included, oldest first."""

        def work(s: Session) -> list[SigningKey]:
            rows = s.scalars(
                select(SigningKeyRow).filter_by(realm=self._realm).order_by(SigningKeyRow.created_at, SigningKeyRow.kid)
            )
            return [
                SigningKey(
                    kid=r.kid,
                    algorithm=cast(SigningAlgorithm, r.algorithm),
                    private_pem=r.private_pem,
                    created_at=r.created_at.timestamp(),
                    retired_at=None if r.retired_at is None else r.retired_at.timestamp(),
                )
                for r in rows
            ]

        return await self._run(work)

    async def save_key(self, key: SigningKey) -> None:
        """Insert or replace a key by ``kid``."""

        def work(s: Session) -> None:
            s.merge(
                SigningKeyRow(
                    kid=key.kid,
                    realm=self._realm,
                    algorithm=key.algorithm,
                    private_pem=key.private_pem,
                    created_at=_when(key.created_at),
                    retired_at=None if key.retired_at is None else _when(key.retired_at),
                )
            )

        await self._run(work)


class SqlRevocationList(_SqlRepository):
    """:class:`~nemo_kernel.access.issuer.RevocationList` on ``revoked_tokens``.

    Token ids are random UUIDs, unique across realms, so the table needs no realm column. Rows whose tokens have
    expired are deleted as new revocations arrive: such tokens are refused on ``exp`` anyway.
    """

    async def revoke(self, jti: str, expires_at: float) -> None:
        """Record ``jti`` as revoked until ``expires_at``; prune the expired entries."""

        def work(s: Session) -> None:
            s.execute(delete(RevokedTokenRow).where(RevokedTokenRow.expires_at <= datetime.now(UTC)))
            s.merge(RevokedTokenRow(jti=jti, expires_at=_when(expires_at)))

        await self._run(work)

    async def is_revoked(self, jti: str) -> bool:
        """Whether ``jti`` was revoked."""
        return await self._run(lambda s: s.get(RevokedTokenRow, jti) is not None)


def sql_realm(db: Database, name: str, *, issuer_url: str | None = None, audience: str = "nemo-api") -> Realm:
    """A realm whose users, clients, signing keys and revocations live in ``db``."""
    return Realm(
        name,
        users=SqlUserRepository(db, name),
        clients=SqlClientRepository(db, name),
        keys=KeyRing(SqlKeyRepository(db, name)),
        revocations=SqlRevocationList(db, name),
        issuer_url=issuer_url,
        audience=audience,
    )
