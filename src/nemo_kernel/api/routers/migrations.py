"""``/api/v1/migrations``: move a workload's replica to another node, cluster or runtime, and follow the move."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool

from nemo_kernel.api.body import read_document, require_mapping
from nemo_kernel.api.deps import control_plane, requested_by
from nemo_kernel.api.openapi import request_body
from nemo_kernel.api.params import MAX_INT64, Offset
from nemo_kernel.domain import MigrationRequest, MigrationStatus
from nemo_kernel.domain.migration import WORKLOAD_REF
from nemo_kernel.orchestrator import ControlPlane

router = APIRouter(prefix="/migrations", tags=["migrations"])
Plane = Annotated[ControlPlane, Depends(control_plane)]
MigrationPage = Annotated[int, Query(ge=1, le=1000, description="at most this many migrations")]


@router.post("", status_code=202, response_model=MigrationStatus, openapi_extra=request_body(MigrationRequest))
async def start(request: Request, plane: Plane) -> MigrationStatus:
    """Start a migration ``{workload, replica?, to: {cluster?, node?, runtime?}, mode?}``; 202 with the stored
    record (phase Planned). The control plane carries it out; follow it with ``GET /migrations/{id}``."""
    document = require_mapping(await read_document(request), "a migration")
    migration = MigrationRequest.model_validate(document)
    return await run_in_threadpool(plane.commands.migrations.start, migration, requested_by(request))


@router.get("", response_model=list[MigrationStatus])
def list_migrations(
    plane: Plane,
    workload: Annotated[str | None, Query(pattern=WORKLOAD_REF, max_length=127)] = None,
    limit: MigrationPage = 100,
    offset: Offset = 0,
) -> list[MigrationStatus]:
    """Migrations, newest first; of one workload (``namespace/name``) when given."""
    if workload is not None and "/" not in workload:
        workload = f"default/{workload}"
    return plane.views.migrations.page(workload, limit=limit, offset=offset)


@router.get("/{migration_id}", response_model=MigrationStatus)
def get_migration(migration_id: Annotated[int, Path(ge=1, le=MAX_INT64)], plane: Plane) -> MigrationStatus:
    """One migration: phase, per-phase timings, measured downtime, message."""
    return plane.views.migrations.get(migration_id)
