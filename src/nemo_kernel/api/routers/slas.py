"""``/api/v1/slas`` and ``/api/v1/violations``: apply SLAs (NEMO's format or OpenSLO v1), read them, their SLOs'
status, violations, the closed loop's audit, and the Prometheus rules and OpenSLO form of each."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from nemo_kernel.api.body import read_document
from nemo_kernel.api.deps import control_plane
from nemo_kernel.api.openapi import request_body
from nemo_kernel.api.params import After, EventPage, Offset
from nemo_kernel.domain import Event, Model
from nemo_kernel.domain.sla import SlaAction, SlaSpec, SlaState, SlaStatus, SloKind, Violation
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.orchestrator.views import SlaReport

router = APIRouter(prefix="/slas", tags=["slas"])
violations_router = APIRouter(prefix="/violations", tags=["slas"])
Plane = Annotated[ControlPlane, Depends(control_plane)]
_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
Namespace = Annotated[str, Query(pattern=_NAME)]
Page = Annotated[int, Query(ge=1, le=1000, description="at most this many")]
Sort = Annotated[
    str, Query(pattern=r"^-?(name|created|updated|state)$", description="name, created, updated or state; '-' descends")
]
TOTAL_HEADER = "X-Total-Count"


class SlaApplyResponse(Model):
    """What an apply did, and the SLA as now stored."""

    outcome: str
    sla: SlaStatus


@router.post(
    "",
    response_model=SlaApplyResponse,
    responses={201: {"model": SlaApplyResponse, "description": "Created"}},
    openapi_extra=request_body(SlaSpec),
)
async def apply(request: Request, response: Response, plane: Plane) -> SlaApplyResponse:
    """Apply an SLA (JSON or YAML; NEMO's format, or OpenSLO v1 objects: one, a list, or a YAML stream). 201 when
    created, 200 when updated (new version) or unchanged. 422 naming the field at fault (an unknown workload:
    ``workload``)."""
    document: Any = await read_document(request, stream=True)  # OpenSLO files are YAML streams
    spec = plane.commands.slas.parse(document)
    result, status = await run_in_threadpool(plane.commands.slas.apply, spec)
    response.status_code = 201 if result.outcome == "created" else 200
    return SlaApplyResponse(outcome=result.outcome, sla=status)


@router.get("", response_model=list[SlaStatus])
def list_slas(
    plane: Plane,
    response: Response,
    namespace: Annotated[str | None, Query(pattern=_NAME)] = None,
    workload: Annotated[str | None, Query(pattern=_NAME)] = None,
    state: SlaState | None = None,
    kind: Annotated[SloKind | None, Query(description="SLAs with an SLO of this kind")] = None,
    sort: Sort = "name",
    limit: Page = 100,
    offset: Offset = 0,
) -> list[SlaStatus]:
    """A page of SLAs (all namespaces unless one is given); the header X-Total-Count says how many match."""
    page = plane.views.slas.page(
        namespace=namespace, workload=workload, state=state, kind=kind, sort=sort, limit=limit, offset=offset
    )
    response.headers[TOTAL_HEADER] = str(page.total)
    return page.items


@router.get("/{name}", response_model=SlaStatus)
def get_sla(name: str, plane: Plane, namespace: Namespace = "default") -> SlaStatus:
    """The SLA as stored: its spec, version and lifecycle state."""
    return plane.views.slas.get(namespace, name)


@router.delete("/{name}", response_model=SlaStatus)
def delete_sla(name: str, plane: Plane, namespace: Namespace = "default") -> SlaStatus:
    """Terminate the SLA: no longer evaluated; its status, violations, audit and history stay."""
    return plane.commands.slas.delete(namespace, name)


@router.get("/{name}/status", response_model=SlaReport)
def sla_status(name: str, plane: Plane, namespace: Namespace = "default") -> SlaReport:
    """Each SLO's last evaluation: value, target, budget remaining, burn rates, prediction (NoData until then)."""
    return plane.views.slas.report(namespace, name)


@router.get("/{name}/actions", response_model=list[SlaAction])
def sla_actions(
    name: str, plane: Plane, namespace: Namespace = "default", limit: Page = 100, offset: Offset = 0
) -> list[SlaAction]:
    """The closed loop's audit of the SLA, newest first: trigger, prediction, action, outcome, what followed."""
    return plane.views.slas.actions(namespace, name, limit=limit, offset=offset)


@router.get("/{name}/events", response_model=list[Event])
def sla_events(
    name: str, plane: Plane, namespace: Namespace = "default", after: After = 0, limit: EventPage = 500
) -> list[Event]:
    """History of the SLA: applied, activated, violated, recovered, breach predicted, actions, terminated."""
    plane.views.slas.get(namespace, name)  # 404 for an unknown SLA
    return plane.views.slas.history(namespace, name, after=after, limit=limit)


@router.get("/{name}/openslo", response_model=list[dict[str, Any]])
def sla_openslo(name: str, plane: Plane, namespace: Namespace = "default") -> list[dict[str, Any]]:
    """The SLA as OpenSLO v1 objects (one SLO per NEMO SLO); applying them gives the same SLA back."""
    return plane.views.slas.openslo(namespace, name)


@router.get("/{name}/rules", response_class=Response, responses={200: {"content": {"application/yaml": {}}}})
def sla_rules(name: str, plane: Plane, namespace: Namespace = "default") -> Response:
    """Prometheus recording and alerting rules for the SLA's ratio SLOs (Sloth's names and burn-rate alerts)."""
    return Response(plane.views.slas.rules(namespace, name), media_type="application/yaml")


@violations_router.get("", response_model=list[Violation])
def list_violations(
    plane: Plane,
    response: Response,
    namespace: Annotated[str | None, Query(pattern=_NAME)] = None,
    sla: Annotated[str | None, Query(pattern=_NAME)] = None,
    slo: Annotated[str | None, Query(pattern=_NAME)] = None,
    open_only: Annotated[bool, Query(alias="open", description="only those still going on")] = False,
    limit: Page = 100,
    offset: Offset = 0,
) -> list[Violation]:
    """Violations of SLOs, newest first; the header X-Total-Count says how many match."""
    page = plane.views.slas.violations(
        namespace=namespace, sla=sla, slo=slo, open_only=open_only, limit=limit, offset=offset
    )
    response.headers[TOTAL_HEADER] = str(page.total)
    return page.items
