"""One JSON error shape for every API error: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from nemo_kernel.access.issuer import IdentityConflict, IdentityNotFound, InvalidIdentity, LastAdmin
from nemo_kernel.domain.common import field_path
from nemo_kernel.domain.errors import ApiError, error_body
from nemo_kernel.metrics import MetricsUnavailable
from nemo_kernel.store import Conflict, NotFound, store_busy

__all__ = ["ApiError", "error_response", "field_errors", "install_error_handlers"]

log = logging.getLogger(__name__)


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON error body with its status."""
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def field_errors(errors: list[Any], prefix: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """Pydantic errors as ``[{field, message, type}]`` with the field path written ``services[0].Name``."""
    out = []
    for err in errors:
        path = field_path([*prefix, *err.get("loc", ())])
        # pydantic prefixes a validator's own message with "Value error, ": the message is ours, so is its start
        message = str(err.get("msg", "")).removeprefix("Value error, ")
        out.append({"field": path or "(body)", "message": message, "type": err.get("type", "")})
    return out


_IDENTITY_ERRORS: dict[type[Exception], tuple[int, str]] = {
    IdentityNotFound: (404, "not_found"),
    IdentityConflict: (409, "conflict"),
    LastAdmin: (409, "last_admin"),
    InvalidIdentity: (422, "invalid"),
}


def _identity_error(status: int, code: str) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        # Like a validation error, an invalid identity names its field; its message never holds the value of a secret.
        details = [{"field": exc.field, "message": str(exc)}] if isinstance(exc, InvalidIdentity) else None
        return error_response(status, code, str(exc), details)

    return handler


def install_error_handlers(app: FastAPI) -> None:
    """Map every error the API can raise to the JSON error shape and its status."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, "not_found", str(exc), {"kind": exc.kind, "name": exc.name})

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return error_response(409, "conflict", str(exc))

    @app.exception_handler(MetricsUnavailable)
    async def _metrics_unavailable(_: Request, exc: MetricsUnavailable) -> JSONResponse:
        # The reason (Prometheus refused the connection, timed out...) is what an operator needs to act on.
        return error_response(503, "metrics_unavailable", f"the metrics backend cannot answer: {exc}")

    for identity_error, (status, code) in _IDENTITY_ERRORS.items():
        app.add_exception_handler(identity_error, _identity_error(status, code))

    @app.exception_handler(IntegrityError)
    async def _race(_: Request, exc: IntegrityError) -> JSONResponse:
        # Two writers raced for the same name; the loser gets what a sequential request would have got.
        return error_response(409, "conflict", "the resource was created or changed concurrently; retry")

    @app.exception_handler(OperationalError)
    async def _store_error(request: Request, exc: OperationalError) -> JSONResponse:
        if not store_busy(exc):
            raise exc  # a fault of ours (no such table...): the 500 handler answers and the server logs it
        # Another writer held the store past the busy timeout, or PostgreSQL is out of reach: nothing was changed,
        # and the same request may succeed in a moment. The statement and its parameters stay out of the log.
        why = type(exc.orig).__name__
        log.warning("%s %s: the store is busy or unreachable (%s)", request.method, request.url.path, why)
        message = "the store is busy or unreachable; nothing was changed, retry"
        return error_response(503, "store_unavailable", message, headers={"Retry-After": "1"})

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> JSONResponse:
        # The client closed the connection before its body ended: nothing was read, nothing changed, and nobody
        # reads the answer. One line, not the 500 handler's traceback a client could repeat to flood the log.
        log.info("%s %s: the client closed the connection before the request body ended", request.method,
                 request.url.path)  # fmt: skip
        return error_response(400, "incomplete_body", "the connection closed before the request body ended")

    @app.exception_handler(ValidationError)
    async def _invalid(_: Request, exc: ValidationError) -> JSONResponse:
        details = field_errors(exc.errors())
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:3])
        return error_response(422, "invalid", f"invalid {exc.title}: {summary}", details)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = field_errors(list(exc.errors()))
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:3])
        return error_response(422, "invalid", f"invalid request: {summary}", details)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Starlette's ServerErrorMiddleware answers with this, then re-raises so the server logs the traceback:
        # the caller gets the JSON shape, and nothing of the exception (it may hold stored values or paths).
        return error_response(500, "internal", "internal server error; the server log has the details")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return error_response(exc.status_code, code.get(exc.status_code, "error"), str(exc.detail), headers=headers)


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> list[str]:
    # Starlette's 405 names only the methods of the first route matching the path, but several routes share a path
    # (GET and POST /clusters): RFC 9110 wants every method the resource supports.
    routes = request.app.router.routes
    return [m for m in _METHODS if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in routes)]
