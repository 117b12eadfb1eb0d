"""Module identities: who a bus participant is, its private keys, and the directory of everyone's public keys.

A module (``orchestrator``, ``ppef``, a cluster agent, a plug-in...) owns a :class:`ModuleIdentity`: an Ed25519
signing key and an X25519 encryption key, named by a ``key_id`` derived from both public keys. The control plane
keeps a :class:`KeyDirectory` of :class:`ModuleKeys` (public halves only): registering, rotating and revoking keys
are admin operations built on this protocol (the in-memory one here; a store-backed one lives with the store).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nemo_kernel.bus import crypto
from nemo_kernel.bus.subscriptions import BUILTIN_SUBSCRIPTIONS, readers, validate_subscriptions


class UnknownKey(LookupError):
    """The directory has no such module or key."""


class KeyConflict(ValueError):
    """The change contradicts the directory: a revoked key made current, a key id held by another module."""


def key_id_of(signing_public: bytes, encryption_public: bytes) -> str:
    """A short, stable name of a key pair: 16 hex digits of SHA-256 over both raw public keys."""
    return hashlib.sha256(signing_public + encryption_public).hexdigest()[:16]


@dataclass(frozen=True)
class ModuleKeys:
    """The public half of a module identity, as the directory knows it."""

    module: str
    key_id: str
    signing_public: bytes
    encryption_public: bytes
    revoked: bool = False
    created_at: float = field(default_factory=time.time)

    @cached_property
    def _verifier(self) -> crypto.Ed25519Verifier:
        # Built once per directory entry, not per message.
        return crypto.Ed25519Verifier(self.signing_public)

    def verifier(self) -> crypto.Ed25519Verifier:
        """The Ed25519 public key that checks this module's signatures."""
        return self._verifier

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (keys in base64url)."""
        return {
            "module": self.module,
            "key_id": self.key_id,
            "signing_public": crypto.b64encode(self.signing_public),
            "encryption_public": crypto.b64encode(self.encryption_public),
            "revoked": self.revoked,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ModuleKeys:
        """Inverse of :meth:`to_dict`; the key id is recomputed and must match."""
        signing = crypto.b64decode(str(data["signing_public"]))
        encryption = crypto.b64decode(str(data["encryption_public"]))
        key_id = key_id_of(signing, encryption)
        if data.get("key_id", key_id) != key_id:
            raise ValueError("key_id does not match the public keys")
        created = data.get("created_at")
        return cls(
            module=str(data["module"]),
            key_id=key_id,
            signing_public=signing,
            encryption_public=encryption,
            revoked=bool(data.get("revoked", False)),
            created_at=float(created) if isinstance(created, int | float) else time.time(),
        )


@dataclass(frozen=True)
class ModuleIdentity:
    """A module's private keys. Keep it in the module's process; only :meth:`public` goes to the directory."""

    module: str
    signing_key: Ed25519PrivateKey = field(repr=False)
    encryption_key: X25519PrivateKey = field(repr=False)

    @classmethod
    def generate(cls, module: str) -> ModuleIdentity:
        """Fresh keys for ``module``."""
        return cls(module, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    # Cached: each is asked for several times per message, and deriving a public key is not free.
    @cached_property
    def signing_public(self) -> bytes:
        """Raw Ed25519 public key."""
        return crypto.ed25519_public_to_raw(self.signing_key.public_key())

    @cached_property
    def encryption_public(self) -> bytes:
        """Raw X25519 public key."""
        return crypto.x25519_public_to_raw(self.encryption_key.public_key())

    @cached_property
    def signer(self) -> crypto.Ed25519Signer:
        """The signing key, prepared once for signing each message."""
        return crypto.Ed25519Signer(crypto.ed25519_private_to_raw(self.signing_key))

    @cached_property
    def key_id(self) -> str:
        """Name of this key pair in the directory."""
        return key_id_of(self.signing_public, self.encryption_public)

    def public(self) -> ModuleKeys:
        """What to register in the directory."""
        return ModuleKeys(self.module, self.key_id, self.signing_public, self.encryption_public)

    def save(self, path: Path) -> None:
        """Write the identity (PKCS#8 PEM private keys in a small JSON document) to a new 0600 file.

        The file is created with mode 0600 before any secret is written, so there is no window where it is readable.
        """
        document = {
            "module": self.module,
            "key_id": self.key_id,
            "signing_key": self.signing_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
            "encryption_key": self.encryption_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=2)
        os.chmod(tmp, 0o600)  # O_CREAT's mode is filtered by the umask; be explicit
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ModuleIdentity:
        """Read an identity written by :meth:`save`; refuses a file readable by group or others."""
        if path.stat().st_mode & 0o077:
            raise PermissionError(f"{path} must not be readable by group or others (chmod 600)")
        document = json.loads(path.read_text())
        signing = serialization.load_pem_private_key(document["signing_key"].encode(), password=None)
        encryption = serialization.load_pem_private_key(document["encryption_key"].encode(), password=None)
        if not isinstance(signing, Ed25519PrivateKey) or not isinstance(encryption, X25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 and an X25519 key")
        identity = cls(str(document["module"]), signing, encryption)
        if document.get("key_id", identity.key_id) != identity.key_id:
            raise ValueError(f"{path}: key_id does not match the keys")
        return identity

    @classmethod
    def load_or_create(cls, module: str, path: Path) -> ModuleIdentity:
        """The identity in ``path``, generated and saved there first if the file does not exist."""
        if path.exists():
            identity = cls.load(path)
            if identity.module != module:
                raise ValueError(f"{path} holds the identity of {identity.module!r}, not {module!r}")
            return identity
        identity = cls.generate(module)
        identity.save(path)
        return identity


class KeyDirectory(Protocol):
    """The public keys of every module. Lookups sit on the message path: implementations answer from memory."""

    def get(self, module: str, key_id: str) -> ModuleKeys:
        """One key of a module, revoked or not; raises :class:`UnknownKey`."""

    def current(self, module: str) -> ModuleKeys:
        """The newest non-revoked key of a module (what senders encrypt to); raises :class:`UnknownKey`."""

    def register(self, keys: ModuleKeys) -> None:
        """Add a key (idempotent for the same key; a module may hold several while it rotates)."""

    def rotate(self, keys: ModuleKeys, *, revoke_previous: bool = False) -> None:
        """Make ``keys`` the module's current key; older keys stay valid for in-flight messages unless revoked."""

    def revoke(self, module: str, key_id: str | None = None) -> list[str]:
        """Revoke one key, or every key of the module when ``key_id`` is None; returns the revoked key ids."""

    def list(self, module: str | None = None) -> list[ModuleKeys]:
        """Every key (of one module), oldest first."""


class InMemoryKeyDirectory:
    """A :class:`KeyDirectory` in a dict, thread-safe; what tests and modules' own copies of the directory use.

    It also keeps each module's declared subscriptions (``subscriptions``: module -> patterns), so it can serve as
    the in-process bus's :class:`~nemo_kernel.bus.subscriptions.ReadPermissions`.
    """

    def __init__(
        self, keys: Iterable[ModuleKeys] = (), subscriptions: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self._keys: dict[str, dict[str, ModuleKeys]] = {}
        self._subscriptions: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        for k in keys:
            self.register(k)
        for module, patterns in (subscriptions or {}).items():
            self.declare(module, patterns)

    def declare(self, module: str, patterns: Iterable[str]) -> None:
        """Replace the routing key patterns ``module`` subscribes to (validated; see :mod:`..subscriptions`)."""
        self._subscriptions[module] = validate_subscriptions(patterns)

    def subscriptions(self, module: str) -> tuple[str, ...]:
        """What ``module`` declared (a built-in module's defaults if it declared nothing)."""
        return self._subscriptions.get(module, BUILTIN_SUBSCRIPTIONS.get(module, ()))

    def readers(self, routing_key: str) -> list[str]:
        """Modules with a live key allowed to read ``routing_key``: the recipients of an event, sorted."""
        live = [m for m, keys in self._keys.items() if any(not k.revoked for k in keys.values())]
        return readers(routing_key, {m: self.subscriptions(m) for m in live})

    def get(self, module: str, key_id: str) -> ModuleKeys:
        """One key of a module, revoked or not."""
        try:
            return self._keys[module][key_id]
        except KeyError:
            raise UnknownKey(f"no key {key_id!r} for module {module!r}") from None

    def current(self, module: str) -> ModuleKeys:
        """The newest non-revoked key of a module."""
        live = [k for k in self._keys.get(module, {}).values() if not k.revoked]
        if not live:
            raise UnknownKey(f"module {module!r} has no valid key")
        return live[-1]

    def register(self, keys: ModuleKeys) -> None:
        """Add a key; re-registering a known key changes nothing (a revoked key stays revoked)."""
        with self._lock:
            known = self._keys.setdefault(keys.module, {})
            if keys.key_id not in known:
                known[keys.key_id] = keys

    def rotate(self, keys: ModuleKeys, *, revoke_previous: bool = False) -> None:
        """Make ``keys`` current (dicts keep insertion order: move it last)."""
        with self._lock:
            known = self._keys.setdefault(keys.module, {})
            existing = known.get(keys.key_id)
            if existing is not None and existing.revoked:
                raise KeyConflict(f"key {keys.key_id} of {keys.module!r} is revoked and cannot become current")
            known.pop(keys.key_id, None)
            if revoke_previous:
                for key_id, old in list(known.items()):
                    known[key_id] = replace(old, revoked=True)
            known[keys.key_id] = existing or keys

    def revoke(self, module: str, key_id: str | None = None) -> list[str]:
        """Mark keys revoked; envelopes signed with them are refused from now on."""
        with self._lock:
            known = self._keys.get(module, {})
            targets = list(known) if key_id is None else [key_id]
            revoked = []
            for kid in targets:
                if kid not in known:
                    raise UnknownKey(f"no key {kid!r} for module {module!r}")
                known[kid] = replace(known[kid], revoked=True)
                revoked.append(kid)
            return revoked

    def list(self, module: str | None = None) -> list[ModuleKeys]:
        """Every key, grouped by module, oldest first within a module."""
        modules = [module] if module is not None else sorted(self._keys)
        return [k for m in modules for k in self._keys.get(m, {}).values()]
