"""Link emulation in user space, and the probes that measure a link (shared by drivers and the control plane).

This kernel has no netem, and HTB/TBF shaping needs root inside a network namespace, so a link is emulated by the
process that carries the traffic: a proxy in front of a cluster's replicas, an echo answering probes.

The model (:class:`LinkEmulator`), per direction:

- **delay**: each unit of traffic (a datagram, a chunk read from a TCP stream) is delivered ``latency +- jitter``
  (uniform, never below zero) after it left; on a TCP stream nothing overtakes what was sent before it, as TCP
  keeps order (a chunk due earlier than its predecessor waits for it).
- **loss**: a direction drops with ``1 - sqrt(1 - loss)`` so that ``loss`` is the share of round trips that lose a
  packet. A datagram is dropped for real. A TCP stream cannot drop bytes (the receiver would get a corrupt stream),
  so a lost segment costs what TCP's recovery costs: :data:`TCP_RTO_SECONDS` more delay for the chunk it is in
  (Linux's minimum retransmission timeout), each 1,460-byte segment of a chunk lost independently.
- **bandwidth**: a token bucket of :data:`BURST_BYTES` refilled at ``bandwidth_mbps``; a sender waits for its
  tokens before its chunk leaves, so a TCP download is paced at the cap and the delay comes on top.

A probe is one UDP datagram (``seq`` and a random tag) echoed back: its round trip, or None when it did not come
back within the timeout. :func:`summarize` turns a batch into RTT (median), jitter (mean absolute difference of
consecutive round trips, as RFC 3550's interarrival jitter without its smoothing) and loss ratio.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import random
import statistics
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from nemo_kernel.domain import Link

TCP_RTO_SECONDS = 0.2
"""Added to a TCP chunk holding a lost segment: Linux's minimum retransmission timeout (``TCP_RTO_MIN``)."""

TCP_SEGMENT_BYTES = 1460
"""Payload of one TCP segment on a 1,500-byte MTU."""

BURST_BYTES = 16 * 1024
"""Depth of a direction's token bucket: what may leave at once after a pause."""

MAX_PROBES = 1000
"""Most probes one batch may send."""

PROBE_INTERVAL = 0.01
"""Seconds between two probes of a batch."""

_PROBE = struct.Struct("!I16s")  # sequence number, tag of the batch


