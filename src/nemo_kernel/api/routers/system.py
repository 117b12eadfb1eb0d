"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nemo_kernel.api.deps import control_plane
from nemo_kernel.api.errors import ApiError
from nemo_kernel.api.openapi import ERRORS, ErrorBody
from nemo_kernel.api.security import ApiAccess
from nemo_kernel.orchestrator import ControlPlane

router = APIRouter(tags=["system"], responses={500: ERRORS[500]})
# The media type without its parameters (the version and charset the client library sends may change).
_EXPOSITION = CONTENT_TYPE_LATEST.split(";")[0]
Plane = Annotated[ControlPlane, Depends(control_plane)]


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorBody, "description": "The store or the reconcile loop is down"}})
def readyz(plane: Plane) -> dict[str, object]:
    """The store answers and the reconcile loop has run recently; 503 otherwise."""
    try:
        plane.db.ping()
    except Exception as exc:
        raise ApiError(503, "store_down", f"the store does not answer: {type(exc).__name__}") from exc
    last = plane.last_pass
    limit = max(10.0, plane.settings.reconcile_interval * 10 + plane.settings.driver_timeout * 3)
    if last is None or time.monotonic() - last > limit:
        raise ApiError(503, "not_reconciling", "the reconcile loop has not completed a pass recently")
    return {"status": "ready", "last_reconcile_seconds_ago": round(time.monotonic() - last, 3)}


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text exposition", "content": {_EXPOSITION: {"schema": {"type": "string"}}}}
    },
)
def metrics() -> Response:
    """Prometheus exposition."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/.well-known/nemo-configuration")
def nemo_configuration(request: Request) -> dict[str, str | None]:
    """Unauthenticated: the issuer to get tokens from (then OIDC discovery on it), the audience and the realm."""
    access: ApiAccess = request.app.state.access
    return access.configuration()
