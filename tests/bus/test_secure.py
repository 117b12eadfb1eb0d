"""SecureBus over each backend: round trip, and every refusal dead-lettered with a log line and a metric."""

from __future__ import annotations

import uuid

import pytest

from nemo_kernel.bus import InProcessBus, Message
from nemo_kernel.bus.envelope import CONTENT_TYPE, Envelope, ReplayGuard
from nemo_kernel.bus.errors import DeadLetter
from nemo_kernel.bus.identity import InMemoryKeyDirectory, ModuleIdentity
from nemo_kernel.bus.rabbitmq import DEAD_REASON_HEADER, RabbitMqBus
from nemo_kernel.bus.replay import SeenMessages
from nemo_kernel.bus.secure import REFUSED, SecureBus

from .conftest import dead_letters, eventually


def refused(reason: str) -> float:
    return REFUSED.labels(reason=reason)._value.get()


@pytest.fixture
def modules() -> tuple[ModuleIdentity, ModuleIdentity, ModuleIdentity, InMemoryKeyDirectory]:
    a, b, c = (ModuleIdentity.generate(m) for m in ("orchestrator", "ppef", "security"))
    return a, b, c, InMemoryKeyDirectory([a.public(), b.public(), c.public()])


async def test_round_trip_gives_verified_sender_and_plaintext(any_bus, modules) -> None:
    a, b, _, directory = modules
    sender, receiver = SecureBus(any_bus, a, directory), SecureBus(any_bus, b, directory)
    got: list[tuple[str, Message]] = []

    async def handle(who: str, message: Message) -> None:
        got.append((who, message))

    await receiver.subscribe(f"ppef.{uuid.uuid4().hex[:6]}", ["sla.*"], handle)
    mid = await sender.publish("sla.violated", b'{"sla":"gold"}', ["ppef"])
    await eventually(lambda: len(got) == 1, what="delivery")
    who, message = got[0]
    assert who == "orchestrator"
    assert message.body == b'{"sla":"gold"}'
    assert message.json() == {"sla": "gold"}
    assert message.message_id == mid
    assert message.content_type == "application/json"


async def test_refusals_are_dead_lettered_logged_and_counted(
    shared_vhost: str, modules, caplog: pytest.LogCaptureFixture
) -> None:
    a, b, _, directory = modules
    bus = RabbitMqBus(shared_vhost, max_deliveries=3)
    await bus.start()
    queue = f"ppef.{uuid.uuid4().hex[:6]}"
    handled: list[str] = []
    try:
        sender, receiver = SecureBus(bus, a, directory), SecureBus(bus, b, directory)

        async def handle(who: str, message: Message) -> None:
            handled.append(message.message_id)

        await receiver.subscribe(queue, ["sec.#"], handle)
        before = {r: refused(r) for r in ("bad_signature", "replay", "not_a_recipient", "revoked_key", "malformed")}

        ok = sender.seal("sec.ok", b"fine", ["ppef"])
        await bus.publish("sec.ok", ok.to_bytes(), message_id=ok.message_id, content_type=CONTENT_TYPE)
        # The same bytes again (not a redelivery: a new publish): a replay.
        await bus.publish("sec.ok", ok.to_bytes(), message_id=ok.message_id, content_type=CONTENT_TYPE)
        tampered = bytearray(sender.seal("sec.tampered", b"secret", ["ppef"]).to_bytes())
        tampered[-3] ^= 0x40
        env = Envelope.from_bytes(bytes(tampered))
        await bus.publish("sec.tampered", bytes(tampered), message_id=env.message_id)
        other = sender.seal("sec.other", b"for security only", ["security"])
        await bus.publish("sec.other", other.to_bytes(), message_id=other.message_id)
        await bus.publish("sec.junk", b'{"not":"an envelope"}', message_id="junk-1")
        mallory = ModuleIdentity.generate("access")
        directory.register(mallory.public())
        signed_then_revoked = SecureBus(bus, mallory, directory).seal("sec.revoked", b"x", ["ppef"])
        directory.revoke("access")
        await bus.publish("sec.revoked", signed_then_revoked.to_bytes(), message_id=signed_then_revoked.message_id)

        dead = await dead_letters(shared_vhost, queue, 5)
        reasons = sorted(str((m.headers or {})[DEAD_REASON_HEADER]) for m in dead)
        assert reasons == ["bad_signature", "malformed", "not_a_recipient", "replay", "revoked_key"]
        assert handled == [ok.message_id]
        for reason in reasons:
            assert refused(reason) == before[reason] + 1
        logged = " ".join(r.getMessage() for r in caplog.records if r.name == "nemo_kernel.bus.secure")
        assert all(reason in logged for reason in reasons)
        assert "secret" not in logged and "for security only" not in logged
    finally:
        await bus.close()


