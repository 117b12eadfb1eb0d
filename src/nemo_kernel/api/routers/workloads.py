"""``/api/v1/workloads``: apply CMDT descriptors, inspect workloads, their placement and history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from nemo_kernel.api.body import read_document, require_mapping
from nemo_kernel.api.deps import control_plane
from nemo_kernel.api.errors import ApiError
from nemo_kernel.api.openapi import request_body
from nemo_kernel.api.params import After, EventPage, Offset, WorkloadPage
from nemo_kernel.domain import Event, Model, PlacementDecision, WorkloadDescriptor, WorkloadStatus
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.orchestrator.views import PlacementExplanation, StoredDecision

router = APIRouter(prefix="/workloads", tags=["workloads"])
Plane = Annotated[ControlPlane, Depends(control_plane)]
_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
Namespace = Annotated[str, Query(pattern=_NAME)]


class ApplyResponse(Model):
    """What an apply did, and the workload as now stored."""

    outcome: str
    workload: WorkloadStatus


@router.post(
    "",
    response_model=ApplyResponse,
    responses={201: {"model": ApplyResponse, "description": "Created"}},
    openapi_extra=request_body(WorkloadDescriptor),
)
async def apply(request: Request, response: Response, plane: Plane) -> ApplyResponse:
    """Apply a descriptor (JSON or YAML). 201 when created, 200 when updated (new version) or unchanged."""
    document: dict[str, Any] = require_mapping(await read_document(request), "a workload descriptor")
    descriptor = WorkloadDescriptor.model_validate(document)
    result, status = await run_in_threadpool(plane.commands.workloads.apply, descriptor)
    response.status_code = 201 if result.outcome == "created" else 200
    return ApplyResponse(outcome=result.outcome, workload=status)


@router.get("", response_model=list[WorkloadStatus])
def list_workloads(
    plane: Plane,
    namespace: Annotated[str | None, Query(pattern=_NAME)] = None,
    limit: WorkloadPage = 100,
    offset: Offset = 0,
) -> list[WorkloadStatus]:
    """A page of workloads (all namespaces unless one is given)."""
    return plane.views.workloads.page(namespace, limit=limit, offset=offset)


@router.get("/{name}", response_model=WorkloadStatus)
def get_workload(name: str, plane: Plane, namespace: Namespace = "default") -> WorkloadStatus:
    """Desired against actual replicas, per cluster and node, with their URLs."""
    return plane.views.workloads.status(namespace, name)


@router.delete("/{name}", status_code=202, response_model=WorkloadStatus)
def delete_workload(name: str, plane: Plane, namespace: Namespace = "default") -> WorkloadStatus | Response:
    """Stop every replica, then forget the workload (its history stays)."""
    plane.commands.workloads.delete(namespace, name)
    try:
        return plane.views.workloads.status(namespace, name)
    except ValidationError:
        # A row stored before validation was tightened cannot be shown, but it must still be deletable.
        return Response(status_code=202)


@router.get("/{name}/placement", response_model=PlacementExplanation)
def placement(name: str, plane: Plane, namespace: Namespace = "default") -> PlacementExplanation:
    """Why the workload runs where it runs: each replica's placement and the decision behind it, and the latest
    decision with its explanation (each candidate's verdict and scores)."""
    explanation = plane.views.workloads.placement(namespace, name)
    if explanation is None:
        raise ApiError(404, "not_decided", f"no placement decision for {namespace}/{name} yet")
    return explanation


@router.get("/{name}/placement/nodes", response_model=PlacementDecision)
def placement_nodes(name: str, plane: Plane, namespace: Namespace = "default") -> PlacementDecision:
    """Every cluster's and node's verdict as the inventory stands now (the full detail a compact stored decision
    leaves out): what the decision engine would decide for the replicas the workload still needs, and why each
    node would or would not take one. Computed on request, not stored, changes nothing."""
    verdicts = plane.views.workloads.node_verdicts(namespace, name)
    if verdicts is None:
        raise ApiError(404, "not_deployable", f"{namespace}/{name} is a catalogue entry: it has nothing to place")
    return verdicts


@router.get("/{name}/decisions", response_model=list[StoredDecision])
def decisions(
    name: str,
    plane: Plane,
    namespace: Namespace = "default",
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[StoredDecision]:
    """The stored history of placement decisions, oldest first; page with ``after`` = the last id received."""
    return plane.views.workloads.decisions(namespace, name, after=after, limit=limit)


@router.get("/{name}/events", response_model=list[Event])
def workload_events(
    name: str,
    plane: Plane,
    namespace: Namespace = "default",
    after: After = 0,
    limit: EventPage = 500,
) -> list[Event]:
    """History of a workload: registered, placed, started, crashed, rescheduled, ... (kept after deletion)."""
    found = plane.views.workloads.history(namespace, name, after=after, limit=limit)
    if not found and after == 0:
        raise ApiError(404, "not_found", f"workload {namespace}/{name} has no history")
    return found
