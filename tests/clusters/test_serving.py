"""QuietServer: uvicorn with one housekeeping tick a second still answers, keeps its Date header current, and stops
when asked; without a Date header it ticks seldom and still stops at once (a real server on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn

from nemo_kernel.clusters.serving import QuietServer


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


@contextlib.asynccontextmanager
async def _serving(config: uvicorn.Config) -> AsyncIterator[tuple[QuietServer, str, asyncio.Task[None]]]:
    """A QuietServer of ``config`` on a free loopback port, started: the server, its URL, its serving task."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server = QuietServer(config)
    # uvicorn re-raises the signal that stopped it to the handler installed before it: make that one harmless here.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)  # yields to the server's start-up; the condition is what we wait for
        yield server, url, serving
    finally:
        if not serving.done():
            serving.cancel()
        sock.close()
        signal.signal(signal.SIGTERM, previous)


async def test_it_serves_refreshes_its_date_header_and_stops_when_asked() -> None:
    config = uvicorn.Config(_app, loop="asyncio", log_level="warning", access_log=False)
    async with _serving(config) as (server, url, serving), httpx.AsyncClient() as client:
        first = await client.get(url)
        assert (first.status_code, first.text) == (200, "ok")
        date = first.headers["date"]
        for _ in range(2000):  # the header moves on with the clock (a tick a second); bounded, not timed
            again = await client.get(url)
            if again.headers["date"] != date:
                break
            await asyncio.sleep(0.01)
        assert again.headers["date"] != date
        server.handle_exit(signal.SIGTERM, None)
        await serving  # returns: the exit woke the loop


async def test_without_a_date_header_it_still_stops_at_once_when_asked() -> None:
    config = uvicorn.Config(_app, loop="asyncio", log_level="warning", access_log=False, date_header=False)
    async with _serving(config) as (server, url, serving), httpx.AsyncClient() as client:
        answer = await client.get(url)
        assert (answer.status_code, answer.text) == (200, "ok")
        assert "date" not in answer.headers
        server.handle_exit(signal.SIGTERM, None)
        # its tick is ten seconds apart: a stop that waited for the next tick would not be done within five
        async with asyncio.timeout(5):
            await serving
