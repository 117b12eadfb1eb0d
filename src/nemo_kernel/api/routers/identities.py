"""``/api/v1/users`` and ``/api/v1/clients``: the built-in issuer's identities (admin role, see access.policy).

Shaped like Keycloak's admin API: create with POST, partial update (``enabled``, ``roles``) with PATCH, DELETE, and
``POST /clients/{id}/client-secret`` to regenerate a secret. Password hashes and secret hashes never leave the
store; a client secret is in the response of the call that created or regenerated it, and nowhere else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from nemo_kernel.access.issuer import MIN_PASSWORD_LENGTH, Client, IdentityAdmin, IssuedClient, User
from nemo_kernel.api.body import read_document, require_mapping
from nemo_kernel.api.errors import ApiError
from nemo_kernel.api.openapi import request_body
from nemo_kernel.api.security import ApiAccess

users = APIRouter(prefix="/users", tags=["identity"])
clients = APIRouter(prefix="/clients", tags=["identity"])

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
Role = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
Grant = Literal["client_credentials", "password", "refresh_token"]


class _Body(BaseModel):
    # Strict: ``enabled: 0`` or ``"no"`` is a mistake to name, not a value to guess (it would lock an account out).
    model_config = ConfigDict(extra="forbid", strict=True)


class NewUser(_Body):
    """A user to create; the password is hashed (Argon2id) and never stored or echoed."""

    username: Name
    password: SecretStr = Field(min_length=MIN_PASSWORD_LENGTH, max_length=1024)
    roles: list[Role] = []
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")


class NewClient(_Body):
    """A confidential client to create; its secret is generated and returned once."""

    client_id: Name
    roles: list[Role] = []
    grant_types: list[Grant] = Field(default=["client_credentials"], min_length=1)


class IdentityChange(_Body):
    """A partial update: fields left out keep their value."""

    enabled: bool | None = None
    roles: list[Role] | None = None


class UserView(BaseModel):
    """A user as the API shows it (no password hash)."""

    id: str
    username: str
    enabled: bool
    roles: list[str]
    client_roles: dict[str, list[str]]
    email: str | None
    created_at: datetime


class ClientView(BaseModel):
    """A client as the API shows it (no secret hash)."""

    id: str
    client_id: str
    enabled: bool
    roles: list[str]
    client_roles: dict[str, list[str]]
    grant_types: list[str]
    created_at: datetime


class IssuedClientView(ClientView):
    """A client with its secret in clear: only in the answer that created or regenerated it."""

    secret: str


def _user_view(user: User) -> UserView:
    return UserView(
        id=user.id,
        username=user.username,
        enabled=user.enabled,
        roles=sorted(user.realm_roles),
        client_roles={c: sorted(r) for c, r in user.client_roles.items()},
        email=user.email,
        created_at=datetime.fromtimestamp(user.created_at, UTC),
    )


def _client_view(client: Client) -> ClientView:
    return ClientView(
        id=client.id,
        client_id=client.client_id,
        enabled=client.enabled,
        roles=sorted(client.realm_roles),
        client_roles={c: sorted(r) for c, r in client.client_roles.items()},
        grant_types=sorted(client.grant_types),
        created_at=datetime.fromtimestamp(client.created_at, UTC),
    )


def _issued_view(issued: IssuedClient) -> IssuedClientView:
    return IssuedClientView(**_client_view(issued.client).model_dump(), secret=issued.secret)


def _admin(request: Request) -> IdentityAdmin:
    access: ApiAccess = request.app.state.access
    if access.realm is None:
        raise ApiError(404, "not_found", f"users and clients are managed by the external issuer {access.issuer}")
    return IdentityAdmin(access.realm.users, access.realm.clients, access.realm.hasher)


M = TypeVar("M", bound=_Body)


async def _body(request: Request, model: type[M], what: str) -> M:
    return model.model_validate(require_mapping(await read_document(request), what))


# --- users ---------------------------------------------------------------------------------------------------------


@users.get("", response_model=list[UserView])
async def list_users(request: Request) -> list[UserView]:
    """Every user of the realm."""
    return [_user_view(u) for u in await _admin(request).list_users()]


@users.post("", status_code=201, response_model=UserView, openapi_extra=request_body(NewUser))
async def add_user(request: Request) -> UserView:
    """Create a user; 409 if the name is taken, 422 naming the field at fault."""
    admin = _admin(request)
    new = await _body(request, NewUser, "a user")
    user = await admin.add_user(new.username, new.password.get_secret_value(), roles=new.roles, email=new.email)
    return _user_view(user)


@users.get("/{username}", response_model=UserView)
async def get_user(username: str, request: Request) -> UserView:
    """One user; 404 if unknown."""
    return _user_view(await _admin(request).get_user(username))


@users.patch("/{username}", response_model=UserView, openapi_extra=request_body(IdentityChange))
async def update_user(username: str, request: Request) -> UserView:
    """Enable or disable a user (its tokens stop working at once) and/or replace its roles; 409 ``last_admin`` if
    that would leave no enabled user or client with the admin role."""
    admin = _admin(request)
    change = await _body(request, IdentityChange, "a user change")
    return _user_view(await admin.update_user(username, enabled=change.enabled, roles=change.roles))


@users.delete("/{username}", status_code=204)
async def remove_user(username: str, request: Request) -> Response:
    """Delete a user; its tokens stop working at once. 409 ``last_admin`` if it is the last enabled admin."""
    await _admin(request).remove_user(username)
    return Response(status_code=204)


# --- clients -------------------------------------------------------------------------------------------------------


@clients.get("", response_model=list[ClientView])
async def list_clients(request: Request) -> list[ClientView]:
    """Every client of the realm."""
    return [_client_view(c) for c in await _admin(request).list_clients()]


@clients.post("", status_code=201, response_model=IssuedClientView, openapi_extra=request_body(NewClient))
async def add_client(request: Request) -> IssuedClientView:
    """Create a confidential client; the answer carries its secret, this one time."""
    admin = _admin(request)
    new = await _body(request, NewClient, "a client")
    return _issued_view(await admin.add_client(new.client_id, roles=new.roles, grant_types=new.grant_types))


@clients.get("/{client_id}", response_model=ClientView)
async def get_client(client_id: str, request: Request) -> ClientView:
    """One client; 404 if unknown."""
    return _client_view(await _admin(request).get_client(client_id))


@clients.patch("/{client_id}", response_model=ClientView, openapi_extra=request_body(IdentityChange))
async def update_client(client_id: str, request: Request) -> ClientView:
    """Enable or disable a client (its tokens stop working at once) and/or replace its roles; 409 ``last_admin`` if
    that would leave no enabled user or client with the admin role."""
    admin = _admin(request)
    change = await _body(request, IdentityChange, "a client change")
    return _client_view(await admin.update_client(client_id, enabled=change.enabled, roles=change.roles))


@clients.post("/{client_id}/client-secret", response_model=IssuedClientView)
async def reset_client_secret(client_id: str, request: Request) -> IssuedClientView:
    """Generate a new secret (Keycloak's ``client-secret``); the old one stops working, tokens already issued don't."""
    return _issued_view(await _admin(request).reset_client_secret(client_id))


@clients.delete("/{client_id}", status_code=204)
async def remove_client(client_id: str, request: Request) -> Response:
    """Delete a client; its tokens stop working at once. 409 ``last_admin`` if it is the last enabled admin."""
    await _admin(request).remove_client(client_id)
    return Response(status_code=204)
