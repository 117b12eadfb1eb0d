"""The agent's emulated links: a TCP proxy in front of each replica port, and the probe echoes.

While a cluster has a ``controlplane`` link, each replica's port gets a proxy on loopback that carries the traffic
through the link's :class:`~nemo_kernel.clusters.links.LinkEmulator`, and the replica's reported URL points at the
proxy: the gateway and the control plane reach the replica across the emulated link. Without that link the URL is
the replica's own port again (direct speed); connections already open through a proxy go on unshaped.

Each link is looked up again for every chunk, so changing a link takes effect at once, on open connections too.
Links to peers shape this cluster's probes to them (:meth:`LinkTable.probe_peer`); replicas address each other
directly, so peer links do not shape replica-to-replica traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from nemo_kernel.clusters.base import ReplicaReport
from nemo_kernel.clusters.capabilities import ProbeEndpoints
from nemo_kernel.clusters.links import Direction, LinkEmulator, probe, start_echo
from nemo_kernel.domain import CONTROL_PLANE_LINK, Link

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
"""Most bytes one read of a proxied stream takes: the unit that is delayed and may be "lost"."""

CAPPED_CHUNK_BYTES = 16 * 1024
"""The same under a bandwidth cap: smaller units pace the stream more smoothly."""

_QUEUE_CHUNKS = 256  # per direction of a connection: at most 4 MiB in flight inside the proxy


@dataclass
class _Proxy:
    target_port: int
    server: asyncio.Server
    port: int
    connections: set[asyncio.Task[None]] = field(default_factory=set)


class LinkTable:
    """The links of one cluster (``controlplane`` and peers), the replica proxies and the probe echoes."""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self._links: dict[str, LinkEmulator] = {}
        self._proxies: dict[str, _Proxy] = {}  # replica id -> its proxy
        self._echoes: list[asyncio.DatagramTransport] = []
        self._endpoints: ProbeEndpoints | None = None

    async def start(self) -> None:
        """Open the probe echoes: one behind the control-plane link, one direct for peers' probes."""
        shaped, shaped_port = await start_echo(emulator=lambda: self._links.get(CONTROL_PLANE_LINK))
        direct, direct_port = await start_echo()
        self._echoes = [shaped, direct]
        self._endpoints = ProbeEndpoints(controlplane=f"127.0.0.1:{shaped_port}", direct=f"127.0.0.1:{direct_port}")

    async def close(self) -> None:
        """Close the echoes and every proxy (open connections are cut)."""
        for echo in self._echoes:
            echo.close()
        for replica_id in list(self._proxies):
            await self._drop_proxy(replica_id)

    @property
    def endpoints(self) -> ProbeEndpoints:
        """Where this cluster answers probes (after :meth:`start`)."""
        if self._endpoints is None:
            raise RuntimeError("the link table is not started")
        return self._endpoints

    def links(self) -> dict[str, Link]:
        """The links being emulated, by peer."""
        return {peer: emulator.link for peer, emulator in self._links.items()}

    def set(self, peer: str, link: Link | None) -> bool:
        """Emulate ``link`` towards ``peer`` (None: stop); whether anything changed. The same link again keeps
        its emulator (and its token buckets)."""
        current = self._links.get(peer)
        if link is None:
            return self._links.pop(peer, None) is not None
        if current is not None and current.link == link:
            return False
        self._links[peer] = LinkEmulator(link, seed=f"{self.cluster}/{peer}")
        return True

    async def route(self, reports: list[ReplicaReport]) -> list[ReplicaReport]:
        """``reports`` with each replica's URL through its proxy while the control-plane link is set; proxies of
        replicas gone, or of every replica once the link is removed, are closed."""
        shaped = CONTROL_PLANE_LINK in self._links
        wanted: dict[str, int] = {}
        if shaped:
            for report in reports:
                port = _loopback_port(report.url)
                if port is not None:
                    wanted[report.id] = port
        for replica_id, proxy in list(self._proxies.items()):
            if wanted.get(replica_id) != proxy.target_port:
                await self._drop_proxy(replica_id)
        routed: list[ReplicaReport] = []
        for report in reports:
            target = wanted.get(report.id)
            if target is None:
                routed.append(report)
                continue
            if report.id not in self._proxies:
                self._proxies[report.id] = await self._open_proxy(target)
            port = self._proxies[report.id].port
            routed.append(report.model_copy(update={"url": f"http://127.0.0.1:{port}"}))
        return routed

    async def probe_peer(self, peer: str, host: str, port: int, count: int) -> list[float | None]:
        """Probes to a peer's direct echo through this cluster's link to ``peer`` (unshaped if it has none)."""
        return await probe(host, port, count, emulator=self._links.get(peer))

    # ----------------------------------------------------------------- the proxy

    async def _open_proxy(self, target_port: int) -> _Proxy:
        proxy: _Proxy | None = None

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert proxy is not None
            task = asyncio.current_task()
            assert task is not None
            proxy.connections.add(task)
            try:
                await self._carry(reader, writer, target_port)
            finally:
                proxy.connections.discard(task)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        proxy = _Proxy(target_port=target_port, server=server, port=int(server.sockets[0].getsockname()[1]))
        return proxy

    async def _drop_proxy(self, replica_id: str) -> None:
        proxy = self._proxies.pop(replica_id)
        proxy.server.close()
        for task in list(proxy.connections):
            task.cancel()
        await asyncio.gather(*proxy.connections, return_exceptions=True)

    async def _carry(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, target_port: int) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(self._pipe(client_r, upstream_w, up=True), self._pipe(upstream_r, client_w, up=False))
        except (OSError, asyncio.IncompleteReadError):
            pass  # either side went away: both are closed below
        finally:
            for writer in (client_w, upstream_w):
                writer.close()
            for writer in (client_w, upstream_w):
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    def _direction(self, up: bool) -> Direction | None:
        emulator = self._links.get(CONTROL_PLANE_LINK)
        if emulator is None:
            return None
        return emulator.up if up else emulator.down

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        """Carry one direction: read, pace through the bandwidth cap, then deliver after the delay, in order."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_CHUNKS)
        in_flight = 0  # chunks queued or being written by ``deliver``

        async def write(data: bytes) -> None:
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

        async def deliver() -> None:
            nonlocal in_flight
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await write(data)
                in_flight -= 1
                if not data:
                    return

        delivering = asyncio.create_task(deliver())
        last_due = 0.0
        try:
            while True:
                direction = self._direction(up)
                capped = direction is not None and direction.link.bandwidth_mbps is not None
                data = await reader.read(CAPPED_CHUNK_BYTES if capped else CHUNK_BYTES)
                direction = self._direction(up)  # it may have changed while we waited
                now = time.monotonic()
                due = now
                if direction is not None and data:
                    left = direction.departure(len(data), now)
                    if left > now:
                        await asyncio.sleep(left - now)  # the sender waits for its tokens, as at a bottleneck
                    due = left + direction.delay() + direction.tcp_penalty(len(data))
                elif direction is not None:
                    due = now + direction.delay()  # the FIN crosses the link too
                last_due = max(last_due, due)  # TCP keeps order: nothing overtakes an earlier chunk
                if in_flight == 0 and last_due <= time.monotonic():
                    await write(data)  # due now and nothing before it: no hop through the delivery task
                else:
                    in_flight += 1
                    await queue.put((last_due, data))
                if not data:
                    break
            if in_flight:
                await delivering  # the end was queued behind delayed chunks: it returns once it wrote it
        finally:
            if not delivering.done():
                delivering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await delivering


def _loopback_port(url: str | None) -> int | None:
    prefix = "http://127.0.0.1:"
    if url is None or not url.startswith(prefix) or not url[len(prefix) :].isdigit():
        return None
    return int(url[len(prefix) :])