async def test_concurrent_duplicates_reach_the_handler_once(modules) -> None:
    a, b, _, directory = modules
    bus = InProcessBus()
    sender, receiver = SecureBus(bus, a, directory), SecureBus(bus, b, directory)
    calls: list[str] = []
    env = sender.seal("x.y", b"1", ["ppef"])
    delivery = Message("x.y", env.to_bytes(), env.message_id, 0.0, CONTENT_TYPE, redelivered=True)

    async def handle(who: str, message: Message) -> None:
        calls.append(message.message_id)

    import asyncio

    await asyncio.gather(*(receiver._receive("q", delivery, handle) for _ in range(5)))
    assert calls == [env.message_id]


async def test_a_copy_published_while_the_first_is_handled_is_refused_as_a_replay(modules) -> None:
    # Not a redelivery: the same bytes published again. Arriving after the first was handled it is a replay; it must
    # be one too when it arrives while the first is still being handled (it was dropped silently then).
    import asyncio

    a, b, _, directory = modules
    bus = InProcessBus()
    sender, receiver = SecureBus(bus, a, directory), SecureBus(bus, b, directory)
    env = sender.seal("x.y", b"1", ["ppef"])
    copy = Message("x.y", env.to_bytes(), env.message_id, 0.0, CONTENT_TYPE)
    started, release = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    async def handle(who: str, message: Message) -> None:
        started.set()
        await release.wait()
        calls.append(message.message_id)

    first = asyncio.create_task(receiver._receive("q", copy, handle))
    await asyncio.wait_for(started.wait(), 10)
    second = asyncio.create_task(receiver._receive("q", copy, handle))  # checked before the first is recorded
    await asyncio.sleep(0)  # let it reach the wait for the first handling (a turn of the loop, not a delay)
    release.set()
    await first
    with pytest.raises(DeadLetter) as refused:
        await second
    assert refused.value.reason == "replay"
    assert calls == [env.message_id]


async def test_a_message_being_handled_when_its_consumer_stops_is_finished_and_recorded(modules) -> None:
    """Stopping a consumer (a control-plane stop) does not cut a handling in two: the effect without its record
    would be handled again after a restart instead of being refused as a replay."""
    import asyncio

    a, b, _, directory = modules
    bus = InProcessBus()
    stored: list[tuple[str, float]] = []
    seen = SeenMessages(ttl=600, persist=lambda k, t: stored.append((k, t)))
    sender = SecureBus(bus, a, directory)
    receiver = SecureBus(bus, b, directory, replay_guard=ReplayGuard(300, seen))
    started, release = asyncio.Event(), asyncio.Event()
    handled: list[str] = []

    async def handle(who: str, message: Message) -> None:
        started.set()
        await release.wait()
        handled.append(message.message_id)

    subscription = await receiver.subscribe("ppef.stopping", ["x.*"], handle)
    mid = await sender.publish("x.y", b"1", ["ppef"])
    await asyncio.wait_for(started.wait(), 10)
    stopping = asyncio.create_task(subscription.cancel())  # its first step cancels the consumer...
    asyncio.get_running_loop().call_soon(release.set)  # ...then the handler may finish: it is stopped mid-way
    await asyncio.wait_for(stopping, 10)
    assert handled == [mid]
    assert [key for key, _ in stored] == [ReplayGuard.key("orchestrator", mid)]


def test_seen_messages_is_bounded_and_persists() -> None:
    stored: list[tuple[str, float]] = []
    seen = SeenMessages(ttl=60, capacity=3, persist=lambda k, t: stored.append((k, t)))
    for i in range(5):
        assert seen.add(f"m{i}")
    assert not seen.add("m4")
    assert len(seen) == 3 and "m0" not in seen and "m4" in seen
    restored = SeenMessages(ttl=60, initial=stored)
    assert all(f"m{i}" in restored for i in range(5))
