"""Envelopes: sealing, opening and every refusal reason."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from nemo_kernel.bus import crypto
from nemo_kernel.bus.envelope import (
    BadSignature,
    DecryptionFailed,
    Envelope,
    Malformed,
    NotARecipient,
    Replay,
    ReplayGuard,
    RevokedKey,
    Stale,
    UnknownSender,
    open_envelope,
    seal,
)
from nemo_kernel.bus.identity import InMemoryKeyDirectory, ModuleIdentity


@pytest.fixture
def world() -> tuple[ModuleIdentity, ModuleIdentity, ModuleIdentity, InMemoryKeyDirectory]:
    a, b, c = (ModuleIdentity.generate(m) for m in ("orchestrator", "ppef", "security"))
    return a, b, c, InMemoryKeyDirectory([a.public(), b.public(), c.public()])


def test_round_trip(world) -> None:
    a, b, _, directory = world
    env = seal(a, [b.public()], "sla.violated", b'{"sla":"x"}', content_type="application/json")
    wire = env.to_bytes()
    opened = open_envelope(wire, b, directory, ReplayGuard())
    assert opened.payload == b'{"sla":"x"}'
    assert opened.sender == "orchestrator"
    assert opened.routing_key == "sla.violated"
    assert opened.recipients == ("ppef",)
    assert b'{"sla":"x"}' not in wire


def test_tampered_ciphertext_is_refused(world) -> None:
    a, b, _, directory = world
    wire = bytearray(seal(a, [b.public()], "a.b", b"hello world").to_bytes())
    wire[-1] ^= 0x01
    with pytest.raises(BadSignature):
        open_envelope(bytes(wire), b, directory, ReplayGuard())


def test_tampered_header_is_refused(world) -> None:
    a, b, _, directory = world
    wire = seal(a, [b.public()], "placement.decided", b"payload").to_bytes()
    forged = wire.replace(b"placement.decided", b"placement.decidex")
    assert forged != wire
    with pytest.raises(BadSignature):
        open_envelope(forged, b, directory, ReplayGuard())


def test_recipient_cannot_forge_payload_under_genuine_header(world) -> None:
    # b knows the content key; re-encrypting another payload under a's header must not verify.
    a, b, c, directory = world
    env = seal(a, [b.public(), c.public()], "a.b", b"pay 1 EUR")
    forged = Envelope(**{**env.__dict__, "ciphertext": env.ciphertext[:-1] + bytes([env.ciphertext[-1] ^ 1])})
    with pytest.raises(BadSignature):
        open_envelope(forged, c, directory, ReplayGuard())


def test_revoked_key_is_refused(world) -> None:
    a, b, _, directory = world
    wire = seal(a, [b.public()], "a.b", b"x").to_bytes()
    directory.revoke("orchestrator")
    with pytest.raises(RevokedKey):
        open_envelope(wire, b, directory, ReplayGuard())


def test_unknown_sender_is_refused(world) -> None:
    _, b, _, directory = world
    stranger = ModuleIdentity.generate("orchestrator")  # same name, key not in the directory
    with pytest.raises(UnknownSender):
        open_envelope(seal(stranger, [b.public()], "a.b", b"x").to_bytes(), b, directory, ReplayGuard())


def test_replay_is_refused(world) -> None:
    a, b, _, directory = world
    wire = seal(a, [b.public()], "a.b", b"x").to_bytes()
    guard = ReplayGuard()
    open_envelope(wire, b, directory, guard)
    with pytest.raises(Replay):
        open_envelope(wire, b, directory, guard)


def test_stale_and_future_timestamps_are_refused(world) -> None:
    a, b, _, directory = world
    guard = ReplayGuard(window=60)
    for ts in (time.time() - 120, time.time() + 120):
        with pytest.raises(Stale):
            open_envelope(seal(a, [b.public()], "a.b", b"x", timestamp=ts).to_bytes(), b, directory, guard)


def test_not_a_recipient_is_refused(world) -> None:
    a, b, c, directory = world
    wire = seal(a, [b.public()], "a.b", b"x").to_bytes()
    with pytest.raises(NotARecipient):
        open_envelope(wire, c, directory, ReplayGuard())


def test_old_key_after_rotation_is_not_a_recipient(world) -> None:
    a, b, _, directory = world
    wire = seal(a, [b.public()], "a.b", b"x").to_bytes()
    b2 = ModuleIdentity.generate("ppef")
    directory.rotate(b2.public())
    assert directory.current("ppef").key_id == b2.key_id
    with pytest.raises(NotARecipient):
        open_envelope(wire, b2, directory, ReplayGuard())
    assert open_envelope(wire, b, directory, ReplayGuard()).payload == b"x"


def test_malformed_is_refused(world) -> None:
    _, b, _, directory = world
    for junk in (b"", b"NEV1", b"NEV1\x00\x00\x00\x05{bad}" + bytes(64), b'{"plain":"json"}'):
        with pytest.raises(Malformed):
            open_envelope(junk, b, directory, ReplayGuard())


def test_wrap_swapped_between_recipients_does_not_decrypt(world) -> None:
    a, b, c, directory = world
    recipients = [b.public(), c.public()]
    env = seal(a, recipients, "a.b", b"x")
    # A signed envelope whose wrap for b is really c's: only a broken or malicious sender produces this.
    swapped = seal(a, recipients, "a.b", b"x")
    assert swapped.recipients[0].wrapped != env.recipients[0].wrapped
    with pytest.raises(DecryptionFailed):
        open_envelope(_resign(a, env, wraps={"ppef": env.recipients[1].wrapped}), b, directory, ReplayGuard())


def _resign(sender: ModuleIdentity, env: Envelope, wraps: dict[str, bytes]) -> bytes:
    import json
    import struct

    fields = json.loads(env.header)
    fields["r"] = [[m, k, crypto.b64encode(wraps.get(m, crypto.b64decode(w)))] for m, k, w in fields["r"]]
    header = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    signed = b"nemo-envelope-v1 signature\x00" + struct.pack(">I", len(header)) + header + env.ciphertext
    return b"NEV1" + struct.pack(">I", len(header)) + header + sender.signing_key.sign(signed) + env.ciphertext


def test_broadcast_to_20_recipients_each_decrypts() -> None:
    sender = ModuleIdentity.generate("orchestrator")
    agents = [ModuleIdentity.generate(f"agent-{i}") for i in range(20)]
    directory = InMemoryKeyDirectory([sender.public(), *(x.public() for x in agents)])
    payload = bytes(range(256)) * 4
    env = seal(sender, [x.public() for x in agents], "cluster.heartbeat", payload)
    # One ciphertext for everyone: payload + 16-byte tag, plus one 60-byte wrap per recipient.
    assert len(env.ciphertext) == len(payload) + 16
    assert all(len(r.wrapped) == 60 for r in env.recipients)
    wire = env.to_bytes()
    for agent in agents:
        assert open_envelope(wire, agent, directory, ReplayGuard()).payload == payload


def test_shared_ephemeral_and_kek_cache(world) -> None:
    a, b, _, directory = world
    pair = crypto.EphemeralKeyPair(max_age=60)
    cache = crypto.KekCache()
    guard = ReplayGuard()
    envs = [seal(a, [b.public()], "a.b", str(i).encode(), ephemeral=pair) for i in range(5)]
    assert len({e.ephemeral_public for e in envs}) == 1
    assert len({e.nonce for e in envs}) == 5
    assert [open_envelope(e, b, directory, guard, kek_cache=cache).payload for e in envs] == [
        b"0",
        b"1",
        b"2",
        b"3",
        b"4",
    ]


def test_identity_file_is_private_and_round_trips(tmp_path: Path) -> None:
    ident = ModuleIdentity.generate("ppef")
    path = tmp_path / "keys" / "ppef.json"
    ident.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = ModuleIdentity.load(path)
    assert loaded.public().key_id == ident.key_id
    assert ModuleIdentity.load_or_create("ppef", path).key_id == ident.key_id
    path.chmod(0o644)
    with pytest.raises(PermissionError):
        ModuleIdentity.load(path)


def test_directory_revoke_and_list(world) -> None:
    a, _, _, directory = world
    a2 = ModuleIdentity.generate("orchestrator")
    directory.rotate(a2.public(), revoke_previous=True)
    keys = directory.list("orchestrator")
    assert [k.key_id for k in keys] == [a.key_id, a2.key_id]
    assert [k.revoked for k in keys] == [True, False]
    with pytest.raises(ValueError):
        directory.rotate(a.public())


def test_libsodium_signer_and_verifier_agree_with_openssl() -> None:
    """Signing and verifying run in libsodium; keys come from ``cryptography``: both must see the same signatures."""
    me = ModuleIdentity.generate("orchestrator")
    data = b"nemo" * 300
    signature = crypto.sign(me.signer, data)
    assert signature == me.signing_key.sign(data)  # Ed25519 is deterministic: same bytes from either library
    me.signing_key.public_key().verify(signature, data)  # OpenSSL accepts libsodium's signature
    verifier = me.public().verifier()
    crypto.verify(verifier, signature, data)
    for bad_signature, bad_data in (
        (signature[:-1] + bytes([signature[-1] ^ 1]), data),
        (signature, data + b"!"),
        (signature[:63], data),
        (bytes(64), data),
    ):
        with pytest.raises(crypto.CryptoError):
            crypto.verify(verifier, bad_signature, bad_data)
    with pytest.raises(ValueError):
        crypto.Ed25519Verifier(b"short")
    assert "secret" in repr(me.signer) and me.signer.sign(b"") == me.signing_key.sign(b"")


def test_url_safe_base64_round_trips_and_refuses_junk() -> None:
    for n in range(70):
        data = bytes(range(n))
        text = crypto.b64encode(data)
        assert "=" not in text and "+" not in text and "/" not in text
        assert crypto.b64decode(text) == data
    for junk in ("é", "a", "abcde"):
        with pytest.raises(ValueError):
            crypto.b64decode(junk)
