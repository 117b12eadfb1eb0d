"""Signed, end-to-end encrypted envelopes (seed 4.5.2).

Wire format (all integers big-endian)::

    b"NEV1" | u32 header length | header (canonical JSON) | 64-byte Ed25519 signature | payload ciphertext

The header holds sender, sender key id, recipients with their wrapped content keys, message id, timestamp,
routing key, content type, the sender's ephemeral X25519 public key and the payload nonce.

* The payload is encrypted once: ``ChaCha20-Poly1305(content_key, nonce, payload, associated_data=header)``, so the
  ciphertext cannot be moved under another header.
* The signature covers ``context | header length | header | ciphertext``. Signing the ciphertext too matters: every
  recipient knows the content key and could otherwise re-encrypt a different payload under a genuine header.
* :func:`open_envelope` checks, in this order: the sender's key is known and not revoked, the signature, the
  timestamp window, replay, that the reader is a recipient; only then does it decrypt.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from nemo_kernel.bus import crypto
from nemo_kernel.bus.identity import KeyDirectory, ModuleIdentity, ModuleKeys, UnknownKey
from nemo_kernel.bus.replay import SeenMessages

MAGIC = b"NEV1"
CONTENT_TYPE = "application/vnd.nemo.envelope.v1"
_SIGNATURE_SIZE = 64
_SIGN_CONTEXT = b"nemo-envelope-v1 signature\x00"
_LENGTH = struct.Struct(">I")
MAX_KEY_LENGTH = 128
"""Longest replay-record key kept as is (the width of ``bus_seen_messages.message_key``)."""


class EnvelopeRefused(Exception):
    """A message that must not reach the application. ``reason`` is the metric label."""

    reason: ClassVar[str] = "refused"


class Malformed(EnvelopeRefused):
    """Not an envelope, or an envelope that does not parse."""

    reason = "malformed"


class UnknownSender(EnvelopeRefused):
    """The sender or its key id is not in the directory."""

    reason = "unknown_sender"


class RevokedKey(EnvelopeRefused):
    """Signed with a key that has been revoked."""

    reason = "revoked_key"


class BadSignature(EnvelopeRefused):
    """The signature does not match header and ciphertext: altered on the way, or forged."""

    reason = "bad_signature"


class Stale(EnvelopeRefused):
    """The timestamp is outside the accepted window."""

    reason = "stale"


class Replay(EnvelopeRefused):
    """This message id from this sender was already accepted."""

    reason = "replay"


class NotARecipient(EnvelopeRefused):
    """The envelope is not addressed to this module (or to another key of it)."""

    reason = "not_a_recipient"


class DecryptionFailed(EnvelopeRefused):
    """Validly signed, but the key wrap or ciphertext does not decrypt (a broken or malicious sender)."""

    reason = "decryption_failed"


class RoutingMismatch(EnvelopeRefused):
    """The transport delivered the envelope under another routing key or message id than the signed ones."""

    reason = "routing_mismatch"


@dataclass(frozen=True)
class WrappedKey:
    """The content key wrapped for one recipient key."""

    recipient: str
    key_id: str
    wrapped: bytes


@dataclass(frozen=True)
class Envelope:
    """One sealed message. ``header`` is the exact signed byte string; the other fields are parsed from it."""

    sender: str
    sender_key_id: str
    recipients: tuple[WrappedKey, ...]
    message_id: str
    timestamp: float
    routing_key: str
    content_type: str
    ephemeral_public: bytes
    nonce: bytes
    ciphertext: bytes
    signature: bytes
    header: bytes

    def to_bytes(self) -> bytes:
        """The wire form."""
        return b"".join((MAGIC, _LENGTH.pack(len(self.header)), self.header, self.signature, self.ciphertext))

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Parse the wire form (structure only: nothing is verified here)."""
        try:
            if data[:4] != MAGIC:
                raise Malformed("not a NEMO envelope")
            (length,) = _LENGTH.unpack_from(data, 4)
            header = data[8 : 8 + length]
            signature = data[8 + length : 8 + length + _SIGNATURE_SIZE]
            ciphertext = data[8 + length + _SIGNATURE_SIZE :]
            if len(header) != length or len(signature) != _SIGNATURE_SIZE:
                raise Malformed("truncated envelope")
            fields = json.loads(header)
            if fields.get("v") != 1:
                raise Malformed("unsupported envelope version")
            return cls(
                sender=str(fields["s"]),
                sender_key_id=str(fields["sk"]),
                recipients=tuple(WrappedKey(str(m), str(k), crypto.b64decode(w)) for m, k, w in fields["r"]),
                message_id=str(fields["id"]),
                timestamp=float(fields["ts"]),
                routing_key=str(fields["rk"]),
                content_type=str(fields["ct"]),
                ephemeral_public=crypto.b64decode(fields["epk"]),
                nonce=crypto.b64decode(fields["n"]),
                ciphertext=ciphertext,
                signature=signature,
                header=header,
            )
        except Malformed:
            raise
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            raise Malformed(f"unparseable envelope: {type(exc).__name__}") from None

    @property
    def recipient_names(self) -> list[str]:
        """Modules the envelope is addressed to."""
        return [r.recipient for r in self.recipients]


