"""``/api/v1/petitions``: the Integration Component's REST door (the bus door is ``intent.#``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from nemo_kernel.api.body import read_document, require_mapping
from nemo_kernel.api.deps import control_plane
from nemo_kernel.api.openapi import request_body
from nemo_kernel.orchestrator import ControlPlane, DeployPetition, JoinPetition, parse_petition

router = APIRouter(prefix="/petitions", tags=["petitions"])
Plane = Annotated[ControlPlane, Depends(control_plane)]


@router.post("", status_code=202, openapi_extra=request_body(JoinPetition | DeployPetition, name="Petition"))
async def petition(request: Request, plane: Plane) -> dict[str, Any]:
    """``{numberofclusters: N}`` or ``{name, namespace, pathname}``; validated whole before anything is stored.

    A ``pathname`` outside ``NEMO_PETITION_ROOTS`` (local paths, ``file://``) or a git transport the server does not
    allow is refused with 403; other refusals are 422 and never quote the file they are about. The read or clone
    runs in a worker thread, within the clone time and size limits."""
    document = require_mapping(await read_document(request), "a petition")
    parse_petition(document)  # 422 before any work
    return await run_in_threadpool(plane.commands.workloads.petition, document)
