"""The FastAPI dependency over real HTTP: 401 with RFC 6750 challenge, 403 by role, 200, the error body shape."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI

from nemo_kernel.access import required_role
from nemo_kernel.access.fastapi import bearer_auth, install_error_handlers
from nemo_kernel.access.issuer import IdentityAdmin

from .conftest import IssuerServer, serve_asgi


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/api/v1/workloads", "nemo-viewer"),
        ("POST", "/api/v1/workloads", "nemo-operator"),
        ("DELETE", "/api/v1/migrations/m1", "nemo-operator"),
        ("POST", "/api/v1/clusters", "nemo-admin"),
        ("GET", "/api/v1/clusters/c1/nodes", "nemo-viewer"),
        ("POST", "/api/v1/clusters/c1/faults", "nemo-operator"),
        ("GET", "/api/v1/clusters/c1/faults", "nemo-viewer"),
        ("POST", "/api/v1/clusters/c1/faults/x", "nemo-admin"),  # only the faults collection itself
        ("POST", "/api/v1/clusters/c1/drain", "nemo-admin"),
        ("POST", "/api/v1/workloads/faults/x", "nemo-operator"),  # a sub-rule of clusters, not of every resource
        ("GET", "/api/v1/users", "nemo-admin"),
        ("PUT", "/api/v1/gateway/routes/r", "nemo-admin"),
        ("POST", "/api/v1/something-new", "nemo-admin"),
        ("GET", "/api/v1/something-new", "nemo-admin"),
        ("GET", "/elsewhere/api/v1/users", "nemo-admin"),
    ],
)
def test_required_role_table(method: str, path: str, role: str) -> None:
    assert required_role(method, path) == role


async def test_api_dependency(issuer: IssuerServer) -> None:
    admin = IdentityAdmin(issuer.realm.users, issuer.realm.clients, issuer.realm.hasher)
    viewer = await admin.add_client("viewer", roles=["nemo-viewer"])
    app = FastAPI()
    install_error_handlers(app)
    api = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer_auth(issuer.realm.local_verifier()))])

    @api.get("/clusters")
    async def list_clusters() -> list[str]:
        return ["edge-1"]

    @api.post("/clusters")
    async def add_cluster() -> dict[str, str]:
        return {"name": "edge-2"}

    app.include_router(api)
    token = await issuer.client_token("viewer", viewer.secret)
    async with serve_asgi(app) as base, httpx.AsyncClient(base_url=base) as http:
        missing = await http.get("/api/v1/clusters")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == (
            'Bearer realm="nemo", error="invalid_token", error_description="missing bearer token"'
        )
        assert missing.json() == {"error": {"code": "invalid_token", "message": "missing bearer token", "details": {}}}
        garbage = await http.get("/api/v1/clusters", headers={"Authorization": "Bearer a.b.c"})
        assert garbage.status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        assert (await http.get("/api/v1/clusters", headers=auth)).json() == ["edge-1"]
        forbidden = await http.post("/api/v1/clusters", headers=auth)
        assert forbidden.status_code == 403
        assert forbidden.json()["error"] == {
            "code": "insufficient_scope",
            "message": "requires role nemo-admin",
            "details": {"required_role": "nemo-admin"},
        }
        await admin.set_client_enabled("viewer", False)
        assert (await http.get("/api/v1/clusters", headers=auth)).status_code == 401


async def test_roles_hold_behind_a_root_path(issuer: IssuerServer) -> None:
    """Mounted under a proxy prefix, an admin-only resource stays admin-only (the prefix must not hide it)."""
    admin = IdentityAdmin(issuer.realm.users, issuer.realm.clients, issuer.realm.hasher)
    viewer = await admin.add_client("prefixed-viewer", roles=["nemo-viewer"])
    app = FastAPI()
    install_error_handlers(app)
    api = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer_auth(issuer.realm.local_verifier()))])

    @api.get("/users")
    async def list_users() -> list[str]:
        return ["alice"]

    @api.get("/clusters")
    async def list_clusters() -> list[str]:
        return ["edge-1"]

    app.include_router(api)
    auth = {"Authorization": f"Bearer {await issuer.client_token('prefixed-viewer', viewer.secret)}"}
    async with serve_asgi(app, root_path="/nemo") as base, httpx.AsyncClient(base_url=base, headers=auth) as http:
        assert (await http.get("/api/v1/clusters")).json() == ["edge-1"]
        refused = await http.get("/api/v1/users")  # the proxy in front stripped /nemo
        assert refused.status_code == 403
        assert refused.json()["error"]["details"] == {"required_role": "nemo-admin"}
