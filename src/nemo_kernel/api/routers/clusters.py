"""``/api/v1/clusters``: register, list, inspect, cordon, drain and remove clusters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from nemo_kernel.api.body import read_document, require_mapping
from nemo_kernel.api.deps import control_plane
from nemo_kernel.api.openapi import request_body
from nemo_kernel.api.params import After, EventPage
from nemo_kernel.domain import ClusterSpec, ClusterStatus, Event, Fault, FaultSpec, Links, NodeStatus
from nemo_kernel.orchestrator import ControlPlane

router = APIRouter(prefix="/clusters", tags=["clusters"])
Plane = Annotated[ControlPlane, Depends(control_plane)]


@router.post("", status_code=201, response_model=ClusterStatus, openapi_extra=request_body(ClusterSpec))
async def add_cluster(request: Request, plane: Plane) -> ClusterStatus:
    """Register a cluster (JSON or YAML body). 422 on invalid input, 409 if the name is taken."""
    spec = ClusterSpec.model_validate(require_mapping(await read_document(request), "a cluster"))
    return plane.views.clusters.live(await run_in_threadpool(plane.commands.clusters.add, spec))


@router.get("", response_model=list[ClusterStatus])
def list_clusters(plane: Plane) -> list[ClusterStatus]:
    """Every cluster with its phase."""
    return plane.views.clusters.every()


@router.get("/{name}", response_model=ClusterStatus)
def get_cluster(name: str, plane: Plane) -> ClusterStatus:
    """One cluster; 404 if unknown."""
    return plane.views.clusters.get(name)


@router.delete("/{name}", status_code=204)
def remove_cluster(name: str, plane: Plane) -> Response:
    """Remove a cluster: its agent stops and its replicas are rescheduled elsewhere."""
    plane.commands.clusters.remove(name)
    return Response(status_code=204)


@router.put("/{name}/links", response_model=ClusterStatus, openapi_extra=request_body(Links, name="ClusterLinks"))
async def set_links(name: str, request: Request, plane: Plane) -> ClusterStatus:
    """Replace the cluster's emulated links: ``{controlplane: {latency_ms, jitter_ms, loss, bandwidth_mbps},
    <peer cluster>: {...}}``; ``{}`` removes them all. 422 naming the field at fault, 404 if unknown."""
    links = require_mapping(await read_document(request), "the links")
    return plane.views.clusters.live(await run_in_threadpool(plane.commands.clusters.set_links, name, links))


@router.get("/{name}/nodes", response_model=list[NodeStatus])
def list_nodes(name: str, plane: Plane) -> list[NodeStatus]:
    """Nodes of a cluster with their capacity accounting."""
    return plane.views.clusters.nodes(name)


@router.get("/{name}/events", response_model=list[Event])
def cluster_events(name: str, plane: Plane, after: After = 0, limit: EventPage = 500) -> list[Event]:
    """History of a cluster (registered, ready, not ready, cordoned, ...)."""
    return plane.views.clusters.history(name, after=after, limit=limit)


@router.post("/{name}/cordon", response_model=ClusterStatus)
def cordon(name: str, plane: Plane) -> ClusterStatus:
    """No new replicas on this cluster; running ones stay."""
    return plane.views.clusters.live(plane.commands.clusters.set_schedulable(name, cordoned=True))


@router.post("/{name}/drain", response_model=ClusterStatus)
def drain(name: str, plane: Plane) -> ClusterStatus:
    """Cordon the cluster and move its replicas to other eligible clusters."""
    return plane.views.clusters.live(plane.commands.clusters.set_schedulable(name, cordoned=True, draining=True))


@router.post("/{name}/uncordon", response_model=ClusterStatus)
def uncordon(name: str, plane: Plane) -> ClusterStatus:
    """Make the cluster schedulable again."""
    return plane.views.clusters.live(plane.commands.clusters.set_schedulable(name, cordoned=False))


@router.post("/{name}/faults", status_code=201, response_model=Fault, openapi_extra=request_body(FaultSpec))
async def inject_fault(name: str, request: Request, plane: Plane) -> Fault:
    """Inject a fault (down, node_down, partition, slow) for ``for_s`` seconds; it ends by itself. Operators may.
    422 on bad parameters, 404 for an unknown cluster or node, 409 when the cluster's driver cannot do it."""
    spec = FaultSpec.model_validate(require_mapping(await read_document(request), "a fault"))
    return await plane.commands.faults.inject(name, spec)


@router.get("/{name}/faults", response_model=list[Fault])
def list_faults(name: str, plane: Plane) -> list[Fault]:
    """The faults in progress on a cluster."""
    return plane.commands.faults.active(name)
