"""FastAPI glue: a bearer-token dependency for the ``/api/v1`` router and the error handler for refusals.

Wiring (in the API app)::

    from nemo_kernel.access.fastapi import bearer_auth, install_error_handlers
    install_error_handlers(app)
    api = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer_auth(verifier))])
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from nemo_kernel.access.errors import AccessDenied, InvalidToken
from nemo_kernel.access.policy import authorize
from nemo_kernel.access.tokens import Principal, bearer_token
from nemo_kernel.access.verifier import TokenVerifier

__all__ = ["AccessHTTPException", "bearer_auth", "current_principal", "install_error_handlers"]


class AccessHTTPException(HTTPException):
    """An :class:`HTTPException` carrying an access refusal.

    It is an ``HTTPException`` so that even an app without :func:`install_error_handlers` answers with the right
    status and ``WWW-Authenticate``; with the handler installed the body has the project's error shape.
    """

    def __init__(self, denied: AccessDenied) -> None:
        super().__init__(status_code=denied.status, detail=denied.body()["error"], headers=denied.headers())
        self.denied = denied


def bearer_auth(
    verifier: TokenVerifier, *, enforce_roles: bool = True, client: str | None = None
) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that verifies the bearer token and (by default) the role the method and path need.

    It returns the :class:`Principal` and also stores it on ``request.state.principal`` for handlers that want it
    without declaring the dependency. ``client`` names the API's own client id when roles are client roles.
    """

    async def dependency(request: Request) -> Principal:
        try:
            principal = await verifier.verify(bearer_token(request.headers.get("authorization")))
            if enforce_roles:
                authorize(principal, request.method, _app_path(request), client=client)
        except AccessDenied as denied:
            raise AccessHTTPException(denied) from None
        request.state.principal = principal
        return principal

    return dependency


def _app_path(request: Request) -> str:
    # Behind a proxy prefix (ASGI root_path, e.g. uvicorn --root-path /nemo) the URL path starts with the prefix;
    # the role table is keyed by the path the app routes on, so the prefix must not hide the resource.
    path = request.url.path
    root = str(request.scope.get("root_path") or "").rstrip("/")
    return path[len(root) :] if root and path.startswith(root + "/") else path


def current_principal(request: Request) -> Principal:
    """The principal :func:`bearer_auth` attached to the request (use as a dependency after it)."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise AccessHTTPException(InvalidToken("missing bearer token"))
    return principal


async def _access_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AccessHTTPException)
    return JSONResponse(exc.denied.body(), status_code=exc.denied.status, headers=exc.denied.headers())


def install_error_handlers(app: FastAPI) -> None:
    """Answer access refusals with ``{"error": {"code", "message", "details"}}`` and RFC 6750 headers."""
    app.add_exception_handler(AccessHTTPException, _access_error)
