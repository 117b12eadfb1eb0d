"""Seed 6.5.1 end to end: the gateway `nemo up` runs, in front of its own API, guarding `register-cluster` and
`retrieve-cluster-details` with the oidc and acl plugins and the tokens of the built-in issuer.

The gateway must refuse at the edge (its metrics name the plugin that decided), and what it lets through is
checked again by the API, so a request that passes the gateway with the wrong role is still refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.stack import HTTP, Stack, running_stack, wait_for

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)

CLUSTER = {
    "name": "edge-651",
    "tier": "edge",
    "region": "eu-south",
    "country": "ES",
    "nodes": [{"name": "n1", "cpu": 2, "memory_mib": 2048}],
}
REGISTER = ("POST", "/api/v1/clusters", CLUSTER)
RETRIEVE = ("GET", f"/api/v1/clusters/{CLUSTER['name']}", None)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("seed651")
    with running_stack(root / "data", {"NEMO_CLUSTERS_FILE": str(_no_clusters(root))}) as s:
        yield s


def _no_clusters(root: Path) -> Path:
    path = root / "clusters.yaml"
    path.write_text("clusters: []\n")
    return path


def _client(stack: Stack, client_id: str, roles: list[str]) -> str:
    """Create a client through the API; its secret (shown once)."""
    created = stack.api("POST", "/clients", json={"client_id": client_id, "roles": roles})
    assert created.status_code == 201, created.text
    return str(created.json()["secret"])


def _call(stack: Stack, call: tuple[str, str, object], token: str | None) -> httpx.Response:
    method, path, body = call
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return HTTP.request(method, f"{stack.gateway_url}{path}", json=body, headers=headers, timeout=10)


def _decided_by(stack: Stack, route: str, status: int, plugin: str) -> float:
    """How many requests the gateway answered on ``route`` with ``status``, decided by ``plugin``."""
    text = HTTP.get(f"{stack.gateway_url}/_gateway/metrics", timeout=5).text
    pattern = rf'^nemo_gateway_requests_total{{(?=[^}}]*route="{route}")(?=[^}}]*status="{status}")'
    pattern += rf'(?=[^}}]*decided_by="{plugin}")[^}}]*}} (\S+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE))


def test_register_and_retrieve_cluster_through_the_gateway(stack: Stack) -> None:
    gateway_secret = _client(stack, "nac-gateway", [])
    admin_secret = _client(stack, "ops", ["nemo-admin"])
    viewer_secret = _client(stack, "auditor", ["nemo-viewer"])
    nobody_secret = _client(stack, "nobody", [])
    oidc = {
        "issuer": stack.issuer,
        "audience": "nemo-api",
        "introspect_jwts": True,  # a revoked token is refused at once, not when it expires
        "introspection": {"client_id": "nac-gateway", "client_secret": gateway_secret, "cache_ttl": 0},
    }
    for name, method, allow in (
        ("register-cluster", "POST", "nemo-admin"),
        ("retrieve-cluster-details", "GET", "nemo-viewer"),
    ):
        route = {"service": "nemo-api", "paths": ["/api/v1/clusters"], "methods": [method], "strip_path": False}
        assert stack.api("PUT", f"/gateway/routes/{name}", json=route).status_code == 201
        for plugin, config in (("oidc", oidc), ("acl", {"allow": [allow]})):
            added = stack.api("POST", "/gateway/plugins", json={"name": plugin, "route": name, "config": config})
            assert added.status_code == 201, added.text

    def guarded() -> bool:
        # The running gateway picks each change up by itself (until then the API's own check answers): wait
        # until the last plugin added, retrieve-cluster-details' acl, is in force.
        _call(stack, RETRIEVE, stack.token("nobody", nobody_secret))
        return _decided_by(stack, "retrieve-cluster-details", 403, "acl") > 0

    wait_for(guarded, 30, "the gateway to guard both routes")

    # 1. No token: 401 from the gateway with an RFC 6750 challenge.
    for call, route in ((REGISTER, "register-cluster"), (RETRIEVE, "retrieve-cluster-details")):
        before = _decided_by(stack, route, 401, "oidc")
        refused = _call(stack, call, None)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith('Bearer realm="nemo", error="invalid_token"')
        assert refused.json()["error"]["code"] == "invalid_token"
        assert _decided_by(stack, route, 401, "oidc") == before + 1

    # 2. An inactive token (revoked at the issuer): 401, though its signature and expiry are fine.
    revoked = stack.token("ops", admin_secret)
    revocation = HTTP.post(
        f"{stack.issuer}/protocol/openid-connect/revoke", data={"token": revoked}, auth=("ops", admin_secret)
    )
    assert revocation.status_code == 200
    assert [_call(stack, call, revoked).status_code for call in (REGISTER, RETRIEVE)] == [401, 401]

    # 3. A valid token without the role: 403 from the gateway's acl, naming what was needed.
    nobody = stack.token("nobody", nobody_secret)
    no_role = [_call(stack, call, nobody) for call in (REGISTER, RETRIEVE)]
    assert [r.status_code for r in no_role] == [403, 403]
    assert no_role[0].json()["error"]["details"] == {"required_any": ["nemo-admin"]}
    assert _decided_by(stack, "register-cluster", 403, "acl") == 1

    # 4. A valid token with the role: the request reaches the API and is carried out.
    admin = stack.token("ops", admin_secret)
    registered = _call(stack, REGISTER, admin)
    assert registered.status_code == 201, registered.text
    viewer = stack.token("auditor", viewer_secret)
    retrieved = _call(stack, RETRIEVE, viewer)
    assert retrieved.status_code == 200, retrieved.text
    assert retrieved.json()["spec"]["name"] == CLUSTER["name"]
    assert _decided_by(stack, "retrieve-cluster-details", 200, "") >= 1

    # A viewer passes the gateway for reads only; registering is refused at the edge, never reaching the API.
    assert _call(stack, REGISTER, viewer).status_code == 403
    assert [c["spec"]["name"] for c in stack.api("GET", "/clusters").json()] == [CLUSTER["name"]]
    # The registered cluster's agent runs as a process of its own: let it come up (and record itself) so that the
    # stack's cleanup finds it and no agent outlives the test.
    wait_for(lambda: stack.api("GET", f"/clusters/{CLUSTER['name']}").json()["phase"] == "Ready", 30, "edge-651 Ready")