@dataclass(frozen=True)
class OpenedMessage:
    """A verified, decrypted message."""

    sender: str
    sender_key_id: str
    message_id: str
    timestamp: float
    routing_key: str
    content_type: str
    recipients: tuple[str, ...]
    payload: bytes


class ReplayGuard:
    """Refuses envelopes stamped outside ``now +- window`` seconds, and message ids already accepted.

    Ids are remembered for twice the window (a timestamp may lie ``window`` in the future), so memory stays bounded.
    """

    def __init__(self, window: float = 300.0, seen: SeenMessages | None = None) -> None:
        self.window = window
        self.seen = seen if seen is not None else SeenMessages(ttl=2 * window)

    @staticmethod
    def key(sender: str, message_id: str) -> str:
        """The record key of a message: ids are chosen by senders, so they are only unique per sender.

        The separator is a control character no module name holds, and not NUL (PostgreSQL text refuses NUL);
        keys longer than :data:`MAX_KEY_LENGTH` are digested so that a persistent record can store every key.
        """
        key = f"{sender}\x1f{message_id}"
        return key if len(key) <= MAX_KEY_LENGTH else "#" + hashlib.sha256(key.encode()).hexdigest()

    def check(self, sender: str, message_id: str, timestamp: float, now: float | None = None) -> None:
        """Raise :class:`Stale` or :class:`Replay`, or return if the message may be accepted."""
        now = time.time() if now is None else now
        if abs(now - timestamp) > self.window:
            raise Stale(f"timestamp {timestamp:.3f} is {now - timestamp:+.1f}s from now (window {self.window}s)")
        if self.key(sender, message_id) in self.seen:
            raise Replay(f"message {message_id} from {sender} was already accepted")

    def remember(self, sender: str, message_id: str, timestamp: float) -> None:
        """Record an accepted message."""
        self.seen.add(self.key(sender, message_id), timestamp)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
# One encoder for every envelope: json.dumps with options builds a new JSONEncoder on each call.


def _canonical(fields: dict[str, Any]) -> bytes:
    return _CANONICAL.encode(fields).encode()


def _wrap_context(message_id: str, sender: str, recipient: str, key_id: str) -> bytes:
    # Binds each wrapped key to its message and recipient, so a wrap cannot be lifted into another envelope.
    return "\x00".join(("nemo-wrap-v1", message_id, sender, recipient, key_id)).encode()


def _signed_bytes(header: bytes, ciphertext: bytes) -> bytes:
    return b"".join((_SIGN_CONTEXT, _LENGTH.pack(len(header)), header, ciphertext))


