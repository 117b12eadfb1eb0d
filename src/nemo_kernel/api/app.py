"""The FastAPI application: ``/api/v1`` resources behind one access check, plus health and metrics."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI

from nemo_kernel import __version__
from nemo_kernel.access.fastapi import install_error_handlers as install_access_error_handlers
from nemo_kernel.access.issuer import issuer_router
from nemo_kernel.api.errors import install_error_handlers
from nemo_kernel.api.limits import BodySizeLimit
from nemo_kernel.api.openapi import ERRORS, install_openapi
from nemo_kernel.api.routers import (
    clusters,
    gateway,
    identities,
    metrics,
    migrations,
    modules,
    petitions,
    rebalance,
    slas,
    system,
    workloads,
)
from nemo_kernel.api.security import ApiAccess, authorize
from nemo_kernel.orchestrator import ControlPlane


def create_app(
    plane: ControlPlane,
    access: ApiAccess,
    on_started: Callable[[], Awaitable[None] | None] | None = None,
) -> FastAPI:
    """The API of ``plane``; the app's lifespan starts and stops the control plane's loops.

    ``access`` says how callers are checked (built with the URL the API is actually served at, which only the
    caller that bound the socket knows). ``on_started`` (plain or async) runs once the control plane has started,
    before the first request is served.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await plane.start()
        try:
            if on_started is not None:
                started = on_started()
                if inspect.isawaitable(started):
                    await started
            yield
        finally:
            await plane.stop()

    # No redirect for a trailing slash: Starlette builds its Location from the request's Host header (a redirect to
    # wherever a caller names) and from the API's own address (a client behind the gateway that follows it bypasses
    # the gateway's rate limits and IP lists). "/api/v1/clusters/" is a 404 like any other path that is not served.
    app = FastAPI(title="NEMO Kernel", version=__version__, lifespan=lifespan, redirect_slashes=False)
    app.state.control_plane = plane
    app.state.access = access
    app.add_middleware(BodySizeLimit, max_bytes=plane.settings.max_body_bytes, oauth_prefixes=("/realms/",))
    install_error_handlers(app)
    install_access_error_handlers(app)
    v1 = APIRouter(prefix="/api/v1", dependencies=[Depends(authorize)], responses=ERRORS)
    for module in (clusters, workloads, metrics, migrations, rebalance, petitions, modules, gateway, slas):
        v1.include_router(module.router)
    v1.include_router(slas.violations_router)
    v1.include_router(identities.users)
    v1.include_router(identities.clients)
    app.include_router(v1)
    if access.realm is not None:
        app.include_router(issuer_router(access.realm))
    app.include_router(system.router)
    install_openapi(app)
    return app
