"""The API served over real HTTP on loopback by a real ControlPlane in this process, whose samples a test writes.

What ``nemo up`` builds (ControlPlane, ApiAccess with the built-in issuer, ``create_app``, uvicorn on a bound
socket), run in a thread with its own event loop, so a test can put samples with exactly known values into the
control plane's embedded store (``plane.metrics_store.ingest``) and ask the API, the CLI or the views about them.
Clusters are ``driver: sim`` memory clusters (``tests/orchestrator/fakes.py``): workloads are applied, placed and
run through the API like on any cluster, and answer instantly.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from nemo_kernel.access.issuer import IdentityAdmin
from nemo_kernel.api import create_app
from nemo_kernel.api.security import ApiAccess
from nemo_kernel.config import Settings
from nemo_kernel.domain import DriverKind
from nemo_kernel.orchestrator import ControlPlane
from tests.orchestrator.fakes import MemoryProvider
from tests.stack import HTTP, wait_for


@dataclass
class ServedApi:
    """A served API: its URL, its control plane, and tokens of its issuer."""

    url: str
    plane: ControlPlane
    memory: MemoryProvider
    admin_id: str = ""
    admin_secret: str = ""
    _tokens: dict[str, str] = field(default_factory=dict)

    def token(self, client_id: str | None = None, secret: str | None = None) -> str:
        """An access token of ``client_id`` (the admin client by default), from the issuer's token endpoint."""
        client_id, secret = client_id or self.admin_id, secret or self.admin_secret
        if client_id not in self._tokens:
            response = HTTP.post(
                f"{self.url}/realms/nemo/protocol/openid-connect/token",
                data={"grant_type": "client_credentials"},
                auth=(client_id, secret),
                timeout=10,
            )
            assert response.status_code == 200, response.text
            self._tokens[client_id] = response.json()["access_token"]
        return self._tokens[client_id]

    def client_with_roles(self, client_id: str, roles: list[str]) -> str:
        """A token of a new client holding ``roles``, created by the admin through the API."""
        created = self.api("POST", "/clients", json={"client_id": client_id, "roles": roles})
        assert created.status_code == 201, created.text
        return self.token(client_id, created.json()["secret"])

    def api(self, method: str, path: str, *, token: str | None = "admin", **kwargs: Any) -> httpx.Response:
        """Call ``/api/v1{path}`` over HTTP, as the admin unless another ``token`` (or None: no token) is given."""
        headers = dict(kwargs.pop("headers", None) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {self.token() if token == 'admin' else token}"
        return HTTP.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=30, **kwargs)


@contextmanager
def served_api(root: Path, clusters: list[dict[str, Any]], **settings: Any) -> Iterator[ServedApi]:
    """Serve the API of a control plane with ``clusters`` (memory clusters) on loopback until the block ends."""
    root.mkdir(parents=True, exist_ok=True)
    clusters_file = root / "clusters.yaml"
    clusters_file.write_text(yaml.safe_dump({"clusters": [{"driver": "sim", **c} for c in clusters]}))
    config = Settings(data_dir=root / "data", clusters_file=clusters_file, reconcile_interval=0.2, **settings)
    memory = MemoryProvider()
    plane = ControlPlane(config, providers={DriverKind.SIM: memory})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    served = ServedApi(f"http://127.0.0.1:{sock.getsockname()[1]}", plane, memory)
    access = ApiAccess.from_settings(config, plane.db, served.url)

    async def admin_client() -> None:
        assert access.realm is not None
        realm = access.realm
        issued = await IdentityAdmin(realm.users, realm.clients, realm.hasher).ensure_admin_client()
        assert issued is not None
        served.admin_id, served.admin_secret = issued.client.client_id, issued.secret

    server = uvicorn.Server(
        uvicorn.Config(create_app(plane, access, on_started=admin_client), log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 60, "the API to serve")
        assert thread.is_alive(), "the API server stopped while starting"
        yield served
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
