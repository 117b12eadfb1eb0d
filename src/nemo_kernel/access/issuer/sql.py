"""The built-in issuer's repositories on the store (SQLite or PostgreSQL), one realm each.

The repository protocols are async while the store is synchronous SQLAlchemy, so every call runs its transaction
in a worker thread (``asyncio.to_thread``) and the event loop never waits on the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import ColumnElement, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nemo_kernel.access.issuer.identities import (
    Client,
    IdentityConflict,
    IdentityNotFound,
    User,
    keep_admin,
)
from nemo_kernel.access.issuer.keys import KeyRing, SigningAlgorithm, SigningKey
from nemo_kernel.access.issuer.realm import DEFAULT_ACCESS_TOKEN_TTL, Realm
from nemo_kernel.store import Database
from nemo_kernel.store.tables import IdentityClientRow, IdentityUserRow, RevokedTokenRow, SigningKeyRow

__all__ = ["SqlClientRepository", "SqlKeyRepository", "SqlRevocationList", "SqlUserRepository", "sql_realm"]

T = TypeVar("T")
R = TypeVar("R", IdentityUserRow, IdentityClientRow)
V = TypeVar("V", User, Client)


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _roles_out(roles: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    return {client: frozenset(r) for client, r in roles.items()}


def _roles_in(roles: Mapping[str, frozenset[str]]) -> dict[str, list[str]]:
    return {client: sorted(r) for client, r in roles.items()}


class _SqlRepository:
    """One database and one realm; ``_run`` executes a function in a transaction off the event loop, ``_read`` one
    that only reads, in a snapshot."""

    def __init__(self, db: Database, realm: str) -> None:
        self._db = db
        self._realm = realm

    async def _run(self, work: Callable[[Session], T]) -> T:
        def in_transaction() -> T:
            with self._db.transaction() as session:
                return work(session)

        return await asyncio.to_thread(in_transaction)

    async def _read(self, work: Callable[[Session], T]) -> T:
        # Reads (every API call checks its token against the keys and the revocations) go through a snapshot: they
        # must not wait for, or fail on, a writer holding the store's write lock.
        def in_snapshot() -> T:
            with self._db.snapshot() as session:
                return work(session)

        return await asyncio.to_thread(in_snapshot)


def _role_held(s: Session, realm: str, role: str) -> bool:
    # Role lists are JSON, queried differently by each database; a realm has few principals, so filter here.
    return any(
        role in roles
        for table in (IdentityUserRow, IdentityClientRow)
        for roles in s.scalars(select(table.realm_roles).where(table.realm == realm, table.enabled))
    )


class _NamedRows(_SqlRepository, Generic[R, V]):
    """Rows of one realm keyed by a name column (``username``, ``client_id``), mapped to and from values.

    Creation is a plain INSERT (the unique key refuses a taken name); changes are read, applied and written in one
    transaction that first takes the realm's identity write lock (:meth:`_lock`), so no write is lost in between and
    a row deleted meanwhile stays deleted.
    """

    _table: type[R]
    _name: str
    _kind: str

    def _value(self, row: R) -> V:
        raise NotImplementedError

    def _columns(self, value: V) -> dict[str, Any]:
        """Every column but ``realm`` and the name."""
        raise NotImplementedError

    def _where(self, name: str) -> tuple[ColumnElement[bool], ...]:
        return (self._table.realm == self._realm, getattr(self._table, self._name) == name)

    def _lock(self, s: Session, name: str) -> None:
        if self._db.is_sqlite:
            # SQLite has one writer per database, but pysqlite begins the transaction at the first write, not at a
            # SELECT: so write first (a no-op UPDATE of the row). That takes the write lock, held until commit,
            # before anything is read; and a transaction that starts with a write waits (busy_timeout) for the lock.
            s.execute(update(self._table).where(*self._where(name)).values({self._name: name}))
        else:
            # Row locks alone would let two transactions disable two different admins at once, each seeing the
            # other still enabled: the last-admin check needs the realm's identity writes in series. They are rare
            # (admin actions), so one transaction-scoped advisory lock per realm costs nothing.
            s.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"nemo identities {self._realm}"))))

    def _locked_row(self, s: Session, name: str) -> R | None:
        self._lock(s, name)
        # FOR UPDATE (PostgreSQL; SQLite ignores it) as well: the row stays ours even against a writer that would not
        # take the realm lock.
        return s.scalar(select(self._table).where(*self._where(name)).with_for_update())

    def _keep_admin(self, s: Session, role: str | None, before: V, after: V | None) -> None:
        # Runs after the change, in its transaction: what it sees is what the commit will leave.
        name = getattr(before, self._name)
        keep_admin(role, self._kind, name, before, after, lambda held: _role_held(s, self._realm, held))

    async def _get(self, name: str) -> V | None:
        def work(s: Session) -> V | None:
            row = s.scalar(select(self._table).where(*self._where(name)))
            return None if row is None else self._value(row)

        return await self._read(work)

    async def _create(self, name: str, value: V) -> None:
        values = {"realm": self._realm, self._name: name, **self._columns(value)}
        try:
            await self._run(lambda s: s.execute(insert(self._table).values(**values)))
        except IntegrityError as exc:
            raise IdentityConflict(f"{self._kind} {name!r} exists") from exc

    async def _update(self, name: str, change: Callable[[V], V], admin_role: str | None) -> V:
        def work(s: Session) -> V:
            row = self._locked_row(s, name)
            if row is None:
                raise IdentityNotFound(f"no {self._kind} {name!r}")
            before = self._value(row)
            after = change(before)
            s.execute(update(self._table).where(*self._where(name)).values(**self._columns(after)))
            self._keep_admin(s, admin_role, before, after)
            return after

        return await self._run(work)

    async def _delete(self, name: str, admin_role: str | None) -> bool:
        def work(s: Session) -> bool:
            row = self._locked_row(s, name)
            if row is None:
                return False
            before = self._value(row)
            s.execute(delete(self._table).where(*self._where(name)))
            self._keep_admin(s, admin_role, before, None)
            return True

        return await self._run(work)

    async def _list(self) -> list[V]:
        def work(s: Session) -> list[V]:
            query = select(self._table).where(self._table.realm == self._realm)
            return [self._value(r) for r in s.scalars(query.order_by(getattr(self._table, self._name)))]

        return await self._read(work)


class SqlUserRepository(_NamedRows[IdentityUserRow, User]):
    """:class:`~nemo_kernel.access.issuer.UserRepository` on the ``identity_users`` table."""

    _table = IdentityUserRow
    _name = "username"
    _kind = "user"

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

    def _columns(self, value: User) -> dict[str, Any]:
        return {
            "id": value.id,
            "password_hash": value.password_hash,
            "realm_roles": sorted(value.realm_roles),
            "client_roles": _roles_in(value.client_roles),
            "enabled": value.enabled,
            "email": value.email,
            "created_at": _when(value.created_at),
        }

    async def get_user(self, username: str) -> User | None:
        """The user, or ``None``."""
        return await self._get(username)

    async def create_user(self, user: User) -> None:
        """Insert; :class:`IdentityConflict` if the username is taken."""
        await self._create(user.username, user)

    async def update_user(
        self, username: str, change: Callable[[User], User], *, admin_role: str | None = None
    ) -> User:
        """Read, ``change`` and write the user in one locked transaction; the changed user."""
        return await self._update(username, change, admin_role)

    async def delete_user(self, username: str, *, admin_role: str | None = None) -> bool:
        """Delete; whether it existed."""
        return await self._delete(username, admin_role)

    async def list_users(self) -> list[User]:
        """All users of the realm by username."""
        return await self._list()


class SqlClientRepository(_NamedRows[IdentityClientRow, Client]):
    """:class:`~nemo_kernel.access.issuer.ClientRepository` on the ``identity_clients`` table."""

    _table = IdentityClientRow
    _name = "client_id"
    _kind = "client"

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

    def _columns(self, value: Client) -> dict[str, Any]:
        return {
            "id": value.id,
            "secret_hash": value.secret_hash,
            "grant_types": sorted(value.grant_types),
            "realm_roles": sorted(value.realm_roles),
            "client_roles": _roles_in(value.client_roles),
            "enabled": value.enabled,
            "created_at": _when(value.created_at),
        }

    async def get_client(self, client_id: str) -> Client | None:
        """The client, or ``None``."""
        return await self._get(client_id)

    async def create_client(self, client: Client) -> None:
        """Insert; :class:`IdentityConflict` if the client id is taken."""
        await self._create(client.client_id, client)

    async def update_client(
        self, client_id: str, change: Callable[[Client], Client], *, admin_role: str | None = None
    ) -> Client:
        """Read, ``change`` and write the client in one locked transaction; the changed client."""
        return await self._update(client_id, change, admin_role)

    async def delete_client(self, client_id: str, *, admin_role: str | None = None) -> bool:
        """Delete; whether it existed."""
        return await self._delete(client_id, admin_role)

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

        return await self._read(work)

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
        return await self._read(lambda s: s.get(RevokedTokenRow, jti) is not None)


def sql_realm(
    db: Database,
    name: str,
    *,
    issuer_url: str | None = None,
    audience: str = "nemo-api",
    access_token_ttl: int = DEFAULT_ACCESS_TOKEN_TTL,
) -> Realm:
    """A realm whose users, clients, signing keys and revocations live in ``db``; access tokens it issues are
    valid for ``access_token_ttl`` seconds."""
    return Realm(
        name,
        users=SqlUserRepository(db, name),
        clients=SqlClientRepository(db, name),
        keys=KeyRing(SqlKeyRepository(db, name)),
        revocations=SqlRevocationList(db, name),
        issuer_url=issuer_url,
        audience=audience,
        access_token_ttl=access_token_ttl,
    )
