"""The built-in issuer's repositories on the store (SQLite or PostgreSQL), one realm each.

The repository protocols are async while the store is synchronous SQLAlchemy, so every call runs its transaction
in a worker thread (``asyncio.to_thread``) and the event loop never waits on the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import ColumnElement, delete, insert, select, update
from sqlalchemy.orm import Session

from nemo_kernel.access.issuer.identities import Client, User
from nemo_kernel.access.issuer.keys import KeyRing, SigningAlgorithm, SigningKey
from nemo_kernel.access.issuer.realm import Realm
from nemo_kernel.store import Database
from nemo_kernel.store.tables import IdentityClientRow, IdentityUserRow, RevokedTokenRow, SigningKeyRow

__all__ = ["SqlClientRepository", "SqlKeyRepository", "SqlRevocationList", "SqlUserRepository", "sql_realm"]

T = TypeVar("T")
R = TypeVar("R", IdentityUserRow, IdentityClientRow)
V = TypeVar("V")


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


class _NamedRows(_SqlRepository, Generic[R, V]):
    """Rows of one realm keyed by a name column (``username``, ``client_id``), mapped to and from values."""

    _table: type[R]
    _name: str

    def _value(self, row: R) -> V:
        raise NotImplementedError

    def _where(self, name: str) -> tuple[ColumnElement[bool], ...]:
        return (self._table.realm == self._realm, getattr(self._table, self._name) == name)

    async def _get(self, name: str) -> V | None:
        def work(s: Session) -> V | None:
            row = s.scalar(select(self._table).where(*self._where(name)))
            return None if row is None else self._value(row)

        return await self._run(work)

    async def _save(self, name: str, values: dict[str, Any]) -> None:
        # Update in place, else insert: a concurrent insert of the same name fails on the unique key (409).
        def work(s: Session) -> None:
            if s.execute(update(self._table).where(*self._where(name)).values(**values)).rowcount == 0:  # type: ignore[attr-defined]
                s.execute(insert(self._table).values(realm=self._realm, **{self._name: name}, **values))

        await self._run(work)

    async def _delete(self, name: str) -> bool:
        return await self._run(lambda s: bool(s.execute(delete(self._table).where(*self._where(name))).rowcount))  # type: ignore[attr-defined]

    async def _list(self) -> list[V]:
        def work(s: Session) -> list[V]:
            query = select(self._table).where(self._table.realm == self._realm)
            return [self._value(r) for r in s.scalars(query.order_by(getattr(self._table, self._name)))]

        return await self._run(work)


class SqlUserRepository(_NamedRows[IdentityUserRow, User]):
    """:class:`~nemo_kernel.access.issuer.UserRepository` on the ``identity_users`` table."""

    _table = IdentityUserRow
    _name = "username"

    def _value(self, row: IdentityUserRow) -> User:
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
        return await self._get(username)

    async def save_user(self, user: User) -> None:
        """Insert or replace by username."""
        await self._save(
            user.username,
            {
                "id": user.id,
                "password_hash": user.password_hash,
                "realm_roles": sorted(user.realm_roles),
                "client_roles": _roles_in(user.client_roles),
                "enabled": user.enabled,
                "email": user.email,
                "created_at": _when(user.created_at),
            },
        )

    async def delete_user(self, username: str) -> bool:
        """Delete; whether it existed."""
        return await self._delete(username)

    async def list_users(self) -> list[User]:
        """All users of the realm by username."""
        return await self._list()


class SqlClientRepository(_NamedRows[IdentityClientRow, Client]):
    """:class:`~nemo_kernel.access.issuer.ClientRepository` on the ``identity_clients`` table."""

    _table = IdentityClientRow
    _name = "client_id"

    def _value(self, row: IdentityClientRow) -> Client:
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
        return await self._get(client_id)

    async def save_client(self, client: Client) -> None:
        """Insert or replace by client id."""
        await self._save(
            client.client_id,
            {
                "id": client.id,
                "secret_hash": client.secret_hash,
                "grant_types": sorted(client.grant_types),
                "realm_roles": sorted(client.realm_roles),
                "client_roles": _roles_in(client.client_roles),
                "enabled": client.enabled,
                "created_at": _when(client.created_at),
            },
        )

    async def delete_client(self, client_id: str) -> bool:
        """Delete; whether it existed."""
        return await self._delete(client_id)

    async def list_clients(self) -> list[Client]:
        """All clients of the realm by client id."""
        return await self._list()


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
