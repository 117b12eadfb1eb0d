"""The RabbitMQ bus backend (aio-pika): same interface and delivery semantics as :class:`InProcessBus`.

Topology (declared on first use; ``nemo bus provision`` creates the exchanges up front for least-privilege users):

* ``nemo``: durable topic exchange every module publishes to.
* one durable quorum queue per ``subscribe(queue, ...)``, bound to its patterns. Quorum queues count deliveries
  themselves (``x-delivery-count``), which is what makes a redelivery limit reliable across consumer crashes.
* ``nemo.dlx``: durable topic exchange; ``<queue>.dead`` is bound to it with routing key ``<queue>`` (topic, so that
  broker topic permissions can confine each module to its own dead letters).

Delivery: publisher confirms (``publish`` returns once the broker has the message on disk), persistent messages,
manual acknowledgement after the handler returns, ``nack(requeue)`` when it raises. On the last allowed delivery
(or at once when the handler raises :class:`DeadLetter`) the message is republished to ``nemo.dlx`` with the reason
in ``x-nemo-dead-reason`` and then acknowledged. The queue's own ``x-delivery-limit`` and dead-letter exchange are a
backstop for a message that crashes its consumer before it can be dead-lettered here.

The AMQP ``user-id`` property is set to the connection's user, which RabbitMQ verifies: a receiver can trust it
names the broker account that published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import aio_pika.abc
import aiormq
import aiormq.abc
import aiormq.exceptions

from nemo_kernel.bus.base import Handler, Message
from nemo_kernel.bus.errors import DeadLetter
from nemo_kernel.bus.subscriptions import BindingRefused

log = logging.getLogger(__name__)

DEAD_REASON_HEADER = "x-nemo-dead-reason"
"""Header of a dead-lettered message that says why it was dead-lettered."""


@dataclass(frozen=True)
class TlsConfig:
    """Client side of TLS to the broker: the CA that signed the broker's certificate, and this client's cert/key."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        """An SSL context that verifies the broker (hostname included) and presents the client certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        return ctx


class _Acks:
    """The acknowledgements of one AMQP channel, sent together once per event-loop pass.

    A handler's message is acknowledged only after it returned (:meth:`ack` records it); what was recorded during
    one pass of the loop goes out in the next: one ``basic.ack`` with ``multiple`` for the handled messages below the
    oldest one still being handled, and one ``basic.ack`` each for the handled messages above it. A ``multiple`` ack
    therefore never covers a message that is not handled yet: delivery tags grow with each delivery on a channel, and
    a message leaves ``_open`` only once it is handled (or nacked, which is sent before any later ack).
    Per-message acks cost one socket write each, which was a tenth of the consumer's time at a few thousand
    messages per second. Delivery tags belong to a channel: after a reconnect the new channel gets a new ``_Acks``,
    and acks of the old one fail quietly (the broker redelivers those messages; handlers are idempotent).
    """

    def __init__(self, channel: aiormq.abc.AbstractChannel, queue: str) -> None:
        self.channel = channel
        self._queue = queue
        self._open: dict[int, None] = {}  # delivered, not yet handled; insertion (= tag) order
        self._handled: list[int] = []
        self._flush_task: asyncio.Task[None] | None = None

    def delivered(self, tag: int) -> None:
        """Record a delivery; call before anything else awaits, so that tags enter ``_open`` in delivery order."""
        self._open[tag] = None

    def ack(self, tag: int) -> None:
        """Acknowledge a handled message (sent with the others of this loop pass)."""
        self._open.pop(tag, None)
        self._handled.append(tag)
        if self._flush_task is None:
            self._flush_task = asyncio.get_running_loop().create_task(self._flush())

    async def nack(self, tag: int) -> None:
        """Give a message back to the queue for redelivery."""
        try:
            await self.channel.basic_nack(tag, requeue=True)
        finally:
            # Only now may a ``multiple`` ack cover this tag: the nack is in the channel's frame queue ahead of it.
            self._open.pop(tag, None)

    async def settle(self) -> None:
        """Send the acknowledgements recorded so far now (before the channel closes)."""
        if self._handled:
            await self._flush()

    async def _flush(self) -> None:
        self._flush_task = None
        handled, self._handled = self._handled, []
        oldest_open = next(iter(self._open), None)
        below = [t for t in handled if oldest_open is None or t < oldest_open]
        above = [t for t in handled if oldest_open is not None and t > oldest_open]
        with _settle_quietly(self._queue, "ack"):
            if below:
                await self.channel.basic_ack(max(below), multiple=len(below) > 1, wait=False)
            for tag in above:
                await self.channel.basic_ack(tag, wait=False)


