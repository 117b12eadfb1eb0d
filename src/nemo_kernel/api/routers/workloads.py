"""``/api/v1/workloads``: apply CMDT descriptors, inspect workloads, their placement and history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import Field, ValidationError

from nemo_kernel.api.body import read_document, require_mapping
from nemo_kernel.api.deps import control_plane
from nemo_kernel.api.errors import ApiError
from nemo_kernel.api.openapi import request_body
from nemo_kernel.api.params import After, EventPage, Offset, WorkloadPage
from nemo_kernel.domain import (
    CandidateVerdict,
    Event,
    Model,
    PlacementDecision,
    ReplicaPhase,
    WorkloadDescriptor,
    WorkloadStatus,
)
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.store import events, workloads

router = APIRouter(prefix="/workloads", tags=["workloads"])
Plane = Annotated[ControlPlane, Depends(control_plane)]
Namespace = Annotated[str, Query(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]


class ApplyResponse(Model):
    """What an apply did, and the workload as now stored."""

    outcome: str
    workload: WorkloadStatus


def _status(plane: ControlPlane, namespace: str, name: str) -> WorkloadStatus:
    with plane.db.transaction() as s:
        row = workloads.get_workload(s, namespace, name)
        return workloads.to_workload_status(row, workloads.replicas_by_workload(s, [row.id]).get(row.id, []))


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
    result = await run_in_threadpool(plane.intake.apply, descriptor)
    if result.outcome != "unchanged":
        plane.wake()
    response.status_code = 201 if result.outcome == "created" else 200
    status = await run_in_threadpool(_status, plane, descriptor.namespace, descriptor.name)
    return ApplyResponse(outcome=result.outcome, workload=status)


@router.get("", response_model=list[WorkloadStatus])
def list_workloads(
    plane: Plane,
    namespace: Annotated[str | None, Query()] = None,
    limit: WorkloadPage = 100,
    offset: Offset = 0,
) -> list[WorkloadStatus]:
    """A page of workloads (all namespaces unless one is given)."""
    with plane.db.transaction() as s:
        rows = workloads.list_workloads(s, namespace, limit=limit, offset=offset)
        replicas = workloads.replicas_by_workload(s, [r.id for r in rows])
        return [workloads.to_workload_status(r, replicas.get(r.id, [])) for r in rows]


@router.get("/{name}", response_model=WorkloadStatus)
def get_workload(name: str, plane: Plane, namespace: Namespace = "default") -> WorkloadStatus:
    """Desired against actual replicas, per cluster and node, with their URLs."""
    return _status(plane, namespace, name)


@router.delete("/{name}", status_code=202, response_model=WorkloadStatus)
def delete_workload(name: str, plane: Plane, namespace: Namespace = "default") -> WorkloadStatus | Response:
    """Stop every replica, then forget the workload (its history stays)."""
    with plane.db.transaction() as s:
        workloads.mark_deleting(s, workloads.get_workload(s, namespace, name))
    plane.wake()
    try:
        return _status(plane, namespace, name)
    except ValidationError:
        # A row stored before validation was tightened cannot be shown, but it must still be deletable.
        return Response(status_code=202)


class ReplicaPlacement(Model):
    """Where one replica runs, and the decision that put it there."""

    replica: str
    index: int
    version: int
    cluster: str
    node: str
    phase: ReplicaPhase
    decision: int | None = Field(description="id of the decision that placed it (see .../decisions)")
    decided_at: datetime | None = None
    verdict: CandidateVerdict | None = Field(
        default=None, description="that decision's verdict about the node: scores, total, reason"
    )


class PlacementExplanation(PlacementDecision):
    """The latest placement decision, and every replica's current placement with the decision behind it.

    After a partial decision (a drain, a move) the latest decision covers only some replicas; ``replicas`` shows
    all of them.
    """

    id: int = Field(description="id of the latest decision")
    replicas: list[ReplicaPlacement]


class StoredDecision(PlacementDecision):
    """A stored placement decision with its id (the cursor of the history)."""

    id: int


@router.get("/{name}/placement", response_model=PlacementExplanation)
def placement(name: str, plane: Plane, namespace: Namespace = "default") -> PlacementExplanation:
    """Why the workload runs where it runs: each replica's placement and the decision behind it, and the latest
    decision with its explanation (each candidate's verdict and scores)."""
    with plane.db.transaction() as s:
        row = workloads.get_workload(s, namespace, name)
        latest = workloads.latest_decision(s, row)
        current = [r for r in workloads.replicas_by_workload(s, [row.id]).get(row.id, []) if r.desired]
        placed_by = workloads.placing_decisions(s, row, current)
    if latest is None:
        raise ApiError(404, "not_decided", f"no placement decision for {namespace}/{name} yet")
    replicas = []
    for r in current:
        decision_id, decision = placed_by.get(r.id, (None, None))
        verdict = None
        if decision is not None:
            verdict = next((c for c in decision.candidates if (c.cluster, c.node) == (r.cluster, r.node)), None)
        replicas.append(
            ReplicaPlacement(
                replica=r.id,
                index=r.index,
                version=r.version,
                cluster=r.cluster,
                node=r.node,
                phase=ReplicaPhase(r.phase),
                decision=decision_id,
                decided_at=None if decision is None else decision.decided_at,
                verdict=verdict,
            )
        )
    latest_id, decision = latest
    return PlacementExplanation(**decision.model_dump(), id=latest_id, replicas=replicas)


@router.get("/{name}/decisions", response_model=list[StoredDecision])
def decisions(
    name: str,
    plane: Plane,
    namespace: Namespace = "default",
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[StoredDecision]:
    """The stored history of placement decisions, oldest first; page with ``after`` = the last id received."""
    with plane.db.transaction() as s:
        found = workloads.decision_history(s, workloads.get_workload(s, namespace, name), after=after, limit=limit)
    return [StoredDecision(**d.model_dump(), id=i) for i, d in found]


@router.get("/{name}/events", response_model=list[Event])
def workload_events(
    name: str,
    plane: Plane,
    namespace: Namespace = "default",
    after: After = 0,
    limit: EventPage = 500,
) -> list[Event]:
    """History of a workload: registered, placed, started, crashed, rescheduled, ... (kept after deletion)."""
    subject = events.workload_subject(namespace, name)
    with plane.db.transaction() as s:
        found = events.history(s, subject, after_id=after, limit=limit)
    if not found and after == 0:
        raise ApiError(404, "not_found", f"workload {namespace}/{name} has no history")
    return found
