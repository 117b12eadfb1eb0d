"""``/api/v1/gateway``: services, routes, consumers and plugins of the gateway, and its whole declarative config.

Kong-like: ``POST /services`` creates (409 if the name is taken), ``PUT /services/{name}`` creates or replaces,
``DELETE`` refuses (409) while other objects name the target. ``PUT /config`` replaces everything at once.
Every change is validated against the whole resulting configuration before it is stored.
Secrets (plugin client secrets, Redis passwords) are never read back: every answer shows a placeholder, and the
placeholder sent back unchanged keeps the stored secret, so an export applied again loses nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from nemo_kernel.access.gateway import parse_gateway_config
from nemo_kernel.access.gateway import store as gateway_store
from nemo_kernel.access.gateway.config import ConsumerConfig, GatewayConfig, PluginSpec, RouteConfig, ServiceConfig
from nemo_kernel.api.body import read_document, require_mapping
from nemo_kernel.api.deps import control_plane
from nemo_kernel.api.openapi import request_body
from nemo_kernel.orchestrator import ControlPlane

router = APIRouter(prefix="/gateway", tags=["gateway"])
Plane = Annotated[ControlPlane, Depends(control_plane)]
Entity = dict[str, Any]

_ENTITY_TYPES: dict[str, Any] = {
    "service": ServiceConfig,
    "route": RouteConfig,
    "consumer": ConsumerConfig,
    "plugin": PluginSpec,
}


def _entity_routes(kind: str) -> None:
    section = gateway_store.SECTIONS[kind]
    body = request_body(_ENTITY_TYPES[kind], name=f"Gateway{kind.title()}")
    # PUT takes the object's key from the URL when the body leaves it out.
    replacement = request_body(
        _ENTITY_TYPES[kind], name=f"Gateway{kind.title()}Replacement", optional=(gateway_store.KEY_FIELDS[kind],)
    )

    async def create(request: Request, response: Response, plane: Plane) -> Entity:
        document = require_mapping(await read_document(request), f"a gateway {kind}")
        spec, _ = await run_in_threadpool(lambda: plane.commands.gateway.put(kind, document, create=True))
        response.status_code = 201
        return spec

    async def upsert(key: str, request: Request, response: Response, plane: Plane) -> Entity:
        document = require_mapping(await read_document(request), f"a gateway {kind}")
        spec, created = await run_in_threadpool(lambda: plane.commands.gateway.put(kind, document, key=key))
        response.status_code = 201 if created else 200
        return spec

    def list_all(plane: Plane) -> list[Entity]:
        return plane.views.gateway.entities(kind)

    def get_one(key: str, plane: Plane) -> Entity:
        return plane.views.gateway.entity(kind, key)

    def delete(key: str, plane: Plane) -> Response:
        plane.commands.gateway.delete(kind, key)
        return Response(status_code=204)

    path = f"/{section}"
    router.add_api_route(path, list_all, methods=["GET"], summary=f"List gateway {section}")
    router.add_api_route(
        path, create, methods=["POST"], status_code=201, summary=f"Create a gateway {kind}", openapi_extra=body
    )
    router.add_api_route(f"{path}/{{key}}", get_one, methods=["GET"], summary=f"One gateway {kind}")
    router.add_api_route(
        f"{path}/{{key}}",
        upsert,
        methods=["PUT"],
        summary=f"Create or replace a gateway {kind}",
        responses={201: {"description": "Created"}},
        openapi_extra=replacement,
    )
    router.add_api_route(
        f"{path}/{{key}}", delete, methods=["DELETE"], status_code=204, summary=f"Delete a gateway {kind}"
    )


for _kind in gateway_store.SECTIONS:
    _entity_routes(_kind)


@router.get(
    "/config",
    response_model=dict[str, Any],
    responses={200: {"content": {"application/yaml": {"schema": {"type": "object"}}}}},
)
def export_config(request: Request, plane: Plane) -> Response:
    """The whole configuration as a declarative document (YAML when the client asks for YAML)."""
    document = plane.views.gateway.config()
    if "yaml" in request.headers.get("accept", ""):
        return Response(yaml.safe_dump(document, sort_keys=False), media_type="application/yaml")
    return JSONResponse(document)


@router.put("/config", openapi_extra=request_body(GatewayConfig))
async def replace_config(request: Request, plane: Plane) -> dict[str, Any]:
    """Replace the whole configuration with a declarative document (JSON or YAML), in one transaction."""
    document = require_mapping(await read_document(request), "a gateway configuration")
    config = parse_gateway_config(document)  # a ValidationError answers 422 with the fields at fault
    return await run_in_threadpool(plane.commands.gateway.replace_config, config)
