"""Read permissions: declared subscriptions decide what a module may bind, on the in-process bus as on the broker
(see test_private_broker.py), and which events are sealed for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from nemo_kernel.bus import InProcessBus, Message, ModuleIdentity, SecureBus
from nemo_kernel.bus.envelope import Envelope
from nemo_kernel.bus.identity import InMemoryKeyDirectory
from nemo_kernel.bus.subscriptions import (
    BindingRefused,
    InvalidPattern,
    may_bind,
    read_regex,
    readers,
    validate_pattern,
)
from nemo_kernel.orchestrator.key_directory import StoredKeyDirectory
from nemo_kernel.orchestrator.outbox import OutboxPublisher
from nemo_kernel.store import Database, events
from tests.conftest import migrated_database

from .conftest import eventually

# (binding key, allowed for module "acme" declared for "workload.*" and "cluster.#"); the private broker test
# checks RabbitMQ gives the same verdict for each.
BINDINGS = [
    ("workload.*", True),
    ("workload.registered", True),
    ("cluster.#", True),
    ("cluster.*", True),
    ("cluster", True),
    ("cluster.node.not_ready", True),
    ("acme.replies", True),  # its own namespace
    ("acme.#", True),
    ("acme", True),
    ("#", False),
    ("*", False),
    ("*.registered", False),
    ("workload.#", False),
    ("workload", False),
    ("workload.replica.started", False),
    ("workload.*.started", False),
    ("#.registered", False),
    ("intent.#", False),
    ("acmex.replies", False),
    (".workload.registered", False),
    ("workload..registered", False),
    ("Workload.registered", False),
]
DECLARED = ("workload.*", "cluster.#")


@pytest.mark.parametrize(("binding", "allowed"), BINDINGS)
def test_binding_is_allowed_only_when_a_declared_pattern_covers_it(binding: str, allowed: bool) -> None:
    assert may_bind("acme", DECLARED, binding) is allowed


def test_read_regex_is_anchored_and_covers_the_own_namespace() -> None:
    regex = read_regex("acme", ["workload.*"])
    assert regex.startswith("^") and regex.endswith("$")
    assert may_bind("acme", [], "acme.replies")
    assert not may_bind("acme", [], "workload.registered")  # nothing declared: only replies addressed to it
    assert may_bind("acme", ["#"], "anything.at.all") and may_bind("acme", ["#"], "#")
    assert may_bind("acme", ["#.done"], "migration.done") and not may_bind("acme", ["#.done"], ".done")
    assert may_bind("acme", ["a.#.z"], "a.z") and may_bind("acme", ["a.#.z"], "a.b.*.#.z")


@pytest.mark.parametrize(
    "pattern", ["", "workload.", ".workload", "work load", "Workload.*", "workload.**", "a.#b", "ä", "x\n", "a" * 256]
)
def test_invalid_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(InvalidPattern):
        validate_pattern(pattern)


def test_events_are_for_the_modules_that_may_read_them() -> None:
    declared = {"acme": ["workload.*"], "watcher": ["cluster.#"], "quiet": []}
    assert readers("cluster.not_ready", declared) == ["watcher"]
    assert readers("workload.registered", declared) == ["acme"]
    assert readers("workload.replica.started", declared) == []
    assert readers("quiet.reply", declared) == ["quiet"]


async def test_in_process_bus_refuses_bindings_outside_the_declared_subscriptions() -> None:
    directory = InMemoryKeyDirectory(subscriptions={"acme": ["workload.*"]})
    bus = InProcessBus(read_permissions=directory)
    got: list[Message] = []

    async def keep(message: Message) -> None:
        got.append(message)

    try:
        for binding in ("#", "*.registered", "workload.#", "cluster.not_ready"):
            with pytest.raises(BindingRefused):
                await bus.subscribe("acme.events", [binding], keep)
        # Refused whole: a list with one binding too many binds nothing.
        with pytest.raises(BindingRefused):
            await bus.subscribe("acme.events", ["workload.*", "#"], keep)
        await bus.subscribe("acme.events", ["workload.*", "acme.#"], keep)
        await bus.publish("cluster.not_ready", b"{}")
        await bus.publish("workload.registered", b"{}")
        await eventually(lambda: len(got) == 1, what="the workload event")
        assert [m.routing_key for m in got] == ["workload.registered"]
        assert bus.depth("acme.events") == 0
    finally:
        await bus.close()


def _skipped_own() -> float:
    return REGISTRY.get_sample_value("nemo_bus_own_messages_skipped_total") or 0.0


@pytest.fixture
def store(database_url: str) -> Iterator[Database]:
    with migrated_database(database_url) as db:
        yield db


async def test_control_plane_seals_an_event_only_for_the_modules_allowed_to_read_it(store: Database) -> None:
    """The embedded default: the stored directory is the in-process bus's read permissions and the outbox's
    recipients, as ``nemo up`` wires them."""
    directory = StoredKeyDirectory(store)
    directory.reload()
    orchestrator, acme, watcher = (ModuleIdentity.generate(m) for m in ("orchestrator", "acme", "watcher"))
    directory.register(orchestrator.public())
    directory.register(acme.public(), subscriptions=["workload.*"])
    directory.register(watcher.public(), subscriptions=["cluster.#", "intent.*"])
    bus = InProcessBus(read_permissions=directory)
    outbox = OutboxPublisher(store, SecureBus(bus, orchestrator, directory), directory.readers)
    envelopes: list[Envelope] = []
    opened: list[tuple[str, Message]] = []
    petitions: list[Message] = []

    async def tap(message: Message) -> None:
        envelopes.append(Envelope.from_bytes(message.body))

    async def handle(sender: str, message: Message) -> None:
        opened.append((sender, message))

    async def intake(sender: str, message: Message) -> None:
        petitions.append(message)

    try:
        with pytest.raises(BindingRefused):
            await bus.subscribe("acme.events", ["cluster.#"], tap)
        await bus.subscribe("watcher.tap", ["cluster.#"], tap)
        await SecureBus(bus, watcher, directory).subscribe("watcher.events", ["cluster.*", "intent.*"], handle)
        await SecureBus(bus, orchestrator, directory).subscribe("orchestrator.intake", ["intent.#"], intake)
        with store.transaction() as s:
            events.record_event(s, "cluster.not_ready", "clusters/edge", "no heartbeat")
            events.record_event(s, "workload.replica.started", "workloads/web", "nobody declared this")
            events.record_event(s, "intent.accepted", "intent/acme/1", "a petition's outcome")
        skipped_before = _skipped_own()
        assert await outbox.publish_pending() == 3
        await eventually(lambda: len(envelopes) == 1 and len(opened) == 2, what="the sealed events")
        assert envelopes[0].recipient_names == ["watcher"]  # acme holds a live key but no sealed copy
        assert [(sender, m.json()["kind"]) for sender, m in opened] == [
            ("orchestrator", "cluster.not_ready"),
            ("orchestrator", "intent.accepted"),
        ]
        # The control plane's own intent.* events reach its intake queue (it binds intent.#) but are not sealed for
        # it: they are passed over, not taken for petitions (which looped) nor dead-lettered.
        await eventually(lambda: _skipped_own() == skipped_before + 1, what="the intake passing over its own event")
        assert petitions == [] and bus.dead_letters == []

        # A module's declaration changes who the next event is sealed for.
        directory.declare("acme", ["workload.*", "cluster.not_ready"])
        assert directory.readers("cluster.not_ready") == ["acme", "watcher"]
        assert directory.subscriptions("orchestrator") == ("intent.#",)  # built-in default
    finally:
        await bus.close()
