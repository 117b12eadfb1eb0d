"""Hashing of passwords and client secrets with Argon2id (RFC 9106), off the event loop."""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


class SecretHasher:
    """Argon2id hashing; verification runs in a worker thread because it is deliberately slow (~tens of ms)."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        # argon2-cffi's defaults are RFC 9106's "low memory" profile: Argon2id, t=3, m=64 MiB, p=4.
        self._hasher = hasher or PasswordHasher()

    def hash(self, secret: str) -> str:
        """The encoded Argon2id hash of ``secret`` (salt and parameters included)."""
        return self._hasher.hash(secret)

    async def verify(self, encoded: str | None, secret: str) -> bool:
        """Whether ``secret`` matches ``encoded``; never raises for a mismatch or a corrupt hash."""
        if not encoded:
            return False
        try:
            return await asyncio.to_thread(self._hasher.verify, encoded, secret)
        except (VerificationError, InvalidHashError):
            return False


def new_secret() -> str:
    """A fresh client secret: 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)
