"""Module key commands: register, rotate and revoke the bus keys of a module, and declare what it reads.

Writes go through the key directory, which commits them and refreshes its in-memory copy before answering: a
revocation refuses the module's next message in this process, and other replicas within their reload interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from nemo_kernel.bus import KeyConflict, ModuleKeys, UnknownKey
from nemo_kernel.bus.crypto import b64decode
from nemo_kernel.bus.identity import key_id_of
from nemo_kernel.domain.errors import ApiError
from nemo_kernel.orchestrator.identities import ORCHESTRATOR
from nemo_kernel.orchestrator.key_directory import StoredKeyDirectory

RAW_KEY_SIZE = 32
T = TypeVar("T")


def raw_public_key(value: str) -> bytes:
    """A public key given in base64url, as its raw 32 bytes; ``ValueError`` saying what is wrong otherwise."""
    try:
        raw = b64decode(value)
    except ValueError:
        raise ValueError("not base64url") from None
    if len(raw) != RAW_KEY_SIZE:
        raise ValueError(f"must decode to {RAW_KEY_SIZE} bytes, not {len(raw)}")
    return raw


def invalid_keys(field: str, message: str) -> ApiError:
    """The 422 refusal of module keys, naming the field at fault."""
    return ApiError(422, "invalid", f"invalid module keys: {field}: {message}", [{"field": field, "message": message}])


def module_keys(
    module: str,
    signing_public: str,
    encryption_public: str,
    *,
    stated_module: str | None = None,
    stated_key_id: str | None = None,
) -> ModuleKeys:
    """The directory entry for ``module``; 422 naming the field when what the caller states contradicts it."""
    if stated_module is not None and stated_module != module:
        raise invalid_keys("module", f"is {stated_module!r} but the request is for module {module!r}")
    signing, encryption = raw_public_key(signing_public), raw_public_key(encryption_public)
    key_id = key_id_of(signing, encryption)
    if stated_key_id is not None and stated_key_id != key_id:
        raise invalid_keys("key_id", f"does not match the public keys (they give {key_id})")
    return ModuleKeys(module, key_id, signing, encryption)


class ModuleCommands:
    """Changes to the directory of module keys; the control plane's own identity is not writable from outside."""

    def __init__(self, directory: StoredKeyDirectory) -> None:
        self._directory = directory

    def register(
        self,
        module: str,
        signing_public: str,
        encryption_public: str,
        *,
        key_id: str | None = None,
        subscriptions: Sequence[str] | None = None,
    ) -> None:
        """Make the keys the module's current ones (registering it) and, when given, replace its subscriptions.

        409 for the control plane's own module or keys that belong to another module."""
        _writable(module)
        keys = module_keys(module, signing_public, encryption_public, stated_key_id=key_id)
        _change(lambda: self._directory.register(keys, subscriptions=subscriptions))

    def rotate(
        self,
        module: str,
        signing_public: str,
        encryption_public: str,
        *,
        stated_module: str | None = None,
        key_id: str | None = None,
        revoke_previous: bool = False,
        subscriptions: Sequence[str] | None = None,
    ) -> None:
        """Make new keys the current ones of a known module; ``revoke_previous`` revokes its older keys at once.

        404 for an unknown module, 409 when the keys are revoked or belong to another module."""
        keys = module_keys(module, signing_public, encryption_public, stated_module=stated_module, stated_key_id=key_id)
        _writable(module)
        if not self._directory.records(module):
            raise unknown_module(module)
        _change(lambda: self._directory.rotate(keys, revoke_previous=revoke_previous, subscriptions=subscriptions))

    def revoke(self, module: str, key_id: str | None = None) -> list[str]:
        """Revoke one key, or every key of the module; returns the key ids revoked. 404 for an unknown key."""
        _writable(module)
        return _change(lambda: self._directory.revoke(module, key_id))


def unknown_module(module: str) -> ApiError:
    """The 404 for a module without keys."""
    return ApiError(404, "not_found", f"module {module!r} not found", {"kind": "module", "name": module})


def _writable(module: str) -> None:
    if module == ORCHESTRATOR:
        # The control plane owns this identity: a key set from outside would not match its private key file.
        raise ApiError(
            409,
            "conflict",
            f"module {module!r} is the control plane's own; replace its identity file and restart to change its keys",
        )


def _change(change: Callable[[], T]) -> T:
    try:
        return change()
    except KeyConflict as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    except UnknownKey as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