class Direction:
    """One direction of an emulated link: its own token bucket and its random draws."""

    def __init__(self, link: Link, rng: random.Random) -> None:
        self.link = link
        self._rng = rng
        self._drop = 1.0 - math.sqrt(1.0 - link.loss)
        self._rate = None if link.bandwidth_mbps is None else link.bandwidth_mbps * 1e6 / 8  # bytes/s
        self._free_at = 0.0  # monotonic time the bucket is empty until

    def delay(self) -> float:
        """One draw of the one-way delay, in seconds."""
        spread = self._rng.uniform(-self.link.jitter_ms, self.link.jitter_ms) if self.link.jitter_ms else 0.0
        return max(0.0, self.link.latency_ms + spread) / 1000.0

    def dropped(self) -> bool:
        """Whether one packet is lost on this direction."""
        return self._drop > 0 and self._rng.random() < self._drop

    def tcp_penalty(self, nbytes: int) -> float:
        """Extra delay of a TCP chunk of ``nbytes``: one retransmission timeout if any of its segments is lost."""
        if self._drop <= 0:
            return 0.0
        segments = max(1, -(-nbytes // TCP_SEGMENT_BYTES))
        return TCP_RTO_SECONDS if self._rng.random() < 1.0 - (1.0 - self._drop) ** segments else 0.0

    def departure(self, nbytes: int, now: float) -> float:
        """When ``nbytes`` sent at ``now`` have left through the bandwidth cap (``now`` without one)."""
        if self._rate is None:
            return now
        start = max(self._free_at, now - BURST_BYTES / self._rate)
        self._free_at = start + nbytes / self._rate
        return max(now, self._free_at)


class LinkEmulator:
    """Both directions of one emulated link: ``up`` towards the cluster, ``down`` from it.

    ``seed`` makes the draws repeatable (tests, benchmarks); the same seed gives the same sequence of draws.
    """

    def __init__(self, link: Link, seed: int | str | None = None) -> None:
        self.link = link
        rng = random.Random(seed)  # noqa: S311 - emulating a network, not a secret
        self.up = Direction(link, rng)
        self.down = Direction(link, rng)


@dataclass(frozen=True, slots=True)
class LinkStats:
    """What one batch of probes measured; ``rtt`` and ``jitter`` are None when no probe came back."""

    sent: int
    rtt: float | None
    jitter: float | None
    loss: float


def probe_timeout(link: Link | None) -> float:
    """How long after its last probe a batch waits for replies over ``link``: a second more than the slowest
    round trip it can take; a reply later than that counts as lost."""
    if link is None:
        return 1.0
    return 1.0 + 2 * (link.latency_ms + link.jitter_ms) / 1000 + 2 * TCP_RTO_SECONDS


def summarize(rtts: Sequence[float | None]) -> LinkStats:
    """RTT median, jitter (mean absolute difference of consecutive round trips, in send order) and loss ratio."""
    got = [r for r in rtts if r is not None]
    if not rtts:
        return LinkStats(sent=0, rtt=None, jitter=None, loss=0.0)
    loss = 1.0 - len(got) / len(rtts)
    if not got:
        return LinkStats(sent=len(rtts), rtt=None, jitter=None, loss=loss)
    jitter = statistics.fmean(abs(b - a) for a, b in itertools.pairwise(got)) if len(got) > 1 else 0.0
    return LinkStats(sent=len(rtts), rtt=statistics.median(got), jitter=jitter, loss=loss)


class _Echo(asyncio.DatagramProtocol):
    """Echoes every datagram back to its sender, through ``emulator`` when it gives one (read at each datagram)."""

    def __init__(self, emulator: Callable[[], LinkEmulator | None]) -> None:
        self._emulator = emulator
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the selector loop's datagram transport does not subclass DatagramTransport, but is one
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self._transport is None or len(data) != _PROBE.size:
            return  # not a probe: never amplify arbitrary datagrams
        emulator = self._emulator()
        if emulator is None:
            self._transport.sendto(data, addr)
            return
        if emulator.up.dropped() or emulator.down.dropped():
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        arrive = emulator.up.departure(len(data), now) + emulator.up.delay()
        back = emulator.down.departure(len(data), arrive) + emulator.down.delay()
        loop.call_at(back, self._send, data, addr)

    def _send(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)


async def start_echo(
    host: str = "127.0.0.1", emulator: Callable[[], LinkEmulator | None] = lambda: None
) -> tuple[asyncio.DatagramTransport, int]:
    """A UDP probe echo on ``host`` (a free port), answering through ``emulator()``; the transport and its port."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Echo(emulator), local_addr=(host, 0))
    return transport, int(transport.get_extra_info("sockname")[1])


class _Prober(asyncio.DatagramProtocol):
    def __init__(self, tag: bytes, count: int, emulator: LinkEmulator | None) -> None:
        self.tag = tag
        self.sent_at: list[float | None] = [None] * count
        self.rtts: list[float | None] = [None] * count
        self.missing = count
        self.done = asyncio.Event()
        self._emulator = emulator

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if len(data) != _PROBE.size:
            return
        seq, tag = _PROBE.unpack(data)
        if tag != self.tag or not 0 <= seq < len(self.rtts) or self.sent_at[seq] is None:
            return
        if self._emulator is None:
            self._arrived(seq)
            return
        # the reply crosses this side's emulated link back
        if self._emulator.down.dropped():
            return
        loop = asyncio.get_running_loop()
        at = self._emulator.down.departure(len(data), loop.time()) + self._emulator.down.delay()
        loop.call_at(at, self._arrived, seq)

    def _arrived(self, seq: int) -> None:
        sent = self.sent_at[seq]
        if sent is None or self.rtts[seq] is not None:
            return
        self.rtts[seq] = time.monotonic() - sent
        self.missing -= 1
        if self.missing == 0:
            self.done.set()


async def probe(
    host: str,
    port: int,
    count: int,
    *,
    interval: float = PROBE_INTERVAL,
    reply_wait: float | None = None,
    emulator: LinkEmulator | None = None,
) -> list[float | None]:
    """Send ``count`` probes to the echo at ``host:port``, ``interval`` apart; their round trips in seconds, None
    for each one not back ``reply_wait`` seconds after the last was sent (default: :func:`probe_timeout` of the
    emulator's link). With ``emulator``, the probes cross it first (a cluster probing a peer through its own link
    to it) and the replies cross it back."""
    if reply_wait is None:
        reply_wait = probe_timeout(emulator.link if emulator is not None else None)
    if not 1 <= count <= MAX_PROBES:
        raise ValueError(f"count must be in [1, {MAX_PROBES}]")
    loop = asyncio.get_running_loop()
    prober = _Prober(os.urandom(16), count, emulator)
    transport, _ = await loop.create_datagram_endpoint(lambda: prober, remote_addr=(host, port))
    try:
        for seq in range(count):
            prober.sent_at[seq] = time.monotonic()
            data = _PROBE.pack(seq, prober.tag)
            if emulator is None:
                transport.sendto(data)
            elif not emulator.up.dropped():
                at = emulator.up.departure(len(data), loop.time()) + emulator.up.delay()
                loop.call_at(at, _send_if_open, transport, data)
            if seq + 1 < count:
                await asyncio.sleep(interval)
        try:
            async with asyncio.timeout(reply_wait):
                await prober.done.wait()
        except TimeoutError:
            pass  # what is still missing counts as lost
    finally:
        transport.close()
    return prober.rtts


def _send_if_open(transport: asyncio.DatagramTransport, data: bytes) -> None:
    if not transport.is_closing():
        transport.sendto(data)