class _RabbitMqSubscription:
    def __init__(self, bus: RabbitMqBus, channel: aio_pika.abc.AbstractRobustChannel, queue: str) -> None:
        self._bus = bus
        self._channel = channel
        self.queue = queue
        self.cancelled = False
        self.acks: _Acks | None = None

    async def cancel(self) -> None:
        """Stop consuming: unacknowledged messages go back to the queue (handled ones are acknowledged first)."""
        self.cancelled = True
        self._bus._subscriptions.discard(self)
        with contextlib.suppress(Exception):
            if self.acks is not None:
                await self.acks.settle()  # queued ahead of the channel's close
            await self._channel.close()


class RabbitMqBus:
    """A :class:`~nemo_kernel.bus.base.Bus` on RabbitMQ.

    ``url`` is ``amqp://user:password@host:port/vhost`` or ``amqps://...`` with ``tls``. ``prefetch`` bounds the
    unacknowledged messages per subscription (handlers of one queue run concurrently up to that number).
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str = "nemo",
        dead_letter_exchange: str = "nemo.dlx",
        tls: TlsConfig | None = None,
        prefetch: int = 64,
        max_deliveries: int = 5,
        connect_timeout: float = 30.0,
        reconnect_interval: float = 1.0,
        publish_timeout: float = 30.0,
    ) -> None:
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        parts = urlsplit(url)
        if parts.scheme == "amqps" and tls is None:
            raise ValueError("amqps:// needs a TlsConfig (CA, and the client certificate the broker requires)")
        self._url = url
        self.user = unquote(parts.username) if parts.username else "guest"
        self.exchange_name = exchange
        self.dead_letter_exchange = dead_letter_exchange
        self._tls = tls
        self.prefetch = prefetch
        self.max_deliveries = max_deliveries
        self._connect_timeout = connect_timeout
        self._reconnect_interval = reconnect_interval
        self._publish_timeout = publish_timeout
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._publisher: aio_pika.abc.AbstractRobustChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._dlx: aio_pika.abc.AbstractExchange | None = None
        self._subscriptions: set[_RabbitMqSubscription] = set()
        self._start_lock = asyncio.Lock()
        self._publisher_lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect (retrying with exponential backoff up to ``connect_timeout``) and declare the exchanges."""
        async with self._start_lock:
            if self._connection is not None:
                return
            self._connection = await self._connect()
            await self._declare_exchanges()
            await self._open_publisher()

    async def _connect(self) -> aio_pika.abc.AbstractRobustConnection:
        deadline = time.monotonic() + self._connect_timeout
        delay = 0.2
        while True:
            try:
                # After the first success aio-pika's robust connection reconnects (and restores channels, queues,
                # bindings and consumers) by itself every ``reconnect_interval`` seconds.
                return await aio_pika.connect_robust(
                    self._url,
                    ssl_context=self._tls.context() if self._tls else None,
                    reconnect_interval=self._reconnect_interval,
                    client_properties={"connection_name": f"nemo:{self.user}"},
                )
            except (aiormq.exceptions.ProbableAuthenticationError, aiormq.exceptions.ChannelAccessRefused):
                raise  # wrong credentials do not get better by retrying
            except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
                if time.monotonic() + delay > deadline:
                    raise ConnectionError(f"cannot connect to the bus as {self.user!r}: {exc}") from exc
                log.info("bus not reachable (%s); retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)  # backoff between connection attempts, not synchronisation
                delay = min(delay * 2, 5.0)

    async def _declare_exchanges(self) -> None:
        # Least-privilege users may not declare exchanges (configure permission), so look first and declare only
        # what is missing; a failed passive declare closes its channel, hence a fresh channel per attempt.
        assert self._connection is not None
        for name, kind in (
            (self.exchange_name, aio_pika.ExchangeType.TOPIC),
            (self.dead_letter_exchange, aio_pika.ExchangeType.TOPIC),
        ):
            channel = await self._connection.channel()
            try:
                await channel.declare_exchange(name, kind, passive=True, robust=False)
            except aiormq.exceptions.ChannelNotFoundEntity:
                channel = await self._connection.channel()
                await channel.declare_exchange(name, kind, durable=True, robust=False)
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()

    async def close(self) -> None:
        """Stop consumers and disconnect."""
        for sub in list(self._subscriptions):
            await sub.cancel()
        if self._connection is not None:
            await self._connection.close()
        self._connection = None
        self._publisher = None

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Publish a persistent message on the ``nemo`` exchange; returns once the broker confirmed it.

        Raises if the broker refuses it (e.g. ``ChannelAccessRefused`` for a routing key outside the user's topic
        permissions) or if the connection drops before the confirm: then the message may or may not have arrived,
        and the caller may publish it again with the same ``message_id`` (receivers deduplicate on it).
        """
        message_id = message_id or uuid.uuid4().hex
        channel = await self._publishing_channel()
        # Straight to aiormq with the frame properties built once: aio-pika's Message and Exchange.publish wrappers
        # cost about a third of the client's time per message, and this is the hot path. A Nack from the broker
        # raises DeliveryError as through aio-pika.
        await channel.basic_publish(
            body,
            exchange=self.exchange_name,
            routing_key=routing_key,
            properties=aiormq.spec.Basic.Properties(
                content_type=content_type,
                headers=dict(headers or {}),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT.value,
                message_id=message_id,
                timestamp=datetime.now(UTC),
                user_id=self.user,
            ),
            mandatory=False,  # like the in-process bus: a key no queue is bound to is simply dropped
            timeout=self._publish_timeout,
        )
        return message_id

    async def _publishing_channel(self) -> aiormq.abc.AbstractChannel:
        publisher = self._publisher
        if publisher is None or publisher.is_closed:
            await self._publishing_exchanges()  # connects, or reopens the channel, under the locks
            assert self._publisher is not None
            publisher = self._publisher
        return await publisher.get_underlay_channel()

    async def _publishing_exchanges(self) -> tuple[aio_pika.abc.AbstractExchange, aio_pika.abc.AbstractExchange]:
        await self.start()
        async with self._publisher_lock:
            assert self._connection is not None and self._publisher is not None
            if self._publisher.is_closed:
                # Either the connection is down (aio-pika restores the channel once it is back) or the broker closed
                # just this channel (e.g. ACCESS_REFUSED on a routing key), which aio-pika does not reopen.
                async with asyncio.timeout(self._publish_timeout):
                    await self._connection.ready()
                if self._publisher.is_closed:
                    with contextlib.suppress(Exception):
                        await self._publisher.close()
                    await self._open_publisher()
            assert self._exchange is not None and self._dlx is not None
            return self._exchange, self._dlx

    async def _open_publisher(self) -> None:
        assert self._connection is not None
        self._publisher = await self._connection.channel(publisher_confirms=True)
        self._exchange = await self._publisher.declare_exchange(self.exchange_name, passive=True)
        self._dlx = await self._publisher.declare_exchange(self.dead_letter_exchange, passive=True)

    def _amqp_message(
        self, body: bytes, message_id: str, content_type: str, headers: dict[str, Any]
    ) -> aio_pika.Message:
        return aio_pika.Message(
            body,
            message_id=message_id,
            content_type=content_type,
            headers=headers,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=time.time(),
            user_id=self.user,
        )

    async def subscribe(self, queue: str, patterns: Sequence[str], handler: Handler) -> _RabbitMqSubscription:
        """Declare the durable quorum queue ``queue`` (and ``<queue>.dead``), bind it to ``patterns``, consume it."""
        await self.start()
        assert self._connection is not None
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        dlx = await channel.declare_exchange(self.dead_letter_exchange, passive=True)
        dead = await channel.declare_queue(f"{queue}.dead", durable=True, arguments={"x-queue-type": "quorum"})
        await dead.bind(dlx, routing_key=queue)
        exchange = await channel.declare_exchange(self.exchange_name, passive=True)
        q = await channel.declare_queue(
            queue,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": self.dead_letter_exchange,
                "x-dead-letter-routing-key": queue,
                # Backstop only: one more than we allow, so our own dead-lettering (with a reason) normally wins.
                "x-delivery-limit": self.max_deliveries,
            },
        )
        for pattern in patterns:
            try:
                await q.bind(exchange, routing_key=pattern)
            except aiormq.exceptions.ChannelAccessRefused as exc:
                # The broker checked the read pattern of the user's topic permission (its declared subscriptions).
                await channel.close()
                raise BindingRefused(self.user, pattern) from exc

        sub = _RabbitMqSubscription(self, channel, queue)

        # Consumed straight from aiormq, like publish: aio-pika's IncomingMessage and its extra task per delivery
        # were a fifth of the consumer's time. aio-pika still restores the channel, queues and bindings after a
        # reconnect; the consumer is started again here, on the channel's reopen and on a broker-side cancel.
        async def consume(*_: Any) -> None:
            if sub.cancelled:
                return
            underlay = await channel.get_underlay_channel()
            acks = sub.acks = _Acks(underlay, queue)
            tag = f"nemo.{self.user}.{uuid.uuid4().hex}"

            async def on_delivery(delivered: aiormq.abc.DeliveredMessage) -> None:
                await self._deliver(queue, delivered, acks, handler)

            async def on_cancel(frame: aiormq.spec.Basic.Cancel) -> None:
                if frame.consumer_tag == tag and not sub.cancelled and not underlay.is_closed:
                    log.warning("broker cancelled the consumer of queue %s; consuming again", queue)
                    asyncio.get_running_loop().call_later(self._reconnect_interval, _spawn, consume_again())

            underlay.on_consumer_cancel_callbacks.add(on_cancel)
            await underlay.basic_consume(queue, on_delivery, no_ack=False, consumer_tag=tag)

        async def consume_again() -> None:
            try:
                await consume()
            except Exception as exc:  # the channel's own recovery (reopen callback) takes over from here
                log.warning("could not consume queue %s again: %s", queue, exc)

        await consume()
        channel.reopen_callbacks.add(consume)
        self._subscriptions.add(sub)
        return sub

    async def _deliver(self, queue: str, delivered: aiormq.abc.DeliveredMessage, acks: _Acks, handler: Handler) -> None:
        deliver = delivered.delivery
        assert isinstance(deliver, aiormq.spec.Basic.Deliver)
        tag = deliver.delivery_tag
        assert tag is not None
        acks.delivered(tag)  # first, before any await (see _Acks)
        props = delivered.header.properties
        raw_headers = props.headers or {}
        previous = raw_headers.get("x-delivery-count", 0)
        delivery = (previous if isinstance(previous, int) else 0) + 1
        stamp = props.timestamp
        message = Message(
            routing_key=deliver.routing_key or "",
            body=delivered.body,
            message_id=props.message_id or "",
            timestamp=stamp.timestamp() if isinstance(stamp, datetime) else time.time(),
            content_type=props.content_type or "application/octet-stream",
            headers=_text_headers(raw_headers, props.user_id),
            redelivered=bool(deliver.redelivered) or delivery > 1,
        )
        try:
            await handler(message)
        except DeadLetter as exc:
            await self._settle_failed(queue, acks, tag, message, delivery, exc.reason, final=True)
        except Exception as exc:
            log.warning("handler of queue %s failed on %s (delivery %d): %s", queue, message.routing_key, delivery, exc)
            final = delivery >= self.max_deliveries
            await self._settle_failed(
                queue, acks, tag, message, delivery, f"handler failed: {type(exc).__name__}", final=final
            )
        else:
            acks.ack(tag)

    async def _settle_failed(
        self,
        queue: str,
        acks: _Acks,
        tag: int,
        message: Message,
        delivery: int,
        reason: str,
        *,
        final: bool,
    ) -> None:
        with _settle_quietly(queue, "dead-letter" if final else "nack"):
            if not final:
                await acks.nack(tag)
                return
            _, dlx = await self._publishing_exchanges()
            headers: dict[str, Any] = dict(message.headers)
            headers.update(
                {
                    DEAD_REASON_HEADER: reason,
                    "x-nemo-queue": queue,
                    "x-nemo-routing-key": message.routing_key,
                    "x-nemo-deliveries": delivery,
                }
            )
            await dlx.publish(
                self._amqp_message(message.body, message.message_id, message.content_type, headers),
                queue,
                mandatory=False,
                timeout=self._publish_timeout,
            )
            # Acknowledge only once the dead-letter copy is confirmed: a crash in between redelivers, never loses.
            acks.ack(tag)
            log.warning("dead-lettered message %s of queue %s: %s", message.message_id, queue, reason)


def _text_headers(raw: Mapping[str, Any], user_id: str | None) -> dict[str, str]:
    headers = {
        k: v.decode() if isinstance(v, bytes) else str(v) for k, v in raw.items() if not isinstance(v, list | dict)
    }
    if user_id:
        headers["x-nemo-user-id"] = user_id  # verified by the broker
    return headers


_background: set[asyncio.Task[None]] = set()


def _spawn(coro: Any) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


@contextlib.contextmanager
def _settle_quietly(queue: str, what: str) -> Any:
    # A settle fails when the connection dropped during the handler; the broker then redelivers the message
    # (handlers are idempotent on message id), so log and carry on rather than crash the consumer task.
    try:
        yield
    except (TimeoutError, aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
        log.info("could not %s a message of queue %s (%s); the broker will redeliver it", what, queue, exc)
