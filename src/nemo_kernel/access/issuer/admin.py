"""Identity management for ``nemo user ...``, ``nemo client ...`` and ``/api/v1/users``.

Secrets are hashed on the way in; a generated client secret is returned once, by the call that created it.
Every change is one atomic repository update (hashing done before it, so the slow Argon2 holds no lock), and no
change may leave the realm without an enabled user or client holding the admin role (:class:`LastAdmin`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

from nemo_kernel.access.issuer.hashing import SecretHasher, new_secret
from nemo_kernel.access.issuer.identities import (
    Client,
    ClientRepository,
    IdentityConflict,
    IdentityNotFound,
    User,
    UserRepository,
)
from nemo_kernel.access.issuer.realm import role_set
from nemo_kernel.access.policy import ADMIN

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD_LENGTH = 8


class InvalidIdentity(ValueError):
    """A malformed name or a too-weak password (HTTP 422, naming ``field``; the message never holds a password)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class IssuedClient:
    """A client just created (or whose secret was reset), with its secret in clear, shown this one time."""

    client: Client
    secret: str

    def __repr__(self) -> str:
        return f"IssuedClient(client={self.client!r}, secret='***')"


def _check_name(field: str, name: str) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidIdentity(field, f"invalid name {name!r}: letters, digits and . _ @ - only, at most 64")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidIdentity("password", f"password must have at least {MIN_PASSWORD_LENGTH} characters")


def _client_roles(roles: Mapping[str, Iterable[str]] | None) -> dict[str, frozenset[str]]:
    return {client: role_set(r) for client, r in (roles or {}).items()}


P = TypeVar("P", User, Client)


def _changed(enabled: bool | None, roles: Iterable[str] | None) -> Callable[[P], P]:
    """A PATCH as a function of the stored user or client: the fields left out keep their (current) value."""
    new_roles = None if roles is None else role_set(roles)

    def change(principal: P) -> P:
        return replace(
            principal,
            enabled=principal.enabled if enabled is None else enabled,
            realm_roles=principal.realm_roles if new_roles is None else new_roles,
        )

    return change


class IdentityAdmin:
    """Add, remove, disable and list the users and clients of a realm."""

    def __init__(self, users: UserRepository, clients: ClientRepository, hasher: SecretHasher | None = None) -> None:
        self._users = users
        self._clients = clients
        self._hasher = hasher or SecretHasher()

    async def _hash(self, secret: str) -> str:
        # Argon2id is slow on purpose (tens of ms, 64 MiB): off the event loop, so the API keeps serving.
        return await asyncio.to_thread(self._hasher.hash, secret)

    async def add_user(
        self,
        username: str,
        password: str,
        *,
        roles: Iterable[str] = (),
        client_roles: Mapping[str, Iterable[str]] | None = None,
        email: str | None = None,
    ) -> User:
        """Create a user; :class:`IdentityConflict` if the name is taken."""
        _check_name("username", username)
        _check_password(password)
        if await self._users.get_user(username) is not None:  # spares the hashing; the INSERT is what decides
            raise IdentityConflict(f"user {username!r} exists")
        user = User(
            username=username,
            password_hash=await self._hash(password),
            realm_roles=role_set(roles),
            client_roles=_client_roles(client_roles),
            email=email,
        )
        await self._users.create_user(user)
        return user

    async def remove_user(self, username: str) -> None:
        """Delete a user; their tokens become inactive at once (introspection checks the account).
        :class:`LastAdmin` if it is the last enabled holder of the admin role."""
        if not await self._users.delete_user(username, admin_role=ADMIN):
            raise IdentityNotFound(f"no user {username!r}")

    async def update_user(
        self, username: str, *, enabled: bool | None = None, roles: Iterable[str] | None = None
    ) -> User:
        """Change whether a user is enabled and/or its realm roles, atomically. A disabled user's tokens are
        inactive at once; new roles take effect in tokens issued from now on. :class:`LastAdmin` if it would leave
        no enabled admin."""
        return await self._users.update_user(username, _changed(enabled, roles), admin_role=ADMIN)

    async def set_password(self, username: str, password: str) -> None:
        """Replace a user's password."""
        _check_password(password)
        password_hash = await self._hash(password)
        await self._users.update_user(username, lambda user: replace(user, password_hash=password_hash))

    async def get_user(self, username: str) -> User:
        """One user; :class:`IdentityNotFound` if there is none."""
        user = await self._users.get_user(username)
        if user is None:
            raise IdentityNotFound(f"no user {username!r}")
        return user

    async def list_users(self) -> list[User]:
        """All users."""
        return await self._users.list_users()

    async def add_client(
        self,
        client_id: str,
        *,
        roles: Iterable[str] = (),
        client_roles: Mapping[str, Iterable[str]] | None = None,
        grant_types: Iterable[str] = ("client_credentials",),
        secret: str | None = None,
    ) -> IssuedClient:
        """Create a confidential client; its secret (generated unless given) is in the result, and only there."""
        _check_name("client_id", client_id)
        if await self._clients.get_client(client_id) is not None:  # spares the hashing; the INSERT decides
            raise IdentityConflict(f"client {client_id!r} exists")
        clear = secret or new_secret()
        client = Client(
            client_id=client_id,
            secret_hash=await self._hash(clear),
            grant_types=frozenset(grant_types),
            realm_roles=role_set(roles),
            client_roles=_client_roles(client_roles),
        )
        await self._clients.create_client(client)
        return IssuedClient(client, clear)

    async def reset_client_secret(self, client_id: str) -> IssuedClient:
        """Give a client a new generated secret; the old one stops working."""
        clear = new_secret()
        secret_hash = await self._hash(clear)
        updated = await self._clients.update_client(client_id, lambda client: replace(client, secret_hash=secret_hash))
        return IssuedClient(updated, clear)

    async def remove_client(self, client_id: str) -> None:
        """Delete a client; its tokens become inactive. :class:`LastAdmin` if it is the last enabled admin."""
        if not await self._clients.delete_client(client_id, admin_role=ADMIN):
            raise IdentityNotFound(f"no client {client_id!r}")

    async def update_client(
        self, client_id: str, *, enabled: bool | None = None, roles: Iterable[str] | None = None
    ) -> Client:
        """Change whether a client is enabled and/or its service account's realm roles, atomically.
        :class:`LastAdmin` if it would leave no enabled admin."""
        return await self._clients.update_client(client_id, _changed(enabled, roles), admin_role=ADMIN)

    async def set_client_enabled(self, client_id: str, enabled: bool) -> Client:
        """Disable (or re-enable) a client; its tokens are inactive while it is disabled."""
        return await self.update_client(client_id, enabled=enabled)

    async def get_client(self, client_id: str) -> Client:
        """One client; :class:`IdentityNotFound` if there is none."""
        client = await self._clients.get_client(client_id)
        if client is None:
            raise IdentityNotFound(f"no client {client_id!r}")
        return client

    async def list_clients(self) -> list[Client]:
        """All clients."""
        return await self._clients.list_clients()

    async def ensure_admin_client(self, client_id: str = "nemo-admin") -> IssuedClient | None:
        """For ``nemo up``'s first start: create the admin client if missing and return it with its secret;
        ``None`` when it already exists (its secret cannot be shown again; reset it to get a new one)."""
        if await self._clients.get_client(client_id) is not None:
            return None
        return await self.add_client(
            client_id, roles=[ADMIN], grant_types=("client_credentials", "password", "refresh_token")
        )
