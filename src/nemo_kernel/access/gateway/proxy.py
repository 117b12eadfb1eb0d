"""Forwarding a request to its upstream: pooled connections, streamed bodies, X-Forwarded-*, 502/504 mapping."""

from __future__ import annotations

import functools
from collections.abc import Iterable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from nemo_kernel.access.gateway.context import Refusal, RequestContext

#: RFC 9110 7.6.1 hop-by-hop headers, never forwarded in either direction.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
    )
)
#: Identity headers only the gateway may set: a client sending them is trying to impersonate someone.
IDENTITY_HEADERS = frozenset(
    h.lower()
    for h in (
        "X-Authenticated-Subject",
        "X-Authenticated-Client",
        "X-Authenticated-Roles",
        "X-Consumer-Username",
        "X-Consumer-ID",
        "X-Userinfo",
    )
)
#: Headers some upstreams (IIS URL Rewrite, Symfony, Zend) route on instead of the request path: forwarded, they
#: would let a client reach a path other than the one the gateway routed and applied the plugins of.
PATH_OVERRIDE_HEADERS = frozenset(h.lower() for h in ("X-Original-URL", "X-Rewrite-URL", "X-Original-Path"))
#: Bodies up to this size are read whole and sent with one write; larger ones are streamed.
_BUFFER_LIMIT = 64 * 1024


#: What is never forwarded upstream, without and with the client's Authorization.
_DROP = HOP_BY_HOP | IDENTITY_HEADERS | PATH_OVERRIDE_HEADERS
_DROP_WITH_AUTHORIZATION = _DROP | {"authorization"}


def _drop(names: Iterable[str]) -> frozenset[str]:
    return frozenset(n.lower() for n in names)


@functools.lru_cache(maxsize=256)
def _timeout(connect: float, read: float) -> aiohttp.ClientTimeout:
    # one immutable object per distinct pair, instead of one per request
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


class UpstreamProxy:
    """Sends requests upstream over one pooled :class:`aiohttp.ClientSession`."""

    def __init__(self, pool_size: int) -> None:
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._pool_size, keepalive_timeout=30, ttl_dns_cache=60)
            # auto_decompress off: bytes pass through exactly as the upstream encoded them.
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding")
            )
        return self._session

    async def close(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _request_headers(self, ctx: RequestContext, trusted_peer: bool) -> CIMultiDict[str]:
        request = ctx.request
        drop = _DROP if ctx.service.forward_authorization else _DROP_WITH_AUTHORIZATION
        connection = request.headers.get("Connection")
        if connection:
            drop |= _drop(part.strip() for part in connection.split(","))
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in drop)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        peer_ip = peer[0] if peer else ""
        prior = request.headers.get("X-Forwarded-For") if trusted_peer else None
        # From an untrusted peer, any X-Forwarded-* it sent is replaced: it could name anyone.
        headers["X-Forwarded-For"] = f"{prior}, {peer_ip}" if prior else peer_ip
        if not trusted_peer or "X-Forwarded-Proto" not in headers:
            headers["X-Forwarded-Proto"] = request.scheme
        if not trusted_peer or "X-Forwarded-Host" not in headers:
            headers["X-Forwarded-Host"] = request.host
        headers["X-Request-Id"] = ctx.request_id
        headers.update(ctx.upstream_headers)
        return headers

    async def forward(
        self, ctx: RequestContext, base_url: str, upstream_path: str, trusted_peer: bool
    ) -> web.StreamResponse:
        """Proxy the request to ``base_url`` (percent-encoded) + ``upstream_path`` (in normal form) + the query as
        received; raise :class:`Refusal` 502/504 when it fails before answering."""
        request = ctx.request
        service = ctx.service
        target = base_url + upstream_path
        query = request.rel_url.raw_query_string
        if query:
            target = f"{target}?{query}"
        # encoded=True: the URL goes out as built. Parsed as plain text, yarl would decode and re-encode it and
        # resolve dot segments, so the upstream could receive another path than the one routed and checked.
        url = URL(target, encoded=True)
        timeout = _timeout(service.connect_timeout, service.read_timeout)
        body = request.content if request.body_exists else None
        try:
            upstream = await self._client().request(
                request.method,
                url,
                headers=self._request_headers(ctx, trusted_peer),
                data=body,
                timeout=timeout,
                allow_redirects=False,
                compress=None,
            )
        except TimeoutError:
            raise Refusal(504, "upstream_timeout", "upstream did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise Refusal(502, "bad_gateway", "upstream unreachable", details={"reason": type(exc).__name__}) from None
        try:
            return await self._relay(ctx, upstream)
        finally:
            upstream.release()

    async def _relay(self, ctx: RequestContext, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        headers = CIMultiDict(
            (k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
        )
        headers.update(ctx.response_headers)
        length = upstream.content_length
        try:
            if length is not None and length <= _BUFFER_LIMIT:
                body = await upstream.read()
                return web.Response(status=upstream.status, reason=upstream.reason, headers=headers, body=body)
        except TimeoutError:
            raise Refusal(504, "upstream_timeout", "upstream did not answer in time") from None
        except aiohttp.ClientError:
            raise Refusal(502, "bad_gateway", "upstream failed mid-response") from None
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        if length is not None:
            response.content_length = length
        await response.prepare(ctx.request)
        try:
            async for chunk in upstream.content.iter_chunked(_BUFFER_LIMIT):
                await response.write(chunk)
        except (TimeoutError, aiohttp.ClientError):
            # Headers are gone already: the only honest signal left is to cut the connection.
            if ctx.request.transport is not None:
                ctx.request.transport.close()
            return response
        await response.write_eof()
        return response
