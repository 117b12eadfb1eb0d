"""A limit on request bodies, enforced before they are read whole.

A pure ASGI middleware (not ``BaseHTTPMiddleware``, which would buffer): a declared ``Content-Length`` over the
limit is refused before any of the body is read, and a body sent without one (chunked) is counted as it streams
and refused as soon as it passes the limit. Either way the caller gets 413 with the JSON error body (or RFC 6749's
shape under the OAuth endpoints, whose clients parse only that) and the connection is closed, so the rest of the
body is never read.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nemo_kernel.domain.errors import error_body

__all__ = ["BodySizeLimit"]


class _BodyTooLarge(Exception):
    """Raised from ``receive`` when the streamed body passes the limit; caught by the middleware."""


class BodySizeLimit:
    """Refuse request bodies larger than ``max_bytes`` with 413, without reading more than the limit.

    ``oauth_prefixes`` are path prefixes whose refusals use the OAuth 2.0 error shape (RFC 6749 section 5.2).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, oauth_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.oauth_prefixes = oauth_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with a counting ``receive``; answer 413 instead when the body is too large."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if started:  # the app answered before reading the body through; nothing more can be said
                raise
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = f"the request body is larger than the limit of {self.max_bytes} bytes (NEMO_MAX_BODY_BYTES)"
        path = str(scope.get("path", ""))
        if any(path.startswith(prefix) for prefix in self.oauth_prefixes):
            body: object = {"error": "invalid_request", "error_description": message}
        else:
            body = error_body("too_large", message, {"limit": self.max_bytes})
        payload = json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            # The unread rest of the body is still on the connection: close it rather than parse it as a request.
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself; count the body as it streams
    return None
