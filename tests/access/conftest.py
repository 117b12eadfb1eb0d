"""Fixtures for the access tests: real servers on loopback sockets, bound before they start serving.

Binding and listening on the socket before the server task starts means a client may connect at once: the
kernel queues the connection until the server accepts it, so no test waits on a sleep.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from aiohttp import web
from fastapi import FastAPI

from nemo_kernel.access.gateway import parse_gateway_config
from nemo_kernel.access.gateway.app import Gateway
from nemo_kernel.access.issuer import Realm, issuer_router, sql_realm
from tests.conftest import migrated_database


def listening_socket() -> socket.socket:
    """A TCP socket bound to an ephemeral loopback port and already listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def serve_asgi(app: FastAPI, sock: socket.socket | None = None, root_path: str = "") -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a loopback socket (behind ``root_path`` if given); yields its base URL."""
    sock = sock or listening_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", root_path=root_path))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def serve_aiohttp(app: web.Application, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Serve an aiohttp app on a loopback socket; yields its base URL."""
    sock = sock or listening_socket()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


class IssuerServer:
    """The built-in issuer running on loopback, with its realm at hand for admin calls."""

    def __init__(self, realm: Realm, base_url: str) -> None:
        self.realm = realm
        self.base_url = base_url
        self.issuer = f"{base_url}/realms/{realm.name}"
        self.token_url = f"{self.issuer}/protocol/openid-connect/token"

    async def client_token(self, client_id: str, secret: str) -> str:
        """An access token from the client_credentials grant."""
        async with httpx.AsyncClient() as http:
            response = await http.post(
                self.token_url, data={"grant_type": "client_credentials"}, auth=(client_id, secret)
            )
        response.raise_for_status()
        return str(response.json()["access_token"])


@asynccontextmanager
async def running_issuer(**realm_options: object) -> AsyncIterator[IssuerServer]:
    """A realm ``nemo`` on the store's repositories in a SQLite file of its own, served by FastAPI on loopback."""
    sock = listening_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with tempfile.TemporaryDirectory() as data, migrated_database(f"sqlite:///{data}/nemo.db") as db:
        realm = sql_realm(db, "nemo", issuer_url=f"{base}/realms/nemo")
        for name, value in realm_options.items():
            setattr(realm, name, value)
        app = FastAPI()
        app.include_router(issuer_router(realm))
        async with serve_asgi(app, sock):
            yield IssuerServer(realm, base)


@pytest.fixture
async def issuer() -> AsyncIterator[IssuerServer]:
    """The built-in issuer on loopback."""
    async with running_issuer() as server:
        yield server


def upstream_app(never: asyncio.Event) -> web.Application:
    """A small upstream: echoes what it received; /slow never answers; /big streams 1 MiB."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        lowered = {k.lower(): v for k, v in request.headers.items()}
        return web.json_response(
            {"method": request.method, "path": request.path_qs, "headers": lowered, "body": len(body)}
        )

    async def slow(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(16):
            await response.write(b"x" * 65536)
        await response.write_eof()
        return response

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_route("*", "/slow", slow)
    app.router.add_route("*", "/big", big)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    never = asyncio.Event()
    async with serve_aiohttp(upstream_app(never)) as url:
        try:
            yield url
        finally:
            never.set()  # let /slow handlers finish so the server shuts down at once


@asynccontextmanager
async def running_gateway(config: dict[str, Any], clock: Callable[[], float] | None = None) -> AsyncIterator[str]:
    gateway = Gateway(parse_gateway_config(config), **({"clock": clock} if clock else {}))
    async with serve_aiohttp(gateway.application()) as url:
        yield url


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
