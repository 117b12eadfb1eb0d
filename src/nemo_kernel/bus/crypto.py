"""The only module of NEMO that touches cryptographic primitives (``cryptography``, plus libsodium through PyNaCl
for one operation; nothing home-made).

What is used, and for what:

* **Ed25519** signs every envelope (sender authenticity, integrity of header and ciphertext). Keys are generated,
  stored and loaded with ``cryptography``; the per-message operations run in libsodium through PyNaCl
  (:class:`Ed25519Signer`, :class:`Ed25519Verifier`), because they are the most expensive step of sending and of
  receiving a message and libsodium is faster at both: verifying a 1.2 KiB message takes 57-68 us against 121-132 us
  through OpenSSL, signing 26 us against 37 us (same process, this project's machines). Ed25519 signatures are
  deterministic, so both libraries produce the same bytes; libsodium is also the stricter verifier (it refuses
  non-canonical encodings and small-order keys and points) and accepts every signature OpenSSL makes.
  The AEAD stays on ``cryptography``: there it is the faster of the two (2.7 vs 7.1 us).
* **X25519** is each module's encryption key. A sender holds a short-lived *ephemeral* X25519 key; for each
  recipient it derives a key-encryption key (KEK) = HKDF-SHA256(X25519(ephemeral, recipient), info=context).
* **ChaCha20-Poly1305** (AEAD, 256-bit key, 96-bit random nonce) encrypts the payload once under a fresh random
  content key, and wraps that 32-byte content key once per recipient under the recipient's KEK.

A broadcast to *n* recipients therefore costs one payload encryption plus *n* 48-byte key wraps.

Ephemeral keys are rotated (:class:`EphemeralKeyPair` ``max_age``/``max_uses``) instead of being drawn per message:
an X25519 key generation plus one exchange per recipient per message would double the cost of a small message,
while a key that lives a few seconds in memory only gives the same guarantees as ephemeral-static ECIES
(no forward secrecy against compromise of the *recipient's* static key, in either design). Each wrap still uses its own
random nonce, and KEKs are cached on both sides keyed by (ephemeral public key, recipient public key).
"""

from __future__ import annotations

import binascii
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import CryptoError as _SodiumError

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "SIGNATURE_SIZE",
    "CryptoError",
    "Ed25519Signer",
    "Ed25519Verifier",
    "EphemeralKeyPair",
    "KekCache",
    "aead_decrypt",
    "aead_encrypt",
    "b64decode",
    "b64encode",
    "derive_kek",
    "ed25519_private_from_raw",
    "ed25519_private_to_raw",
    "ed25519_public_from_raw",
    "ed25519_public_to_raw",
    "new_content_key",
    "new_nonce",
    "sign",
    "unwrap_key",
    "verify",
    "wrap_key",
    "x25519_private_from_raw",
    "x25519_private_to_raw",
    "x25519_public_from_raw",
    "x25519_public_to_raw",
]

KEY_SIZE = 32
SIGNATURE_SIZE = 64
NONCE_SIZE = 12
_WRAP_INFO = b"nemo-envelope-v1 key-wrap"


class CryptoError(Exception):
    """A signature did not verify, or an AEAD tag did not authenticate."""


# ---- serialisation of keys (raw 32-byte form; base64url without padding on the wire and in the directory) ----


# binascii directly: the base64 module's url-safe helpers cost 5 us a call, and an envelope has three fields in base64.
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def b64encode(data: bytes) -> str:
    """URL-safe base64 without padding."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    """Inverse of :func:`b64encode` (like ``base64.urlsafe_b64decode``); raises ``ValueError`` on bad input."""
    data = text.encode("ascii")  # UnicodeEncodeError is a ValueError
    return binascii.a2b_base64(data.translate(_FROM_URLSAFE) + b"=" * (-len(data) % 4))


def ed25519_public_to_raw(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ed25519_public_from_raw(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from its 32 raw bytes."""
    return Ed25519PublicKey.from_public_bytes(data)


