"""Signing keys of the built-in issuer, their storage, and rotation.

Rotation follows what verifiers need: :meth:`KeyRing.rotate` makes a new key the signer at once, while older
keys stay in the JWKS (so tokens they signed keep verifying) until :meth:`KeyRing.retire` removes them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from nemo_kernel.access.errors import InvalidToken

SigningAlgorithm = Literal["RS256", "ES256"]


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One signing key: private key as PKCS#8 PEM, its ``kid``, and whether it still verifies (not retired)."""

    kid: str
    algorithm: SigningAlgorithm
    private_pem: bytes
    created_at: float
    retired_at: float | None = None

    def __repr__(self) -> str:  # never print private key material
        return f"SigningKey(kid={self.kid!r}, algorithm={self.algorithm!r}, retired_at={self.retired_at!r})"

    @classmethod
    def generate(cls, algorithm: SigningAlgorithm = "RS256") -> SigningKey:
        """A fresh key: RSA 2048 for RS256, P-256 for ES256."""
        private: PrivateKeyTypes
        if algorithm == "RS256":
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            private = ec.generate_private_key(ec.SECP256R1())
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cls(kid=uuid.uuid4().hex, algorithm=algorithm, private_pem=pem, created_at=time.time())

    def private_key(self) -> PrivateKeyTypes:
        """The private key object (for signing)."""
        return serialization.load_pem_private_key(self.private_pem, password=None)

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK with ``kid``, ``alg`` and ``use: sig``."""
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        public = self.private_key().public_key()
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(public))
        jwk.update(kid=self.kid, alg=self.algorithm, use="sig")
        return jwk


class KeyRepository(Protocol):
    """Storage of signing keys (:class:`nemo_kernel.access.issuer.sql.SqlKeyRepository` in the store)."""

    async def list_keys(self) -> list[SigningKey]:
        """All keys, retired ones included, oldest first."""
        ...

    async def save_key(self, key: SigningKey) -> None:
        """Insert or replace a key by ``kid``."""
        ...


class KeyRing:
    """The issuer's view of its keys: which one signs, which ones verify. Also a verifier ``KeySource``."""

    def __init__(self, repository: KeyRepository, algorithm: SigningAlgorithm = "RS256") -> None:
        self._repository = repository
        self._algorithm = algorithm
        self._lock = asyncio.Lock()
        self._loaded: list[SigningKey] | None = None
        # Parsing PEM costs more than signing; keep parsed key objects per kid.
        self._private: dict[str, PrivateKeyTypes] = {}
        self._public: dict[str, jwt.PyJWK] = {}

    async def _keys(self) -> list[SigningKey]:
        if self._loaded is None:
            async with self._lock:
                if self._loaded is None:
                    keys = await self._repository.list_keys()
                    if not any(k.retired_at is None for k in keys):
                        first = SigningKey.generate(self._algorithm)
                        await self._repository.save_key(first)
                        keys = [*keys, first]
                    self._loaded = keys
        return self._loaded

    async def signing_key(self) -> tuple[SigningKey, PrivateKeyTypes]:
        """The newest non-retired key and its private key object."""
        key = [k for k in await self._keys() if k.retired_at is None][-1]
        private = self._private.get(key.kid)
        if private is None:
            private = self._private[key.kid] = key.private_key()
        return key, private

    async def rotate(self, algorithm: SigningAlgorithm | None = None) -> SigningKey:
        """Make a new key the signer; the previous keys keep verifying until retired."""
        await self._keys()
        key = SigningKey.generate(algorithm or self._algorithm)
        await self._repository.save_key(key)
        self._loaded = [*(self._loaded or []), key]
        return key

    async def retire(self, kid: str) -> None:
        """Remove a key from the JWKS: tokens it signed stop verifying. The current signer cannot be retired."""
        keys = await self._keys()
        active = [k for k in keys if k.retired_at is None]
        if active and active[-1].kid == kid:
            raise ValueError("rotate before retiring the current signing key")
        for index, key in enumerate(keys):
            if key.kid == kid and key.retired_at is None:
                retired = replace(key, retired_at=time.time())
                await self._repository.save_key(retired)
                keys[index] = retired
                self._public.pop(kid, None)
                self._private.pop(kid, None)

    async def jwks(self) -> dict[str, Any]:
        """The public JWKS document: every key not retired."""
        return {"keys": [k.public_jwk() for k in await self._keys() if k.retired_at is None]}

    async def key(self, kid: str | None, algorithm: str) -> jwt.PyJWK:
        """``KeySource`` for an in-process :class:`TokenVerifier`: the public key for ``kid`` if not retired."""
        cached = self._public.get(kid or "")
        if cached is not None:
            return cached
        for key in await self._keys():
            if key.kid == kid and key.retired_at is None and key.algorithm == algorithm:
                parsed = self._public[key.kid] = jwt.PyJWK(key.public_jwk())
                return parsed
        raise InvalidToken("token signed with an unknown key", details={"kid": kid})