def seal(
    identity: ModuleIdentity,
    recipients: Sequence[ModuleKeys],
    routing_key: str,
    payload: bytes,
    *,
    content_type: str = "application/json",
    message_id: str | None = None,
    timestamp: float | None = None,
    ephemeral: crypto.EphemeralKeyPair | None = None,
) -> Envelope:
    """Encrypt ``payload`` for ``recipients`` (their current public keys) and sign it as ``identity``.

    ``ephemeral`` is the sender's rotating ephemeral key (see :mod:`nemo_kernel.bus.crypto`); without it a fresh
    one is drawn for this message.
    """
    if not recipients:
        raise ValueError("an envelope needs at least one recipient")
    revoked = [r.module for r in recipients if r.revoked]
    if revoked:
        raise ValueError(f"cannot encrypt to revoked keys of {revoked}")
    message_id = message_id or uuid.uuid4().hex
    timestamp = time.time() if timestamp is None else timestamp
    pair = ephemeral if ephemeral is not None else crypto.EphemeralKeyPair(max_age=0)
    eph_private, eph_public = pair.current()
    content_key = crypto.new_content_key()
    wrapped = []
    for r in recipients:
        kek = pair.kek_for(eph_private, eph_public, r.encryption_public)
        wrap = crypto.wrap_key(kek, content_key, _wrap_context(message_id, identity.module, r.module, r.key_id))
        wrapped.append(WrappedKey(r.module, r.key_id, wrap))
    nonce = crypto.new_nonce()
    header = _canonical(
        {
            "v": 1,
            "s": identity.module,
            "sk": identity.key_id,
            "r": [[w.recipient, w.key_id, crypto.b64encode(w.wrapped)] for w in wrapped],
            "id": message_id,
            "ts": timestamp,
            "rk": routing_key,
            "ct": content_type,
            "epk": crypto.b64encode(eph_public),
            "n": crypto.b64encode(nonce),
        }
    )
    ciphertext = crypto.aead_encrypt(content_key, nonce, payload, header)
    signature = crypto.sign(identity.signer, _signed_bytes(header, ciphertext))
    return Envelope(
        sender=identity.module,
        sender_key_id=identity.key_id,
        recipients=tuple(wrapped),
        message_id=message_id,
        timestamp=timestamp,
        routing_key=routing_key,
        content_type=content_type,
        ephemeral_public=eph_public,
        nonce=nonce,
        ciphertext=ciphertext,
        signature=signature,
        header=header,
    )


def open_envelope(
    envelope: Envelope | bytes,
    me: ModuleIdentity,
    directory: KeyDirectory,
    replay_guard: ReplayGuard | None,
    *,
    remember: bool = True,
    kek_cache: crypto.KekCache | None = None,
    now: float | None = None,
) -> OpenedMessage:
    """Verify and decrypt an envelope addressed to ``me``; raise an :class:`EnvelopeRefused` subclass otherwise.

    With a ``replay_guard``, the message is refused if stale or already accepted, and recorded as accepted unless
    ``remember`` is False (callers that acknowledge only after handling record it themselves, so that a redelivery
    after a failed handler is not mistaken for a replay). ``kek_cache`` spares the X25519 exchange for envelopes
    sharing an ephemeral key.
    """
    env = envelope if isinstance(envelope, Envelope) else Envelope.from_bytes(envelope)
    try:
        sender_keys = directory.get(env.sender, env.sender_key_id)
    except UnknownKey:
        raise UnknownSender(f"unknown key {env.sender_key_id} for sender {env.sender!r}") from None
    if sender_keys.revoked:
        raise RevokedKey(f"key {env.sender_key_id} of {env.sender!r} is revoked")
    try:
        crypto.verify(sender_keys.verifier(), env.signature, _signed_bytes(env.header, env.ciphertext))
    except crypto.CryptoError:
        raise BadSignature(f"signature of message {env.message_id} from {env.sender!r} does not verify") from None
    if replay_guard is not None:
        replay_guard.check(env.sender, env.message_id, env.timestamp, now)
    mine = next((r for r in env.recipients if r.recipient == me.module and r.key_id == me.key_id), None)
    if mine is None:
        raise NotARecipient(f"message {env.message_id} is not addressed to {me.module!r} key {me.key_id}")
    try:
        my_public = me.encryption_public
        cache_key = (env.ephemeral_public, my_public)
        kek = kek_cache.get(cache_key) if kek_cache is not None else None
        if kek is None:
            kek = crypto.derive_kek(me.encryption_key, env.ephemeral_public, env.ephemeral_public, my_public)
            if kek_cache is not None:
                kek_cache.put(cache_key, kek)
        content_key = crypto.unwrap_key(
            kek, mine.wrapped, _wrap_context(env.message_id, env.sender, me.module, me.key_id)
        )
        payload = crypto.aead_decrypt(content_key, env.nonce, env.ciphertext, env.header)
    except (crypto.CryptoError, ValueError):
        raise DecryptionFailed(f"message {env.message_id} from {env.sender!r} does not decrypt") from None
    if replay_guard is not None and remember:
        replay_guard.remember(env.sender, env.message_id, env.timestamp)
    return OpenedMessage(
        sender=env.sender,
        sender_key_id=env.sender_key_id,
        message_id=env.message_id,
        timestamp=env.timestamp,
        routing_key=env.routing_key,
        content_type=env.content_type,
        recipients=tuple(env.recipient_names),
        payload=payload,
    )


# The name the design uses; ``open_envelope`` avoids shadowing the builtin where it is imported.
open = open_envelope