def ed25519_private_to_raw(key: Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes (seed) of an Ed25519 private key."""
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def ed25519_private_from_raw(data: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from its 32-byte seed."""
    return Ed25519PrivateKey.from_private_bytes(data)


def x25519_public_to_raw(key: X25519PublicKey) -> bytes:
    """The 32 raw bytes of an X25519 public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def x25519_public_from_raw(data: bytes) -> X25519PublicKey:
    """An X25519 public key from its 32 raw bytes."""
    return X25519PublicKey.from_public_bytes(data)


def x25519_private_to_raw(key: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of an X25519 private key."""
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def x25519_private_from_raw(data: bytes) -> X25519PrivateKey:
    """An X25519 private key from its 32 raw bytes."""
    return X25519PrivateKey.from_private_bytes(data)


# ---- signatures ----


class Ed25519Signer:
    """An Ed25519 private key prepared for signing with libsodium (see the module docstring for why).

    Built once per identity from the 32-byte seed; :meth:`sign` gives the same signature as ``cryptography`` would.
    """

    __slots__ = ("_secret",)

    def __init__(self, seed: bytes) -> None:
        if len(seed) != KEY_SIZE:
            raise ValueError("an Ed25519 seed is 32 bytes")
        _, self._secret = crypto_sign_seed_keypair(seed)

    def __repr__(self) -> str:
        return "Ed25519Signer(<secret>)"

    def sign(self, data: bytes) -> bytes:
        """The 64-byte signature of ``data``."""
        # libsodium's crypto_sign returns the signature followed by the message.
        return crypto_sign(data, self._secret)[:SIGNATURE_SIZE]


def sign(key: Ed25519Signer | Ed25519PrivateKey, data: bytes) -> bytes:
    """A 64-byte Ed25519 signature of ``data``."""
    return key.sign(data)


class Ed25519Verifier:
    """An Ed25519 public key that checks signatures with libsodium (see the module docstring for why).

    Build it once per key (the directory caches one per entry) and call :meth:`verify` per message.
    """

    __slots__ = ("public_raw",)

    def __init__(self, public_raw: bytes) -> None:
        if len(public_raw) != KEY_SIZE:
            raise ValueError("an Ed25519 public key is 32 bytes")
        self.public_raw = bytes(public_raw)

    def verify(self, signature: bytes, data: bytes) -> None:
        """Raise :class:`CryptoError` unless ``signature`` is this key's signature of ``data``."""
        if len(signature) != SIGNATURE_SIZE:
            raise CryptoError("bad signature")
        try:
            # libsodium's crypto_sign_open takes the signature followed by the message.
            crypto_sign_open(signature + data, self.public_raw)
        except _SodiumError as exc:
            raise CryptoError("bad signature") from exc


def verify(key: Ed25519Verifier | Ed25519PublicKey, signature: bytes, data: bytes) -> None:
    """Raise :class:`CryptoError` unless ``signature`` is ``key``'s signature of ``data``."""
    if isinstance(key, Ed25519Verifier):
        key.verify(signature, data)
        return
    try:
        key.verify(signature, data)
    except InvalidSignature as exc:
        raise CryptoError("bad signature") from exc


# ---- symmetric encryption ----


def new_content_key() -> bytes:
    """A fresh random 256-bit key."""
    return ChaCha20Poly1305.generate_key()


def new_nonce() -> bytes:
    """A fresh random 96-bit nonce (keys are single-use or short-lived, so random nonces cannot collide in practice)."""
    return os.urandom(NONCE_SIZE)


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """ChaCha20-Poly1305 encryption; the result is ciphertext plus a 16-byte tag."""
    return ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated_data)


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """ChaCha20-Poly1305 decryption; raises :class:`CryptoError` if anything was altered."""
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, associated_data)
    except InvalidTag as exc:
        raise CryptoError("authentication tag mismatch") from exc


# ---- key wrapping: ephemeral-static X25519 + HKDF-SHA256 + ChaCha20-Poly1305 ----


def derive_kek(
    private: X25519PrivateKey, peer_public_raw: bytes, ephemeral_public_raw: bytes, recipient_raw: bytes
) -> bytes:
    """The key-encryption key between an ephemeral key and a recipient key (computed by either side).

    Both public keys go into the HKDF ``info`` so that a KEK is bound to exactly this pair.
    """
    shared = private.exchange(x25519_public_from_raw(peer_public_raw))
    if shared == bytes(KEY_SIZE):
        # A low-order peer point yields the all-zero secret; refuse it rather than derive a predictable key.
        raise CryptoError("degenerate X25519 shared secret")
    hkdf = HKDF(
        algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=_WRAP_INFO + ephemeral_public_raw + recipient_raw
    )
    return hkdf.derive(shared)


def wrap_key(kek: bytes, content_key: bytes, associated_data: bytes) -> bytes:
    """``nonce || AEAD(kek, content_key)``: 12 + 32 + 16 = 60 bytes."""
    nonce = new_nonce()
    return nonce + aead_encrypt(kek, nonce, content_key, associated_data)


def unwrap_key(kek: bytes, wrapped: bytes, associated_data: bytes) -> bytes:
    """Inverse of :func:`wrap_key`; raises :class:`CryptoError` if the wrap was altered or is for someone else."""
    return aead_decrypt(kek, wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], associated_data)


class KekCache:
    """A bounded LRU of derived KEKs keyed by (ephemeral public, recipient public), thread-safe."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._items: OrderedDict[tuple[bytes, bytes], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[bytes, bytes]) -> bytes | None:
        """The cached KEK, if any."""
        with self._lock:
            kek = self._items.get(key)
            if kek is not None:
                self._items.move_to_end(key)
            return kek

    def put(self, key: tuple[bytes, bytes], kek: bytes) -> None:
        """Remember a KEK, evicting the least recently used one when full."""
        with self._lock:
            self._items[key] = kek
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)


@dataclass
class EphemeralKeyPair:
    """The sender's current ephemeral X25519 key, replaced after ``max_age`` seconds or ``max_uses`` messages.

    ``max_age=0`` draws a new key for every message (strictest, about twice the CPU cost per small message).
    """

    max_age: float = 30.0
    max_uses: int = 100_000
    _private: X25519PrivateKey | None = field(default=None, init=False, repr=False)
    _public_raw: bytes = field(default=b"", init=False, repr=False)
    _born: float = field(default=0.0, init=False, repr=False)
    _uses: int = field(default=0, init=False, repr=False)
    _keks: KekCache = field(default_factory=lambda: KekCache(1024), init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def current(self) -> tuple[X25519PrivateKey, bytes]:
        """The key to use for the next message, and its raw public bytes."""
        with self._lock:
            now = time.monotonic()
            if self._private is None or self._uses >= self.max_uses or now - self._born >= self.max_age:
                self._private = X25519PrivateKey.generate()
                self._public_raw = x25519_public_to_raw(self._private.public_key())
                self._born = now
                self._uses = 0
                self._keks = KekCache(1024)
            self._uses += 1
            return self._private, self._public_raw

    def kek_for(self, private: X25519PrivateKey, public_raw: bytes, recipient_raw: bytes) -> bytes:
        """The KEK between ``private`` (an ephemeral key from :meth:`current`) and a recipient key, cached."""
        cache_key = (public_raw, recipient_raw)
        kek = self._keks.get(cache_key)
        if kek is None:
            kek = derive_kek(private, recipient_raw, public_raw, recipient_raw)
            self._keks.put(cache_key, kek)
        return kek
