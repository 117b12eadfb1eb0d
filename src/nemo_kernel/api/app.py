"""The FastAPI application: ``/api/v1`` resources behind one access check, plus health and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI

from nemo_kernel import __version__
from nemo_kernel.api.errors import install_error_handlers
from nemo_kernel.api.routers import clusters, gateway, petitions, system, workloads
from nemo_kernel.api.security import authorize
from nemo_kernel.orchestrator import ControlPlane


def create_app(plane: ControlPlane, on_started: Callable[[], None] | None = None) -> FastAPI:
    """The API of ``plane``; the app's lifespan starts and stops the control plane's loops.

    ``on_started`` runs once the control plane has started, before the first request is served.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await plane.start()
        if on_started is not None:
            on_started()
        try:
            yield
        finally:
            await plane.stop()

    app = FastAPI(title="NEMO Kernel", version=__version__, lifespan=lifespan)
    app.state.control_plane = plane
    install_error_handlers(app)
    v1 = APIRouter(prefix="/api/v1", dependencies=[Depends(authorize)])
    for module in (clusters, workloads, petitions, gateway):
        v1.include_router(module.router)
    app.include_router(v1)
    app.include_router(system.router)
    return app
