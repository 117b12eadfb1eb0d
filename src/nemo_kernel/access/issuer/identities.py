"""Users, clients and revoked token ids of the built-in issuer, behind small repository protocols.

The store implements them (:mod:`nemo_kernel.access.issuer.sql`, on SQLite or PostgreSQL); so do the tests, with
the same SQL repositories on a SQLite file.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


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
