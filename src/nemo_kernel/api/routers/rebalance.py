"""``/api/v1/rebalance``: plan a global re-optimisation of where replicas run (dry run or apply), and follow it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool

from nemo_kernel.api.body import read_document, require_mapping
from nemo_kernel.api.deps import control_plane, requested_by
from nemo_kernel.api.openapi import request_body
from nemo_kernel.api.params import MAX_INT64
from nemo_kernel.domain import MAX_MOVES_PAGE, MOVES_PAGE, RebalanceRequest, RebalanceStatus
from nemo_kernel.orchestrator import ControlPlane

router = APIRouter(prefix="/rebalance", tags=["rebalance"])
Plane = Annotated[ControlPlane, Depends(control_plane)]


@router.post("", response_model=RebalanceStatus, openapi_extra=request_body(RebalanceRequest))
async def rebalance(request: Request, plane: Plane) -> RebalanceStatus:
    """Plan a rebalance ``{apply: bool, max_moves?, namespaces?}``; the plan with each move, why and the saving.
    With ``apply`` and a saving above the thresholds its moves start (follow them with ``GET /rebalance/{id}``);
    409 while another plan is being applied."""
    document = require_mapping(await read_document(request), "a rebalance request")
    wanted = RebalanceRequest.model_validate(document)
    return await run_in_threadpool(plane.commands.rebalance.run, wanted, requested_by(request))


@router.get("", response_model=list[RebalanceStatus])
def recent(
    plane: Plane, limit: Annotated[int, Query(ge=1, le=100, description="at most this many plans")] = 20
) -> list[RebalanceStatus]:
    """The latest plans, newest first."""
    return plane.views.rebalances.recent(limit)


@router.get("/{rebalance_id}", response_model=RebalanceStatus)
def get_rebalance(
    rebalance_id: Annotated[int, Path(ge=1, le=MAX_INT64)],
    plane: Plane,
    offset: Annotated[int, Query(ge=0, le=MAX_INT64, description="moves to skip, in plan order")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_MOVES_PAGE, description="at most this many moves")] = MOVES_PAGE,
) -> RebalanceStatus:
    """One plan: a page of its moves and where each is (queued, moving, done, skipped with why, failed);
    ``moves_total`` counts them all."""
    return plane.views.rebalances.get(rebalance_id, offset, limit)
