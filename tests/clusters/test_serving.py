"""QuietServer: uvicorn with one housekeeping tick a second still answers, keeps its Date header current, and stops
when asked (a real server on loopback)."""

from __future__ import annotations

import asyncio
import signal
import socket
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


async def test_it_serves_refreshes_its_date_header_and_stops_when_asked() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server = QuietServer(uvicorn.Config(_app, loop="asyncio", log_level="warning", access_log=False))
    # uvicorn re-raises the signal that stopped it to the handler installed before it: make that one harmless here.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with httpx.AsyncClient() as client:
            while not server.started:
                await asyncio.sleep(0.01)  # yields to the server's start-up; the condition is what we wait for
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
    finally:
        if not serving.done():
            serving.cancel()
        sock.close()
        signal.signal(signal.SIGTERM, previous)
