"""The secure bus: every message sealed for its recipients on the way out, verified and opened on the way in.

:class:`SecureBus` wraps any :class:`~nemo_kernel.bus.base.Bus`. A handler receives the *verified* sender module
and the message with its plaintext; what fails verification never reaches it: it is dead-lettered (the handler
raises :class:`~nemo_kernel.bus.errors.DeadLetter`), logged without secrets, and counted in
``nemo_bus_refused_total{reason=...}``.

Handling is idempotent on (sender, message id): a message redelivered after a crash, or delivered twice while the
first delivery is still being handled, reaches the application once; a second copy the broker did not mark as
redelivered is a replay (dead-lettered), whether it came while the first was handled or after. The record of
handled messages is the replay guard's :class:`~nemo_kernel.bus.replay.SeenMessages` (bounded; pass
``persist``/``initial`` to survive restarts).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import NoReturn

from prometheus_client import Counter

from nemo_kernel.bus import crypto
from nemo_kernel.bus.base import Bus, Message, Subscription
from nemo_kernel.bus.envelope import (
    CONTENT_TYPE,
    Envelope,
    EnvelopeRefused,
    NotARecipient,
    Replay,
    ReplayGuard,
    RoutingMismatch,
    open_envelope,
    seal,
)
from nemo_kernel.bus.errors import DeadLetter
from nemo_kernel.bus.identity import KeyDirectory, ModuleIdentity, ModuleKeys

log = logging.getLogger(__name__)

REFUSED = Counter("nemo_bus_refused_total", "Bus messages refused before reaching a handler", ["reason"])
ECHOES = Counter(
    "nemo_bus_own_messages_skipped_total", "A module's own bus messages routed back to it, not addressed to it"
)
DUPLICATES = Counter("nemo_bus_duplicates_total", "Redelivered bus messages already handled, acknowledged silently")

SecureHandler = Callable[[str, Message], Awaitable[None]]
"""``handler(verified_sender, message)``: ``message.body`` is the plaintext."""


class HandledOnce:
    """Runs a handler at most once per key to completion, even when duplicates arrive concurrently."""

    def __init__(self, guard: ReplayGuard) -> None:
        self._guard = guard
        self._in_flight: dict[str, asyncio.Event] = {}

    async def run(self, sender: str, message_id: str, timestamp: float, handle: Callable[[], Awaitable[None]]) -> bool:
        """Run ``handle`` unless this message was handled already; True if it ran. A failed run does not count."""
        key = ReplayGuard.key(sender, message_id)
        while (running := self._in_flight.get(key)) is not None:
            await running.wait()
        if key in self._guard.seen:
            return False
        done = self._in_flight[key] = asyncio.Event()
        try:
            # Once begun, a message is handled and recorded to the end even if its consumer is stopped meanwhile:
            # cancelled between the two (or while a handler's thread still commits), the effect would stay without
            # its record, and after a restart the message would be handled again instead of refused as a replay.
            work = asyncio.create_task(self._handle_and_remember(sender, message_id, timestamp, handle))
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                await asyncio.wait({work})
                if not work.cancelled():
                    work.exception()  # the consumer is stopping; a failed handling is redelivered like any other
                raise
            return True
        finally:
            del self._in_flight[key]
            done.set()

    async def _handle_and_remember(
        self, sender: str, message_id: str, timestamp: float, handle: Callable[[], Awaitable[None]]
    ) -> None:
        await handle()
        if self._guard.seen.persistent:
            # A stored record means a database write (fsync'd on SQLite): off the event loop, so the API and
            # the other consumers sharing this loop are not held up by it.
            await asyncio.to_thread(self._guard.remember, sender, message_id, timestamp)
        else:
            self._guard.remember(sender, message_id, timestamp)


class SecureBus:
    """Signed, end-to-end encrypted messaging over ``bus`` as module ``identity``.

    ``directory`` resolves recipients' current keys (when sealing) and senders' keys (when opening).
    ``window`` is the accepted clock difference in seconds; ``ephemeral_max_age`` how long the sender's ephemeral
    X25519 key is reused (0: one per message; see :mod:`nemo_kernel.bus.crypto`).
    """

    def __init__(
        self,
        bus: Bus,
        identity: ModuleIdentity,
        directory: KeyDirectory,
        *,
        window: float = 300.0,
        replay_guard: ReplayGuard | None = None,
        ephemeral_max_age: float = 30.0,
    ) -> None:
        self.bus = bus
        self.identity = identity
        self.directory = directory
        self.guard = replay_guard if replay_guard is not None else ReplayGuard(window)
        self._once = HandledOnce(self.guard)
        self._ephemeral = crypto.EphemeralKeyPair(max_age=ephemeral_max_age)
        self._keks = crypto.KekCache()

    async def start(self) -> None:
        """Start the underlying bus."""
        await self.bus.start()

    async def close(self) -> None:
        """Close the underlying bus."""
        await self.bus.close()

    def seal(
        self,
        routing_key: str,
        payload: bytes,
        recipients: Iterable[str],
        *,
        content_type: str = "application/json",
        message_id: str | None = None,
    ) -> Envelope:
        """Seal ``payload`` for the current keys of ``recipients`` (module names)."""
        keys: list[ModuleKeys] = [self.directory.current(name) for name in dict.fromkeys(recipients)]
        return seal(
            self.identity,
            keys,
            routing_key,
            payload,
            content_type=content_type,
            message_id=message_id,
            ephemeral=self._ephemeral,
        )

    async def publish(
        self,
        routing_key: str,
        payload: bytes,
        recipients: Sequence[str],
        *,
        content_type: str = "application/json",
        message_id: str | None = None,
    ) -> str:
        """Seal ``payload`` for ``recipients`` and publish it; returns the message id once the bus accepted it."""
        envelope = self.seal(routing_key, payload, recipients, content_type=content_type, message_id=message_id)
        return await self.bus.publish(
            routing_key, envelope.to_bytes(), message_id=envelope.message_id, content_type=CONTENT_TYPE
        )

    async def subscribe(self, queue: str, patterns: Sequence[str], handler: SecureHandler) -> Subscription:
        """Consume ``queue``: ``handler(verified_sender, message_with_plaintext)``, once per message."""

        async def on_message(message: Message) -> None:
            await self._receive(queue, message, handler)

        return await self.bus.subscribe(queue, patterns, on_message)

    def open(self, message: Message) -> tuple[str, Message]:
        """Verify and decrypt one transport message; raise :class:`EnvelopeRefused` (nothing is remembered)."""
        opened = open_envelope(
            message.body, self.identity, self.directory, self.guard, remember=False, kek_cache=self._keks
        )
        if opened.routing_key != message.routing_key or opened.message_id != message.message_id:
            raise RoutingMismatch(
                f"signed for {opened.routing_key!r}/{opened.message_id}, delivered as "
                f"{message.routing_key!r}/{message.message_id}"
            )
        # Built directly rather than with dataclasses.replace, which costs more than decrypting the payload.
        plain = Message(
            routing_key=message.routing_key,
            body=opened.payload,
            message_id=message.message_id,
            timestamp=opened.timestamp,
            content_type=opened.content_type,
            headers=message.headers,
            redelivered=message.redelivered,
        )
        return opened.sender, plain

    async def _receive(self, queue: str, message: Message, handler: SecureHandler) -> None:
        try:
            sender, plain = self.open(message)
        except Replay:
            if message.redelivered:
                # The broker gave back a message we handled but whose ack was lost (crash, reconnect): not an attack.
                DUPLICATES.inc()
                return
            self._refuse(queue, message, "replay", "message id already handled")
        except NotARecipient as exc:
            if Envelope.from_bytes(message.body).sender == self.identity.module:
                # Its own publication (signature verified before this check), routed back by one of its bindings
                # and sealed for others only: not for it, and no attack either.
                ECHOES.inc()
                return
            self._refuse(queue, message, exc.reason, str(exc))
        except EnvelopeRefused as exc:
            self._refuse(queue, message, exc.reason, str(exc))
        if not await self._once.run(sender, plain.message_id, plain.timestamp, lambda: handler(sender, plain)):
            if message.redelivered:
                DUPLICATES.inc()
                return
            # A copy published while the first was being handled is the same replay as one published after it: the
            # outcome must not depend on when the second copy arrived.
            self._refuse(queue, message, "replay", "message id already handled")

    def _refuse(self, queue: str, message: Message, reason: str, detail: str) -> NoReturn:
        REFUSED.labels(reason=reason).inc()
        # Log routing metadata and the reason only: never payload, keys or wrapped keys.
        log.warning(
            "refused message %s on %s for queue %s: %s (%s)",
            message.message_id,
            message.routing_key,
            queue,
            reason,
            detail,
        )
        raise DeadLetter(reason, detail)
