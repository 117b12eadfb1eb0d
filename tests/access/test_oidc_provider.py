"""Against an independent provider: npm ``oidc-provider@8`` with Keycloak's layout, started on loopback.

JWT access tokens are verified locally against its JWKS; its opaque tokens go through introspection, which is how
a revoked token is refused (the provider does not track its JWTs, so it cannot revoke them).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_kernel.access import ClientCredentials, InvalidToken, TokenVerifier
from tests.stack import HTTP, running_stack

from .conftest import running_gateway

PROVIDER_DIR = Path(__file__).parent / "oidc_provider"
NPM_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nemo-tests" / "oidc-provider"

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed"),
    pytest.mark.e2e,  # starts `nemo up`: run first (tests/conftest.py)
]


def _installed_dependencies() -> Path:
    """The provider's ``node_modules``, installed once per machine and version of package.json.

    CI tests a fresh clone each time: an install inside the clone would cost every run a trip through npm. The cache
    is keyed by package.json's content, and a lock keeps concurrent test runs from installing into it at once.
    """
    manifest = (PROVIDER_DIR / "package.json").read_bytes()
    installed = NPM_CACHE / hashlib.sha256(manifest).hexdigest()[:16]
    if (installed / "node_modules" / "oidc-provider").is_dir():
        return installed / "node_modules"
    NPM_CACHE.mkdir(parents=True, exist_ok=True)
    with (NPM_CACHE / "install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (installed / "node_modules" / "oidc-provider").is_dir():
            # installed beside, then renamed: an interrupted install never looks complete
            staging = Path(tempfile.mkdtemp(prefix="installing-", dir=NPM_CACHE))
            (staging / "package.json").write_bytes(manifest)
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=staging, check=True, timeout=300
            )
            shutil.rmtree(installed, ignore_errors=True)
            staging.rename(installed)
    return installed / "node_modules"


@pytest.fixture(scope="session")
def provider() -> Iterator[str]:
    """Start the provider; yields its issuer URL. Its npm dependency comes from the machine's cache."""
    linked = PROVIDER_DIR / "node_modules"
    if not (linked / "oidc-provider").is_dir():
        # node resolves server.mjs's import through this link to the cache
        if linked.is_symlink():
            linked.unlink()
        elif linked.exists():
            shutil.rmtree(linked)  # an unfinished install of an older version of this fixture
        linked.symlink_to(_installed_dependencies(), target_is_directory=True)
    process = subprocess.Popen(
        ["node", "server.mjs"],
        cwd=PROVIDER_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    # The server prints its issuer once it listens: reading that line is the synchronisation.
    line = process.stdout.readline()
    try:
        yield str(json.loads(line)["issuer"])
    finally:
        process.stdin.close()  # the server exits when its stdin closes
        process.wait(timeout=10)


async def _token(issuer: str, client: str, resource: str | None = None) -> str:
    data = {"grant_type": "client_credentials"}
    if resource:
        data["resource"] = resource
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{issuer}/protocol/openid-connect/token", data=data, auth=(client, f"{client}-secret")
        )
    response.raise_for_status()
    return str(response.json()["access_token"])


async def test_verifier_accepts_provider_jwts(provider: str) -> None:
    token = await _token(provider, "nemo-operator")
    principal = await TokenVerifier.from_issuer(provider, audience="nemo-api").verify(token)
    assert principal.client_id == "nemo-operator"
    assert principal.realm_roles == {"nemo-operator"}
    with pytest.raises(InvalidToken, match="audience"):
        await TokenVerifier.from_issuer(provider, audience="someone-else").verify(token)


async def test_revoked_opaque_token_is_refused(provider: str) -> None:
    verifier = TokenVerifier.from_issuer(
        provider,
        audience="nemo-api",
        introspection_client=ClientCredentials("nemo-admin", "nemo-admin-secret"),
        introspection_cache_ttl=0,
    )
    token = await _token(provider, "nemo-operator", "urn:nemo:opaque")
    assert token.count(".") == 0
    assert (await verifier.verify(token)).realm_roles == {"nemo-operator"}
    async with httpx.AsyncClient() as http:
        revoked = await http.post(
            f"{provider}/protocol/openid-connect/revoke",
            data={"token": token},
            auth=("nemo-operator", "nemo-operator-secret"),
        )
    assert revoked.status_code == 200
    with pytest.raises(InvalidToken, match="not active"):
        await verifier.verify(token)


