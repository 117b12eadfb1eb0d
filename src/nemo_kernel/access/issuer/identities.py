"""Users, clients and revoked token ids of the built-in issuer, behind small repository protocols.

In-memory implementations live here; the store provides SQL ones with the same protocols.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


@dataclass(frozen=True, slots=True)
class User:
    """A person (or script) that logs in with a password. ``password_hash`` is Argon2id, never the password."""

    username: str
    password_hash: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    realm_roles: frozenset[str] = frozenset()
    client_roles: dict[str, frozenset[str]] = field(default_factory=dict)
    enabled: bool = True
    email: str | None = None
    created_at: float = field(default_factory=time.time)

    def __repr__(self) -> str:
        return f"User(username={self.username!r}, id={self.id!r}, enabled={self.enabled!r})"


@dataclass(frozen=True, slots=True)
class Client:
    """An OAuth client. Confidential clients have a ``secret_hash``; their service account holds the roles."""

    client_id: str
    secret_hash: str | None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    grant_types: frozenset[str] = frozenset({"client_credentials"})
    realm_roles: frozenset[str] = frozenset()
    client_roles: dict[str, frozenset[str]] = field(default_factory=dict)
    enabled: bool = True
    created_at: float = field(default_factory=time.time)

    def __repr__(self) -> str:
        return f"Client(client_id={self.client_id!r}, enabled={self.enabled!r})"


class IdentityConflict(ValueError):
    """The user or client already exists (HTTP 409)."""


class IdentityNotFound(LookupError):
    """No such user or client (HTTP 404)."""


class LastAdmin(IdentityConflict):
    """The change would leave the realm with no enabled user or client holding the admin role (HTTP 409)."""


class _Principal(Protocol):
    @property
    def enabled(self) -> bool: ...

    @property
    def realm_roles(self) -> frozenset[str]: ...


def _holds(role: str, principal: _Principal) -> bool:
    return principal.enabled and role in principal.realm_roles


def keep_admin(
    role: str | None, kind: str, name: str, before: _Principal, after: _Principal | None, held: Callable[[str], bool]
) -> None:
    """Refuse (:class:`LastAdmin`) a change of ``kind`` ``name`` from ``before`` to ``after`` (``None``: deleted) that
    takes ``role`` from an enabled holder, unless ``held(role)`` (asked with the change made) finds another one."""
    if role is None or not _holds(role, before) or (after is not None and _holds(role, after)) or held(role):
        return
    raise LastAdmin(
        f"{kind} {name!r} is the last enabled user or client with the {role} role: without it nobody could manage"
        f" the realm; give another user or client {role} first"
    )


class UserRepository(Protocol):
    """Storage of users by username.

    ``admin_role``, when given to :meth:`update_user` or :meth:`delete_user`, makes the repository refuse (with
    :class:`LastAdmin`) a change after which no enabled user or client of the realm holds that realm role; the check
    and the change are one transaction, so two concurrent removals of the last two admins cannot both pass.
    """

    async def get_user(self, username: str) -> User | None:
        """The user, or ``None``."""
        ...

    async def create_user(self, user: User) -> None:
        """Insert; :class:`IdentityConflict` if the username is taken (never a replace)."""
        ...

    async def update_user(
        self, username: str, change: Callable[[User], User], *, admin_role: str | None = None
    ) -> User:
        """Read, ``change`` and write the user atomically (no concurrent write in between); the changed user.
        :class:`IdentityNotFound` if there is none."""
        ...

    async def delete_user(self, username: str, *, admin_role: str | None = None) -> bool:
        """Delete; whether it existed."""
        ...

    async def list_users(self) -> list[User]:
        """All users by username."""
        ...


class ClientRepository(Protocol):
    """Storage of clients by client id; ``admin_role`` as for :class:`UserRepository`."""

    async def get_client(self, client_id: str) -> Client | None:
        """The client, or ``None``."""
        ...

    async def create_client(self, client: Client) -> None:
        """Insert; :class:`IdentityConflict` if the client id is taken (never a replace)."""
        ...

    async def update_client(
        self, client_id: str, change: Callable[[Client], Client], *, admin_role: str | None = None
    ) -> Client:
        """Read, ``change`` and write the client atomically; the changed client. :class:`IdentityNotFound` if none."""
        ...

    async def delete_client(self, client_id: str, *, admin_role: str | None = None) -> bool:
        """Delete; whether it existed."""
        ...

    async def list_clients(self) -> list[Client]:
        """All clients by client id."""
        ...


class RevocationList(Protocol):
    """Revoked token ids (``jti``), each kept until the token would have expired anyway."""

    async def revoke(self, jti: str, expires_at: float) -> None:
        """Record ``jti`` as revoked until ``expires_at``."""
        ...

    async def is_revoked(self, jti: str) -> bool:
        """Whether ``jti`` was revoked."""
        ...


class InMemoryDirectory:
    """The users and clients of one in-memory realm, together: the last-admin check looks at both."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.clients: dict[str, Client] = {}

    def role_held(self, role: str) -> bool:
        """Whether some enabled user or client holds ``role``."""
        return any(_holds(role, u) for u in self.users.values()) or any(_holds(role, c) for c in self.clients.values())


