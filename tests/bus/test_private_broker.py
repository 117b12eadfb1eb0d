"""Destructive checks on a private RabbitMQ node: provisioning, least privilege, ciphertext only, restart, TLS."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Iterator

import aio_pika
import aiormq.exceptions
import httpx
import pytest

from nemo_kernel.bus import Message, RabbitMqBus, TlsConfig
from nemo_kernel.bus.identity import InMemoryKeyDirectory, ModuleIdentity
from nemo_kernel.bus.provision import provision
from nemo_kernel.bus.secure import SecureBus
from nemo_kernel.bus.status import bus_status

from .conftest import eventually
from .rabbit_node import PrivateRabbit

MODULES = ["orchestrator", "ppef", "security"]


@pytest.fixture(scope="module")
def provisioned(private_rabbit: PrivateRabbit) -> Iterator[dict[str, str]]:
    """Provision the private node once for this module; yields module passwords."""
    passwords = provision(private_rabbit.mgmt_url, private_rabbit.admin_user, private_rabbit.admin_password, MODULES)
    assert sorted(passwords) == MODULES
    yield passwords


@pytest.fixture
def world() -> tuple[dict[str, ModuleIdentity], InMemoryKeyDirectory]:
    identities = {m: ModuleIdentity.generate(m) for m in MODULES}
    return identities, InMemoryKeyDirectory([i.public() for i in identities.values()])


def url(node: PrivateRabbit, passwords: dict[str, str], module: str) -> str:
    return node.url(module, passwords[module])


def test_provision_is_idempotent_and_guest_is_gone(private_rabbit: PrivateRabbit, provisioned: dict[str, str]) -> None:
    again = provision(private_rabbit.mgmt_url, private_rabbit.admin_user, private_rabbit.admin_password, MODULES)
    assert again == {}  # existing users keep their passwords; nothing to hand out
    users = httpx.get(
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
    created = CliRunner().invoke(app, ["provision", "agent-edge-1", *common, "-o", "json"], env=env)
    assert created.exit_code == 0, created.output
    assert list(json.loads(created.output)) == ["agent-edge-1"]
    again = CliRunner().invoke(app, ["provision", "agent-edge-1", *common], env=env)
    assert again.exit_code == 0 and "up to date" in again.output
    shown = CliRunner().invoke(app, ["status", *common], env=env)
    assert shown.exit_code == 0, shown.output
    assert "modules of vhost nemo" in shown.output
    as_json = CliRunner().invoke(app, ["status", *common, "-o", "json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    assert "agent-edge-1" in {m["name"] for m in json.loads(as_json.output)["modules"]}