async def test_gateway_with_provider_tokens(provider: str, upstream: str) -> None:
    oidc: dict[str, Any] = {
        "issuer": provider,
        "audience": "nemo-api",
        "introspection": {"client_id": "nemo-admin", "client_secret": "nemo-admin-secret", "cache_ttl": 0},
        # This provider does not track its JWTs: introspected, they would all read inactive.
        "introspect_jwts": False,
    }
    config = {
        "services": [{"name": "api", "url": upstream}],
        "routes": [{"name": "clusters", "service": "api", "paths": ["/clusters"]}],
        "plugins": [
            {"name": "oidc", "config": oidc},
            {"name": "acl", "config": {"allow": ["nemo-operator"]}},
        ],
    }
    async with running_gateway(config) as gateway, httpx.AsyncClient(base_url=gateway) as http:

        async def get(token: str | None) -> int:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return (await http.get("/clusters/x", headers=headers)).status_code

        assert await get(None) == 401
        assert await get(await _token(provider, "nemo-operator")) == 200
        assert await get(await _token(provider, "nemo-admin")) == 200  # admin implies operator
        assert await get(await _token(provider, "nemo-norole")) == 403
        opaque = await _token(provider, "nemo-operator", "urn:nemo:opaque")
        assert await get(opaque) == 200
        async with httpx.AsyncClient() as raw:
            await raw.post(
                f"{provider}/protocol/openid-connect/revoke",
                data={"token": opaque},
                auth=("nemo-operator", "nemo-operator-secret"),
            )
        assert await get(opaque) == 401


def test_nemo_up_with_the_provider_as_issuer(provider: str, tmp_path: Path) -> None:
    env = {
        "NEMO_OIDC_ISSUER": provider,
        "NEMO_OIDC_CLIENT_ID": "nemo-admin",
        "NEMO_OIDC_CLIENT_SECRET": "nemo-admin-secret",
        "NEMO_OIDC_INTROSPECTION_CACHE_TTL": "0",
        # this provider does not store its JWTs and answers "inactive" for each: opt out of introspecting them
        "NEMO_OIDC_INTROSPECT_JWTS": "false",
    }
    with running_stack(tmp_path / "data", env) as stack:
        assert not (stack.data_dir / "admin-credentials.json").exists()
        config = HTTP.get(f"{stack.url}/.well-known/nemo-configuration").json()
        assert config == {"issuer": provider, "audience": "nemo-api", "realm": None}
        assert HTTP.get(f"{stack.url}/realms/nemo/.well-known/openid-configuration").status_code == 404

        operator = asyncio.run(_token(provider, "nemo-operator"))
        assert stack.api("GET", "/clusters", token=None).status_code == 401
        assert stack.api("GET", "/clusters", token=operator).status_code == 200
        assert stack.api("POST", "/clusters", token=operator, json={"name": "x"}).status_code == 403
        assert stack.api("GET", "/clusters", token=asyncio.run(_token(provider, "nemo-norole"))).status_code == 403
        admin = asyncio.run(_token(provider, "nemo-admin"))
        users = stack.api("GET", "/users", token=admin)
        assert users.status_code == 404 and "external issuer" in users.json()["error"]["message"]

        opaque = asyncio.run(_token(provider, "nemo-operator", "urn:nemo:opaque"))
        assert stack.api("GET", "/workloads", token=opaque).status_code == 200
        revoked = HTTP.post(
            f"{provider}/protocol/openid-connect/revoke",
            data={"token": opaque},
            auth=("nemo-operator", "nemo-operator-secret"),
        )
        assert revoked.status_code == 200
        refused = stack.api("GET", "/workloads", token=opaque)
        assert refused.status_code == 401 and refused.json()["error"]["message"] == "token is not active"

        # The CLI finds the provider through the API and gets its own tokens there.
        as_operator = {"NEMO_CLIENT_ID": "nemo-operator", "NEMO_CLIENT_SECRET": "nemo-operator-secret"}
        assert stack.cli("cluster", "list", env=as_operator).returncode == 0
        log = (stack.data_dir.parent / f"{stack.data_dir.name}-nemo-up.log").read_text()
        assert "nemo-admin-secret" not in log and operator not in log