P = TypeVar("P", User, Client)


class _InMemoryRows(Generic[P]):
    """Users or clients of a directory by name. No ``await`` between a read and its write: atomic on the loop."""

    _kind: str

    def __init__(self, directory: InMemoryDirectory | None, rows: Callable[[InMemoryDirectory], dict[str, P]]) -> None:
        self._directory = directory or InMemoryDirectory()
        self._rows: dict[str, P] = rows(self._directory)

    def _create(self, name: str, value: P) -> None:
        if name in self._rows:
            raise IdentityConflict(f"{self._kind} {name!r} exists")
        self._rows[name] = value

    def _update(self, name: str, change: Callable[[P], P], admin_role: str | None) -> P:
        before = self._rows.get(name)
        if before is None:
            raise IdentityNotFound(f"no {self._kind} {name!r}")
        self._rows[name] = after = change(before)
        self._keep_admin(admin_role, name, before, after)
        return after

    def _delete(self, name: str, admin_role: str | None) -> bool:
        before = self._rows.pop(name, None)
        if before is not None:
            self._keep_admin(admin_role, name, before, None)
        return before is not None

    def _keep_admin(self, role: str | None, name: str, before: P, after: P | None) -> None:
        try:
            keep_admin(role, self._kind, name, before, after, self._directory.role_held)
        except LastAdmin:
            self._rows[name] = before  # undone, as a rolled-back transaction would be
            raise

    def _list(self) -> list[P]:
        return [self._rows[k] for k in sorted(self._rows)]


class InMemoryUserRepository(_InMemoryRows[User]):
    """Users in a dict (of ``directory``, shared with the realm's clients)."""

    _kind = "user"

    def __init__(self, directory: InMemoryDirectory | None = None) -> None:
        super().__init__(directory, lambda d: d.users)

    async def get_user(self, username: str) -> User | None:
        """The user, or ``None``."""
        return self._rows.get(username)

    async def create_user(self, user: User) -> None:
        """Insert; :class:`IdentityConflict` if the username is taken."""
        self._create(user.username, user)

    async def update_user(
        self, username: str, change: Callable[[User], User], *, admin_role: str | None = None
    ) -> User:
        """Apply ``change`` to the user; the changed user."""
        return self._update(username, change, admin_role)

    async def delete_user(self, username: str, *, admin_role: str | None = None) -> bool:
        """Delete; whether it existed."""
        return self._delete(username, admin_role)

    async def list_users(self) -> list[User]:
        """All users by username."""
        return self._list()


class InMemoryClientRepository(_InMemoryRows[Client]):
    """Clients in a dict (of ``directory``, shared with the realm's users)."""

    _kind = "client"

    def __init__(self, directory: InMemoryDirectory | None = None) -> None:
        super().__init__(directory, lambda d: d.clients)

    async def get_client(self, client_id: str) -> Client | None:
        """The client, or ``None``."""
        return self._rows.get(client_id)

    async def create_client(self, client: Client) -> None:
        """Insert; :class:`IdentityConflict` if the client id is taken."""
        self._create(client.client_id, client)

    async def update_client(
        self, client_id: str, change: Callable[[Client], Client], *, admin_role: str | None = None
    ) -> Client:
        """Apply ``change`` to the client; the changed client."""
        return self._update(client_id, change, admin_role)

    async def delete_client(self, client_id: str, *, admin_role: str | None = None) -> bool:
        """Delete; whether it existed."""
        return self._delete(client_id, admin_role)

    async def list_clients(self) -> list[Client]:
        """All clients by client id."""
        return self._list()


class InMemoryRevocationList:
    """Revoked ``jti`` values with their expiry; expired entries are pruned as new ones arrive."""

    def __init__(self) -> None:
        self._revoked: dict[str, float] = {}

    async def revoke(self, jti: str, expires_at: float) -> None:
        """Record ``jti``; drop entries whose tokens have expired (they are refused on ``exp`` anyway)."""
        now = time.time()
        self._revoked = {k: v for k, v in self._revoked.items() if v > now}
        self._revoked[jti] = expires_at

    async def is_revoked(self, jti: str) -> bool:
        """Whether ``jti`` was revoked."""
        return jti in self._revoked
