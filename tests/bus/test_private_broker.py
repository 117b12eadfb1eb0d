"""Destructive checks on a private RabbitMQ node: provisioning, least privilege, ciphertext only, restart, TLS."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aio_pika
import aiormq.exceptions
import pytest
import yaml

from nemo_kernel.bus import Message
from nemo_kernel.bus.envelope import Envelope
from nemo_kernel.bus.identity import InMemoryKeyDirectory, ModuleIdentity
from nemo_kernel.bus.provision import provision
from nemo_kernel.bus.rabbitmq import RabbitMqBus, TlsConfig
from nemo_kernel.bus.secure import SecureBus
from nemo_kernel.bus.status import bus_status
from nemo_kernel.bus.subscriptions import BindingRefused, may_bind, read_regex
from tests.stack import HTTP, running_stack

from .conftest import eventually
from .rabbit_node import PrivateRabbit
from .test_subscriptions import BINDINGS, DECLARED

MODULES = ["acme", "orchestrator", "ppef", "security"]
SUBSCRIPTIONS = {
    "acme": list(DECLARED),
    "orchestrator": ["intent.#", "sla.#", "cluster.#"],
    "ppef": ["placement.#", "deployment.#", "workload.#", "cluster.not_ready"],
    "security": ["workload.*"],
}


def _provision(node: PrivateRabbit) -> dict[str, str]:
    return provision(node.mgmt_url, node.admin_user, node.admin_password, MODULES, subscriptions=SUBSCRIPTIONS)


@pytest.fixture(scope="module")
def provisioned(private_rabbit: PrivateRabbit) -> Iterator[dict[str, str]]:
    """Provision the private node once for this module; yields module passwords."""
    passwords = _provision(private_rabbit)
    assert sorted(passwords) == MODULES
    yield passwords


@pytest.fixture
def world() -> tuple[dict[str, ModuleIdentity], InMemoryKeyDirectory]:
    identities = {m: ModuleIdentity.generate(m) for m in MODULES}
    return identities, InMemoryKeyDirectory([i.public() for i in identities.values()], SUBSCRIPTIONS)


def url(node: PrivateRabbit, passwords: dict[str, str], module: str) -> str:
    return node.url(module, passwords[module])


def test_provision_is_idempotent_and_guest_is_gone(private_rabbit: PrivateRabbit, provisioned: dict[str, str]) -> None:
    again = _provision(private_rabbit)
    assert again == {}  # existing users keep their passwords; nothing to hand out
    users = HTTP.get(
        f"{private_rabbit.mgmt_url}/api/users", auth=(private_rabbit.admin_user, private_rabbit.admin_password)
    ).json()
    assert "guest" not in {u["name"] for u in users}


async def test_guest_login_fails(private_rabbit: PrivateRabbit, provisioned: dict[str, str]) -> None:
    with pytest.raises(aiormq.exceptions.ProbableAuthenticationError):
        await aio_pika.connect(private_rabbit.url("guest", "guest", "/"))


async def test_module_cannot_consume_another_modules_queue(
    private_rabbit: PrivateRabbit, provisioned: dict[str, str]
) -> None:
    orchestrator = RabbitMqBus(url(private_rabbit, provisioned, "orchestrator"))
    try:

        async def ignore(message: Message) -> None:
            pass

        await orchestrator.subscribe("orchestrator.events", ["sla.#"], ignore)
        connection = await aio_pika.connect(url(private_rabbit, provisioned, "ppef"))
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue("orchestrator.events", ensure=False)
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await queue.consume(ignore)  # type: ignore[arg-type]
            channel = await connection.channel()
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await channel.declare_queue("orchestrator.stolen", durable=True)
    finally:
        await orchestrator.close()


async def test_module_cannot_publish_outside_its_topics(
    private_rabbit: PrivateRabbit, provisioned: dict[str, str]
) -> None:
    ppef = RabbitMqBus(url(private_rabbit, provisioned, "ppef"))
    try:
        await ppef.publish("sla.violated", b"{}")  # allowed
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await ppef.publish("workload.registered", b"{}")
        await ppef.publish("sla.recovered", b"{}")  # the channel comes back after the refusal
    finally:
        await ppef.close()


async def test_user_id_is_vouched_for_by_the_broker(private_rabbit: PrivateRabbit, provisioned: dict[str, str]) -> None:
    orchestrator = RabbitMqBus(url(private_rabbit, provisioned, "orchestrator"))
    ppef = RabbitMqBus(url(private_rabbit, provisioned, "ppef"))
    got: list[Message] = []
    try:

        async def keep(message: Message) -> None:
            got.append(message)

        await ppef.subscribe("ppef.user-id", ["placement.#"], keep)
        await orchestrator.publish("placement.decided", b"{}")
        await eventually(lambda: len(got) == 1, what="delivery")
        assert got[0].headers["x-nemo-user-id"] == "orchestrator"
        # Claiming to be someone else is refused by the broker itself.
        connection = await aio_pika.connect(url(private_rabbit, provisioned, "orchestrator"))
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange("nemo")
            with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
                await exchange.publish(aio_pika.Message(b"{}", user_id="ppef"), "placement.decided")
    finally:
        await orchestrator.close()
        await ppef.close()


async def test_broker_allows_exactly_the_bindings_the_declared_subscriptions_cover(
    private_rabbit: PrivateRabbit, provisioned: dict[str, str]
) -> None:
    """RabbitMQ checks the read pattern of the topic permission on queue.bind: its verdict on each binding key is the
    one the in-process bus gives (``may_bind``)."""
    connection = await aio_pika.connect(url(private_rabbit, provisioned, "acme"))
    verdicts: dict[str, bool] = {}
    async with connection:
        channel = await connection.channel()
        probe = await channel.declare_queue("acme.probe", auto_delete=True)
        for binding, _ in BINDINGS:
            channel = await connection.channel()  # a refusal closes the channel
            queue = await channel.get_queue(probe.name, ensure=False)
            try:
                await queue.bind("nemo", binding)
                verdicts[binding] = True
            except aiormq.exceptions.ChannelAccessRefused as exc:
                assert f"ACCESS_REFUSED - access to topic '{binding}'" in str(exc)
                verdicts[binding] = False
    assert verdicts == {binding: allowed for binding, allowed in BINDINGS}
    assert verdicts == {binding: may_bind("acme", DECLARED, binding) for binding, _ in BINDINGS}


async def test_module_reads_only_its_declared_subscriptions_and_is_sealed_only_those(
    private_rabbit: PrivateRabbit, provisioned: dict[str, str], world
) -> None:
    identities, directory = world
    buses = {
        m: SecureBus(RabbitMqBus(url(private_rabbit, provisioned, m)), identities[m], directory)
        for m in ("orchestrator", "ppef", "security")
    }
    got: dict[str, list[Message]] = {"ppef": [], "security": []}
    raw: list[Envelope] = []

    async def ignore(sender: str, message: Message) -> None:
        pass

    def keeper(module: str) -> Callable[[str, Message], Awaitable[None]]:
        async def keep(sender: str, message: Message) -> None:
            got[module].append(message)

        return keep

    admin = await aio_pika.connect(private_rabbit.url(private_rabbit.admin_user, private_rabbit.admin_password))
    try:
        # Declared for workload.* only: binding everything is refused by the broker itself.
        with pytest.raises(BindingRefused) as refused:
            await buses["security"].subscribe("security.everything", ["#"], ignore)
        assert isinstance(refused.value.__cause__, aiormq.exceptions.ChannelAccessRefused)
        with pytest.raises(BindingRefused):
            await buses["security"].subscribe("security.clusters", ["cluster.not_ready"], ignore)

        await buses["security"].subscribe("security.events", ["workload.*"], keeper("security"))
        await buses["ppef"].subscribe("ppef.events", ["cluster.not_ready", "workload.*"], keeper("ppef"))
        channel = await admin.channel()
        tap = await channel.declare_queue("admin.subscriptions-tap", exclusive=True)
        await tap.bind("nemo", "cluster.not_ready")

        async def sniff(m: aio_pika.abc.AbstractIncomingMessage) -> None:
            raw.append(Envelope.from_bytes(m.body))
            await m.ack()

        await tap.consume(sniff)
        for key in ("cluster.not_ready", "workload.registered"):
            await buses["orchestrator"].publish(key, b"{}", directory.readers(key))
        await eventually(lambda: len(got["ppef"]) == 2 and len(got["security"]) == 1 and len(raw) == 1, what="events")
        assert [m.routing_key for m in got["security"]] == ["workload.registered"]
        # Sealed for the modules declared for it; no copy for security, although its key is live.
        assert raw[0].recipient_names == ["acme", "orchestrator", "ppef"]
    finally:
        await admin.close()
        for bus in buses.values():
            await bus.close()


async def test_admin_sees_ciphertext_only(private_rabbit: PrivateRabbit, provisioned: dict[str, str], world) -> None:
    identities, directory = world
    secret = b'{"db_password":"hunter2-very-secret"}'
    orchestrator = SecureBus(
        RabbitMqBus(url(private_rabbit, provisioned, "orchestrator")), identities["orchestrator"], directory
    )
    ppef = SecureBus(RabbitMqBus(url(private_rabbit, provisioned, "ppef")), identities["ppef"], directory)
    raw: list[bytes] = []
    plain: list[bytes] = []
    admin = await aio_pika.connect(private_rabbit.url(private_rabbit.admin_user, private_rabbit.admin_password))
    try:
        channel = await admin.channel()
        tap = await channel.declare_queue("admin.tap", exclusive=True)
        await tap.bind("nemo", "#")

        async def sniff(m: aio_pika.abc.AbstractIncomingMessage) -> None:
            raw.append(m.body)
            await m.ack()

        async def handle(who: str, message: Message) -> None:
            plain.append(message.body)

        await tap.consume(sniff)
        await ppef.subscribe("ppef.secrets", ["deployment.#"], handle)
        await orchestrator.publish("deployment.applied", secret, ["ppef"])
        await eventually(lambda: len(raw) == 1 and len(plain) == 1, what="tap and recipient")
        assert plain == [secret]
        assert raw[0].startswith(b"NEV1")
        assert secret not in raw[0] and b"hunter2" not in raw[0]
    finally:
        await admin.close()
        await orchestrator.close()
        await ppef.close()


@pytest.mark.parametrize("crash", ["stop_app", "sigkill"])
async def test_broker_restart_mid_stream_handles_each_confirmed_message_once(
    private_rabbit: PrivateRabbit, provisioned: dict[str, str], world, crash: str
) -> None:
    """``stop_app``: the broker application stops cleanly and starts again in the same VM. ``sigkill``: the Erlang
    VM is killed with SIGKILL (nothing flushed, no connection closed) and the node restarted on the same data
    directory, so what was confirmed must have been on disk already."""
    identities, directory = world
    queue = f"ppef.stream-{crash.replace('_', '-')}"
    total = 300
    publisher = SecureBus(
        RabbitMqBus(url(private_rabbit, provisioned, "orchestrator"), publish_timeout=5),
        identities["orchestrator"],
        directory,
    )
    consumer = SecureBus(
        RabbitMqBus(url(private_rabbit, provisioned, "ppef"), prefetch=16), identities["ppef"], directory
    )
    handled: list[str] = []
    confirmed: set[str] = set()
    third = asyncio.Event()
    down = asyncio.Event()

    async def handle(who: str, message: Message) -> None:
        handled.append(message.message_id)
        if len(handled) >= total // 3:
            third.set()

    async def restart_broker() -> None:
        await third.wait()
        await asyncio.to_thread(private_rabbit.kill if crash == "sigkill" else private_rabbit.stop_app)
        down.set()
        if crash == "sigkill":
            nudged = await asyncio.to_thread(private_rabbit.restart)
            print(f"quorum queues that needed an election after the restart: {nudged}")  # see PrivateRabbit.restart
        else:
            await asyncio.to_thread(private_rabbit.start_app)

    try:
        await consumer.subscribe(queue, ["workload.#"], handle)
        restarter = asyncio.create_task(restart_broker())
        deadline = time.monotonic() + 120
        for i in range(total):
            if i == total // 2:
                await down.wait()  # the second half is published while the broker is down and coming back
            message_id = f"stream-{i}"
            while True:  # the application's retry: same message id, so receivers deduplicate
                try:
                    await publisher.publish("workload.tick", str(i).encode(), ["ppef"], message_id=message_id)
                    confirmed.add(message_id)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)  # back off while the broker is away
        await restarter
        await eventually(lambda: confirmed <= set(handled), timeout=60, what="every confirmed message handled")

        # Drained: nothing ready or unacknowledged left in the queue, so no late duplicate is still on its way.
        def drained() -> bool:
            q = next(
                q
                for q in bus_status(
                    private_rabbit.mgmt_url, private_rabbit.admin_user, private_rabbit.admin_password, peek=0
                ).queues
                if q.name == queue
            )
            return q.ready == 0 and q.unacked == 0

        await eventually(drained, timeout=30, what="queue drained")
        counts = collections.Counter(handled)
        assert len(confirmed) == total
        assert {m for m, n in counts.items() if n > 1} == set()
        assert set(counts) <= confirmed | {f"stream-{i}" for i in range(total)}
    finally:
        await publisher.close()
        await consumer.close()


async def test_tls_with_client_certificate(private_rabbit: PrivateRabbit, provisioned: dict[str, str]) -> None:
    certs = private_rabbit.certs
    tls_url = private_rabbit.url("orchestrator", provisioned["orchestrator"], tls=True)
    bus = RabbitMqBus(tls_url, tls=TlsConfig(certs.ca, certs.client_cert, certs.client_key))
    got: list[Message] = []
    try:

        async def keep(message: Message) -> None:
            got.append(message)

        await bus.subscribe("orchestrator.tls", ["cluster.#"], keep)
        await bus.publish("cluster.joined", b'{"via":"tls"}')
        await eventually(lambda: len(got) == 1, what="delivery over TLS")
    finally:
        await bus.close()
    no_cert = RabbitMqBus(tls_url, tls=TlsConfig(certs.ca), connect_timeout=2)
    with pytest.raises((ConnectionError, OSError, aiormq.exceptions.AMQPError)):
        await no_cert.start()
    await no_cert.close()


def test_status_lists_modules_queues_and_refusals(private_rabbit: PrivateRabbit, provisioned: dict[str, str]) -> None:
    status = bus_status(private_rabbit.mgmt_url, private_rabbit.admin_user, private_rabbit.admin_password)
    assert {"orchestrator", "ppef", "security"} <= {m.name for m in status.modules}
    # The queues of the restart tests above (this check relies on them having run first).
    assert {"ppef.stream-stop-app", "ppef.stream-sigkill"} <= {q.name for q in status.queues}


def test_cli_provision_and_status(private_rabbit: PrivateRabbit, provisioned: dict[str, str]) -> None:
    from typer.testing import CliRunner

    from nemo_kernel.cli.bus_commands import app

    env = {"NEMO_BUS_ADMIN_PASSWORD": private_rabbit.admin_password, "NEMO_BUS_MGMT_URL": private_rabbit.mgmt_url}
    common = ["--admin-user", private_rabbit.admin_user]
    subscribe = ["--subscribe", "agent-edge-1=workload.*", "--subscribe", "agent-edge-1=cluster.edge-1.#"]
    created = CliRunner().invoke(app, ["provision", "agent-edge-1", *subscribe, *common, "-o", "json"], env=env)
    assert created.exit_code == 0, created.output
    assert list(json.loads(created.output)) == ["agent-edge-1"]
    topic = HTTP.get(
        f"{private_rabbit.mgmt_url}/api/users/agent-edge-1/topic-permissions",
        auth=(private_rabbit.admin_user, private_rabbit.admin_password),
    ).json()
    read = next(t["read"] for t in topic if t["exchange"] == "nemo")
    assert read == read_regex("agent-edge-1", ["workload.*", "cluster.edge-1.#"])
    bad = CliRunner().invoke(app, ["provision", "agent-edge-1", "--subscribe", "agent-edge-1=#.*x", *common], env=env)
    assert bad.exit_code != 0 and "#.*x" in bad.output
    again = CliRunner().invoke(app, ["provision", "agent-edge-1", *common], env=env)
    assert again.exit_code == 0 and "up to date" in again.output
    shown = CliRunner().invoke(app, ["status", *common], env=env)
    assert shown.exit_code == 0, shown.output
    assert "modules of vhost nemo" in shown.output
    as_json = CliRunner().invoke(app, ["status", *common, "-o", "json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    assert "agent-edge-1" in {m["name"] for m in json.loads(as_json.output)["modules"]}


def test_cli_provision_takes_subscriptions_from_the_module_registrations(
    private_rabbit: PrivateRabbit, provisioned: dict[str, str], tmp_path: Path
) -> None:
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    with running_stack(tmp_path / "data", {"NEMO_CLUSTERS_FILE": str(clusters)}) as stack:
        keys = ModuleIdentity.generate("billing").public().to_dict()
        registered = stack.api("POST", "/modules", json={**keys, "subscriptions": ["workload.*", "sla.#"]})
        assert registered.status_code == 201, registered.text
        env = {"NEMO_BUS_ADMIN_PASSWORD": private_rabbit.admin_password, "NEMO_BUS_MGMT_URL": private_rabbit.mgmt_url}
        common = ["--admin-user", private_rabbit.admin_user, "--from-directory"]
        stack.cli("bus", "provision", "billing", "agent-edge-2", *common, env=env)
    admin = (private_rabbit.admin_user, private_rabbit.admin_password)
    for module, declared in [("billing", ["workload.*", "sla.#"]), ("agent-edge-2", [])]:
        topic = HTTP.get(f"{private_rabbit.mgmt_url}/api/users/{module}/topic-permissions", auth=admin).json()
        assert next(t["read"] for t in topic if t["exchange"] == "nemo") == read_regex(module, declared)
