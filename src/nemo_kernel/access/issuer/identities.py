"""Users, clients and revoked token ids of the built-in issuer, behind small repository protocols.

In-memory implementations live here; the store provides SQL ones with the same protocols.
"""

from __future__ import annotations

import time
import uuid
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


class UserRepository(Protocol):
    """Storage of users by username."""

    async def get_user(self, username: str) -> User | None:
        """The user, or ``None``."""
        ...

    async def save_user(self, user: User) -> None:
        """Insert or replace by username."""
        ...

    async def delete_user(self, username: str) -> bool:
        """Delete; whether it existed."""
        ...

    async def list_users(self) -> list[User]:
        """All users by username."""
        ...


class ClientRepository(Protocol):
    """Storage of clients by client id."""

    async def get_client(self, client_id: str) -> Client | None:
        """The client, or ``None``."""
        ...

    async def save_client(self, client: Client) -> None:
        """Insert or replace by client id."""
        ...

    async def delete_client(self, client_id: str) -> bool:
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


class InMemoryUserRepository:
    """Users in a dict."""

    def __init__(self) -> None:
        self._users: dict[str, User] = {}

    async def get_user(self, username: str) -> User | None:
        """The user, or ``None``."""
        return self._users.get(username)

    async def save_user(self, user: User) -> None:
        """Insert or replace."""
        self._users[user.username] = user

    async def delete_user(self, username: str) -> bool:
        """Delete; whether it existed."""
        return self._users.pop(username, None) is not None

    async def list_users(self) -> list[User]:
        """All users by username."""
        return [self._users[k] for k in sorted(self._users)]


class InMemoryClientRepository:
    """Clients in a dict."""

    def __init__(self) -> None:
        self._clients: dict[str, Client] = {}

    async def get_client(self, client_id: str) -> Client | None:
        """The client, or ``None``."""
        return self._clients.get(client_id)

    async def save_client(self, client: Client) -> None:
        """Insert or replace."""
        self._clients[client.client_id] = client

    async def delete_client(self, client_id: str) -> bool:
        """Delete; whether it existed."""
        return self._clients.pop(client_id, None) is not None

    async def list_clients(self) -> list[Client]:
        """All clients by client id."""
        return [self._clients[k] for k in sorted(self._clients)]


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
