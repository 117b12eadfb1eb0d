"""``/api/v1/modules``: the directory of bus module keys (list, register, rotate, revoke; admin writes).

A registration also declares the module's ``subscriptions``: the routing key patterns it reads. The control plane
seals events only for the modules whose subscriptions match, the in-process bus refuses other bindings, and
``nemo bus provision --from-directory`` sets the same patterns as the broker's read permissions.

Writes are the control plane's module commands (:mod:`nemo_kernel.orchestrator.commands.modules`): the key
directory commits them and refreshes its in-memory copy before answering, so a revocation refuses the module's next
message in this process, and other replicas within their reload interval.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator, Field, field_validator

from nemo_kernel.api.body import read_document, require_mapping
from nemo_kernel.api.deps import control_plane
from nemo_kernel.api.openapi import request_body
from nemo_kernel.bus.subscriptions import MAX_SUBSCRIPTIONS, validate_pattern
from nemo_kernel.domain import Model, Name
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.orchestrator.commands.modules import invalid_keys, raw_public_key
from nemo_kernel.orchestrator.views import ModuleEntry

router = APIRouter(prefix="/modules", tags=["modules"])
Plane = Annotated[ControlPlane, Depends(control_plane)]
Pattern = Annotated[str, AfterValidator(validate_pattern)]


class PublicKeys(Model):
    """A module's public keys as ``ModuleKeys.to_dict`` (and ``nemo module keygen``) give them."""

    module: Name | None = None
    key_id: str | None = None
    signing_public: str = Field(description="Ed25519 public key, 32 bytes in base64url")
    encryption_public: str = Field(description="X25519 public key, 32 bytes in base64url")
    revoked: bool = Field(default=False, description="accepted for round trips of to_dict; must be false")
    created_at: float | None = Field(default=None, description="accepted for round trips of to_dict; ignored")
    subscriptions: list[Pattern] | None = Field(
        default=None,
        max_length=MAX_SUBSCRIPTIONS,
        description="routing key patterns the module reads (AMQP topic patterns: words of a-z 0-9 _ -, '*' one "
        "word, '#' any words); replaces the declared ones; omitted: unchanged (a new module reads only its own "
        "namespace, <module>.#)",
    )

    @field_validator("signing_public", "encryption_public")
    @classmethod
    def _raw_key(cls, value: str) -> str:
        raw_public_key(value)
        return value

    @field_validator("revoked")
    @classmethod
    def _live(cls, value: bool) -> bool:
        if value:
            raise ValueError("a revoked key cannot be registered")
        return value


class RotateRequest(PublicKeys):
    """The new current keys of a module, and whether its older keys are revoked at once."""

    revoke_previous: bool = False


class RevokeRequest(Model):
    """One key to revoke; without ``key_id``, every key of the module."""

    key_id: str | None = None


class Revoked(Model):
    """What a revocation changed."""

    module: str
    revoked: list[str]


async def _body(request: Request, model: type[Model], *, optional: bool = False) -> Any:
    raw = await request.body()
    if optional and not raw.strip():
        return model.model_validate({})
    return model.model_validate(require_mapping(await read_document(request), "the request body"))


@router.get("", response_model=list[ModuleEntry])
def list_modules(plane: Plane) -> list[ModuleEntry]:
    """Every module with its keys: key ids, which one is current, which are revoked, when created."""
    return plane.views.modules.every()


@router.get("/{name}", response_model=ModuleEntry)
def get_module(name: str, plane: Plane) -> ModuleEntry:
    """One module; 404 if it has no keys."""
    return plane.views.modules.get(name)


@router.post("", status_code=201, response_model=ModuleEntry, openapi_extra=request_body(PublicKeys))
async def register_module(request: Request, plane: Plane) -> ModuleEntry:
    """Register a module's public keys (they become its current key) and, when given, its subscriptions.

    409 if the keys belong to another module."""
    body: PublicKeys = await _body(request, PublicKeys)
    module = body.module
    if module is None:
        raise invalid_keys("module", "is required")
    await run_in_threadpool(
        lambda: plane.commands.modules.register(
            module,
            body.signing_public,
            body.encryption_public,
            key_id=body.key_id,
            subscriptions=body.subscriptions,
        )
    )
    return plane.views.modules.get(module)


@router.post("/{name}/rotate", response_model=ModuleEntry, openapi_extra=request_body(RotateRequest))
async def rotate_module(name: str, request: Request, plane: Plane) -> ModuleEntry:
    """Make new public keys the module's current ones; ``revoke_previous`` revokes its older keys at once.

    404 for an unknown module, 409 when the keys are revoked or belong to another module.
    """
    body: RotateRequest = await _body(request, RotateRequest)
    await run_in_threadpool(
        lambda: plane.commands.modules.rotate(
            name,
            body.signing_public,
            body.encryption_public,
            stated_module=body.module,
            key_id=body.key_id,
            revoke_previous=body.revoke_previous,
            subscriptions=body.subscriptions,
        )
    )
    return plane.views.modules.get(name)


@router.post("/{name}/revoke", response_model=Revoked, openapi_extra=request_body(RevokeRequest, required=False))
async def revoke_module(name: str, request: Request, plane: Plane) -> Revoked:
    """Revoke one key (``{"key_id": ...}``) or every key of the module (empty body); effective at once."""
    body: RevokeRequest = await _body(request, RevokeRequest, optional=True)
    revoked = await run_in_threadpool(plane.commands.modules.revoke, name, body.key_id)
    return Revoked(module=name, revoked=revoked)
