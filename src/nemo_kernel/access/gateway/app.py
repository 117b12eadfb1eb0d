"""The gateway: route, run the plugin chain, proxy, log, count. ``run_gateway`` serves it."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from ipaddress import ip_address
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nemo_kernel.access.errors import error_body
from nemo_kernel.access.gateway.config import GatewayConfig, _networks
from nemo_kernel.access.gateway.context import Refusal, RequestContext, client_ip, in_networks
from nemo_kernel.access.gateway.counters import CounterStores
from nemo_kernel.access.gateway.observability import GatewayMetrics, access_log, log_access
from nemo_kernel.access.gateway.paths import PathRejected, normalise_path
from nemo_kernel.access.gateway.proxy import UpstreamProxy
from nemo_kernel.access.gateway.routing import PluginResolver, RouteTable
from nemo_kernel.access.gateway.upstreams import UpstreamTargets

REQUEST_ID = "X-Request-Id"


class Gateway:
    """A configured gateway. ``clock`` (seconds since the epoch) drives rate windows and usage rules.

    ``replicas`` maps a workload (``namespace/name``) to its running replicas' URLs, for workload services.
    A gateway rebuilt on a configuration change gets its predecessor's ``metrics`` and ``stores``, so counters
    and rate windows carry over; shared stores are closed by their owner, not here.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Callable[[], float] = time.time,
        replicas: Mapping[str, Sequence[str]] | None = None,
        metrics: GatewayMetrics | None = None,
        stores: CounterStores | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = metrics or GatewayMetrics()
        self._owns_stores = stores is None
        self.stores = stores or CounterStores()
        self.upstreams = UpstreamTargets(config, replicas)
        self.routes = RouteTable(config)
        self.plugins = PluginResolver(config, self.stores)
        self._proxy = UpstreamProxy(config.upstream_pool_size)
        self._trusted = config.trusted_networks()
        self._status_allow = _networks(config.status_allow)
        self._status_prefix = config.status_path.rstrip("/")

    def application(self) -> web.Application:
        """The aiohttp application (every path is handled by the gateway)."""
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, _app: web.Application) -> None:
        await self.close()

    async def close(self) -> None:
        """Close upstream connections, plugin clients and counter stores."""
        await self._proxy.close()
        for plugin in self.plugins.plugins:
            await plugin.close()
        if self._owns_stores:
            await self.stores.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Handle one request end to end."""
        started = time.perf_counter()
        # Keep a caller's request id only from a trusted proxy; otherwise ids in our logs are ours
        # (128 random bits, as a uuid4, without building the UUID object).
        ip = client_ip(request, self._trusted)
        peer_trusted = ip is not None and self._peer_trusted(request)
        request_id = (request.headers.get(REQUEST_ID) if peer_trusted else None) or os.urandom(16).hex()
        try:
            # The raw path: request.path is decoded, so an encoded "/" in it could no longer be told from a "/".
            path = normalise_path(request.rel_url.raw_path)
        except PathRejected as rejected:
            body = error_body("invalid_path", f"{rejected.reason}: not routed", {"field": "path"})
            refused = _json(400, body, request_id)
            self._finish(request, None, None, refused, started, request_id, ip, "core", rejected.reason)
            return refused
        if self._status_prefix and path.startswith(self._status_prefix + "/"):
            return self._status(path, ip)
        match = self.routes.match(request.method, request.host, path)
        if match is None:
            missing = _json(404, error_body("no_route", "no route matches this request"), request_id)
            self._finish(request, None, None, missing, started, request_id, ip, "core", "no route")
            return missing
        ctx = RequestContext(
            request=request, request_id=request_id, client_ip=ip, route=match.route, service=match.service,
            path=path, now=self.clock(),
        )  # fmt: skip
        decided_by: str | None = None
        reason: str | None = None
        response: web.StreamResponse
        try:
            await self._run_chain(ctx)
            base_url = self.upstreams.pick(match.service)
            response = await self._proxy.forward(ctx, base_url, match.upstream_path, peer_trusted)
        except Refusal as refusal:
            decided_by = refusal.plugin or "proxy"
            response = _json(refusal.status, refusal.body(), request_id, refusal.headers)
            reason = refusal.message
            if decided_by == "proxy":
                self.metrics.upstream_errors.labels(match.route.name, refusal.code).inc()
        else:
            if not response.prepared:
                response.headers[REQUEST_ID] = request_id
        self._finish(request, ctx, match.route.name, response, started, request_id, ip, decided_by, reason)
        return response

    def _peer_trusted(self, request: web.Request) -> bool:
        if not self._trusted or request.transport is None:
            return False
        peer = request.transport.get_extra_info("peername")
        if not peer:
            return False
        try:
            return in_networks(ip_address(peer[0]), self._trusted)
        except ValueError:
            return False

    async def _run_chain(self, ctx: RequestContext) -> None:
        chain = self.plugins.chain(ctx.route, None)
        index = 0
        consumer = None
        while index < len(chain):
            plugin = chain[index]
            try:
                await plugin.access(ctx)
            except Refusal as refusal:
                refusal.plugin = plugin.name
                raise
            index += 1
            if ctx.consumer is not consumer:
                # Authentication identified a consumer: plugins configured for it now take precedence (Kong).
                consumer = ctx.consumer
                chain = self.plugins.chain(ctx.route, consumer)
                index = next((i for i, p in enumerate(chain) if p.priority < plugin.priority), len(chain))

    def _status(self, path: str, ip: Any) -> web.Response:
        if ip is None or not in_networks(ip, self._status_allow):
            return _json(403, error_body("forbidden", "status endpoints are local only"), "")
        if path == f"{self._status_prefix}/metrics":
            return web.Response(
                body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )
        if path == f"{self._status_prefix}/healthz":
            return web.json_response({"status": "ok"})
        return _json(404, error_body("not_found", "unknown status endpoint"), "")

    def _finish(
        self,
        request: web.Request,
        ctx: RequestContext | None,
        route: str | None,
        response: web.StreamResponse,
        started: float,
        request_id: str,
        ip: Any,
        decided_by: str | None,
        reason: str | None,
    ) -> None:
        elapsed = time.perf_counter() - started
        workload = ctx.service.workload if ctx is not None else None
        self.metrics.observe(route or "", response.status, decided_by or "", elapsed, workload)
        if not access_log.isEnabledFor(logging.INFO):
            return  # the record below costs as much as a plugin; build it only when someone reads it
        principal = ctx.principal if ctx else None
        log_access(
            {
                "request_id": request_id,
                "client_ip": str(ip),
                "subject": principal.subject if principal else None,
                "client_id": principal.client_id if principal else None,
                "consumer": ctx.consumer.username if ctx and ctx.consumer else None,
                "method": request.method,
                "path": request.rel_url.raw_path,  # as sent: the route field says where it went
                "route": route,
                "status": response.status,
                "decision": "allow" if decided_by is None else "deny",
                "decided_by": decided_by,
                "reason": reason,
                "duration_ms": round(elapsed * 1000, 3),
            }
        )


def _json(status: int, body: dict[str, Any], request_id: str, headers: dict[str, str] | None = None) -> web.Response:
    response = web.json_response(body, status=status, headers=headers)
    if request_id:
        response.headers[REQUEST_ID] = request_id
    return response


def run_gateway(
    config: GatewayConfig, host: str = "127.0.0.1", port: int = 8000, *, sock: socket.socket | None = None
) -> None:
    """Serve a gateway of ``config`` until interrupted (on ``sock`` when given, see :func:`serve_application`)."""
    serve_application(Gateway(config).application(), host, port, sock=sock)


def serve_application(
    app: web.Application, host: str = "127.0.0.1", port: int = 8000, *, sock: socket.socket | None = None
) -> None:
    """Serve ``app`` on ``sock`` (an already listening socket) or ``host:port`` until SIGINT/SIGTERM.

    uvloop when installed: it roughly doubles proxy throughput.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    # Everything allocated so far (modules, config, plugins) lives as long as the process: out of the
    # collector's sight, a full collection no longer walks it, which shortens the pauses that make p99.
    gc.collect()
    gc.freeze()
    where: dict[str, Any] = {"sock": sock} if sock is not None else {"host": host, "port": port}
    # A short grace on shutdown: the gateway holds no state, and it must not linger after `nemo up` stops.
    web.run_app(app, access_log=None, loop=loop, print=None, shutdown_timeout=5.0, **where)
