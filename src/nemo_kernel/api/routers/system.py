"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from nemo_kernel.api.deps import control_plane
from nemo_kernel.api.errors import ApiError
from nemo_kernel.api.openapi import ERRORS, ErrorBody
from nemo_kernel.api.security import ApiAccess
from nemo_kernel.metrics import exposition
from nemo_kernel.metrics.embedded import TooManySeries
from nemo_kernel.metrics.promql import parse_selector
from nemo_kernel.orchestrator import ControlPlane

router = APIRouter(tags=["system"], responses={500: ERRORS[500]})
# The media type without its parameters (the version and charset the client library sends may change).
_EXPOSITION = CONTENT_TYPE_LATEST.split(";")[0]
Plane = Annotated[ControlPlane, Depends(control_plane)]
MAX_MATCH_PARAMS = 64
"""Most ``match[]`` selectors one ``/federate`` request may give."""


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
        200: {"description": "Prometheus text exposition", "content": {_EXPOSITION: {"schema": {"type": "string"}}}},
        401: ERRORS[401],
        403: ERRORS[403],
        422: {"model": ErrorBody, "description": "More series of NEMO's own than NEMO_FEDERATE_MAX_SERIES"},
    },
    openapi_extra={"security": [{}, {"HTTPBearer": []}]},  # the token is optional here
)
async def metrics(request: Request, plane: Plane) -> Response:
    """Prometheus exposition: the process' own counters (bus, API) to anyone, as always; with a viewer token,
    also the newest sample of every series NEMO produces (replicas, nodes, clusters, workloads, links: as many as
    the inventory holds). Workloads' own series are not here: ``/federate`` selects them. More than
    ``NEMO_FEDERATE_MAX_SERIES`` series: 422 naming the limit."""
    text = generate_latest().decode()
    if request.headers.get("authorization") is None:
        return Response(text, media_type=CONTENT_TYPE_LATEST)
    await _access(request).check(request)  # a token that is sent must be valid: a misconfigured scraper learns it
    own = {sample.name for family in REGISTRY.collect() for sample in family.samples}
    limit = plane.settings.federate_max_series
    try:
        samples = await run_in_threadpool(partial(plane.metrics_store.latest, exposition.NEMO_SERIES, limit=limit))
    except TooManySeries as exc:
        message = (
            f"NEMO holds more than {exc.limit:,} series of its own (NEMO_FEDERATE_MAX_SERIES); scrape /federate "
            "with match[] selectors that split them, or raise the limit"
        )
        raise ApiError(
            422,
            "too_many_series",
            message,
            [{"field": "NEMO_FEDERATE_MAX_SERIES", "message": message, "limit": exc.limit}],
        ) from None
    # A family the process counts itself is written once (by the client library): never twice with two TYPE lines.
    collected = exposition.render(s for s in samples if s.name not in own)
    return Response(text + collected, media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/federate",
    response_class=Response,
    responses={
        200: {"description": "The selected series' newest samples", "content": {_EXPOSITION: {"schema": {}}}},
        400: {"model": ErrorBody, "description": "A missing or bad match[] selector"},
        422: {"model": ErrorBody, "description": "More series selected than NEMO_FEDERATE_MAX_SERIES"},
        401: ERRORS[401],
        403: ERRORS[403],
    },
    openapi_extra={"security": [{"HTTPBearer": []}]},
)
async def federate(request: Request, plane: Plane) -> Response:
    """Prometheus federation (``match[]`` selectors, several allowed): the newest sample of each selected series of
    the embedded store, with its timestamp; a viewer token is needed (``nemo monitoring prometheus-config``)."""
    await _access(request).check(request)
    given = request.query_params.getlist("match[]")
    if not given:
        raise ApiError(400, "bad_selector", "give at least one match[] selector", [_field("match[] is required")])
    if len(given) > MAX_MATCH_PARAMS:
        message = f"at most {MAX_MATCH_PARAMS} match[] selectors per request"
        raise ApiError(400, "bad_selector", message, [_field(message)])
    selectors = []
    for i, text in enumerate(given):
        try:
            selectors.append(parse_selector(text, require_metric=False))
        except ValueError as exc:
            raise ApiError(400, "bad_selector", f"match[] #{i + 1}: {exc}", [_field(str(exc), i)]) from None
    limit = plane.settings.federate_max_series
    try:
        text = await run_in_threadpool(exposition.federate, plane.metrics_store, selectors, limit)
    except ValueError as exc:  # a regular expression the store refuses (too long)
        raise ApiError(400, "bad_selector", str(exc), [_field(str(exc))]) from None
    except TooManySeries as exc:
        message = (
            f"the match[] selectors select more than {exc.limit:,} series, the most one answer holds "
            "(NEMO_FEDERATE_MAX_SERIES); narrow them, or split them over several scrapes"
        )
        raise ApiError(422, "too_many_series", message, [{**_field(message), "limit": exc.limit}]) from None
    return Response(text, media_type=exposition.CONTENT_TYPE)


def _access(request: Request) -> ApiAccess:
    access: ApiAccess = request.app.state.access
    return access


def _field(message: str, index: int | None = None) -> dict[str, str]:
    return {"field": "match[]" if index is None else f"match[{index}]", "message": message}


@router.get("/.well-known/nemo-configuration")
def nemo_configuration(request: Request) -> dict[str, str | None]:
    """Unauthenticated: the issuer to get tokens from (then OIDC discovery on it), the audience and the realm."""
    return _access(request).configuration()
