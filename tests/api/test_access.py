"""Access control of a running `nemo up` over real HTTP: tokens, roles, revocation, identities, CLI credentials."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.stack import HTTP, Stack, running_stack

from nemo_kernel.access.issuer.sql import SqlKeyRepository
from nemo_kernel.store import Database

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)

CHALLENGE = 'Bearer realm="nemo", error="invalid_token", error_description="{}"'
SLEEPER = {"name": "sleeper", "deployment": {"command": ["sleep", "600"], "replicas": 1}}
CLUSTER = {
    "name": "extra",
    "tier": "edge",
    "region": "eu-south",
    "country": "ES",
    "nodes": [{"name": "x-1", "cpu": 1, "memory_mib": 512}],
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("access")
    with running_stack(root / "data", {"NEMO_RECONCILE_INTERVAL": "0.3"}) as s:
        yield s


def _client(stack: Stack, client_id: str, roles: list[str], grants: list[str] | None = None) -> str:
    """Create a client as admin; its secret."""
    body: dict[str, Any] = {"client_id": client_id, "roles": roles}
    if grants:
        body["grant_types"] = grants
    created = stack.api("POST", "/clients", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["secret"])


def _refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    return error


def test_open_routes_and_discovery(stack: Stack) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert HTTP.get(f"{stack.url}{path}").status_code == 200, path
    config = HTTP.get(f"{stack.url}/.well-known/nemo-configuration").json()
    assert config == {"issuer": stack.issuer, "audience": "nemo-api", "realm": "nemo"}
    discovery = HTTP.get(f"{config['issuer']}/.well-known/openid-configuration").json()
    assert discovery["token_endpoint"] == f"{stack.issuer}/protocol/openid-connect/token"
    assert "bearer" in json.dumps(HTTP.get(f"{stack.url}/openapi.json").json()["components"]["securitySchemes"])


def test_401_body_and_challenge(stack: Stack) -> None:
    missing = stack.api("GET", "/clusters", token=None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == CHALLENGE.format("missing bearer token")
    assert missing.json() == {"error": {"code": "invalid_token", "message": "missing bearer token", "details": {}}}
    basic = stack.api("GET", "/clusters", token=None, headers={"Authorization": "Basic YTpi"})
    assert basic.headers["www-authenticate"] == CHALLENGE.format("authorization scheme must be Bearer")
    _refused(stack.api("GET", "/workloads", token="a.b.c"), 401, "invalid_token")
    _refused(stack.api("POST", "/workloads", token="not-a-jwt", json=SLEEPER), 401, "invalid_token")
    # Signed by a key the issuer never had: refused before any claim is believed.
    forged = jwt.encode(
        {"iss": stack.issuer, "aud": "nemo-api", "exp": time.time() + 300, "realm_access": {"roles": ["nemo-admin"]}},
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        algorithm="RS256",
        headers={"kid": "made-up"},
    )
    error = _refused(stack.api("GET", "/clusters", token=forged), 401, "invalid_token")
    assert error["message"] == "token signed with an unknown key"
    assert stack.api("GET", "/clusters").status_code == 200


def test_expired_token_refused(stack: Stack) -> None:
    # Sign with the realm's own key as stored, so only the expiry is wrong.
    async def signing_key() -> tuple[str, bytes]:
        db = Database(f"sqlite:///{stack.data_dir / 'nemo.db'}")
        try:
            key = [k for k in await SqlKeyRepository(db, "nemo").list_keys() if k.retired_at is None][-1]
        finally:
            db.dispose()
        return key.kid, key.private_pem

    kid, pem = asyncio.run(signing_key())
    claims = {"iss": stack.issuer, "aud": ["nemo-api"], "azp": "nemo-admin", "jti": "x", "sub": "s"}
    expired = jwt.encode({**claims, "exp": int(time.time()) - 120}, pem, algorithm="RS256", headers={"kid": kid})
    response = stack.api("GET", "/clusters", token=expired)
    assert response.headers["www-authenticate"] == CHALLENGE.format("token expired")
    _refused(response, 401, "invalid_token")


def test_role_matrix(stack: Stack) -> None:
    viewer = stack.token("matrix-viewer", _client(stack, "matrix-viewer", ["nemo-viewer"]))
    operator = stack.token("matrix-operator", _client(stack, "matrix-operator", ["nemo-operator"]))
    nobody = stack.token("matrix-nobody", _client(stack, "matrix-nobody", []))
    user = {"username": "matrix-user", "password": "long enough password"}

    assert stack.api("GET", "/clusters", token=viewer).status_code == 200
    assert stack.api("GET", "/workloads", token=viewer).status_code == 200
    error = _refused(stack.api("POST", "/workloads", token=viewer, json=SLEEPER), 403, "insufficient_scope")
    assert error["details"] == {"required_role": "nemo-operator"}
    _refused(stack.api("GET", "/users", token=viewer), 403, "insufficient_scope")
    _refused(stack.api("GET", "/clusters", token=nobody), 403, "insufficient_scope")

    assert stack.api("GET", "/clusters", token=operator).status_code == 200
    assert stack.api("POST", "/workloads", token=operator, json=SLEEPER).status_code == 201
    error = _refused(stack.api("POST", "/clusters", token=operator, json=CLUSTER), 403, "insufficient_scope")
    assert error["details"] == {"required_role": "nemo-admin"}
    _refused(stack.api("POST", "/users", token=operator, json=user), 403, "insufficient_scope")
    _refused(stack.api("DELETE", "/clusters/extra", token=operator), 403, "insufficient_scope")

    assert stack.api("POST", "/clusters", json=CLUSTER).status_code == 201
    assert stack.api("POST", "/users", json=user).status_code == 201
    assert stack.api("DELETE", "/workloads/sleeper").status_code in (200, 202, 204)
    assert stack.api("DELETE", "/clusters/extra").status_code == 204
    # Nothing the refused calls asked for happened.
    assert [u["username"] for u in stack.api("GET", "/users").json()] == ["matrix-user"]


def test_revoked_token_is_refused_on_its_next_call(stack: Stack) -> None:
    secret = _client(stack, "revoker", ["nemo-viewer"])
    token = stack.token("revoker", secret)
    other = stack.token("revoker", secret)
    assert stack.api("GET", "/clusters", token=token).status_code == 200
    revoked = HTTP.post(
        f"{stack.issuer}/protocol/openid-connect/revoke", data={"token": token}, auth=("revoker", secret)
    )
    assert revoked.status_code == 200
    error = _refused(stack.api("GET", "/clusters", token=token), 401, "invalid_token")
    assert error["message"] == "token is not active"
    assert stack.api("GET", "/clusters", token=other).status_code == 200  # only that token


def test_disabled_or_removed_accounts_lose_their_tokens(stack: Stack) -> None:
    login = _client(stack, "login", ["nemo-viewer"], ["password", "client_credentials"])
    assert (
        stack.api(
            "POST", "/users", json={"username": "alice", "password": "alice-password", "roles": ["nemo-viewer"]}
        ).status_code
        == 201
    )
    granted = HTTP.post(
        f"{stack.issuer}/protocol/openid-connect/token",
        data={"grant_type": "password", "username": "alice", "password": "alice-password"},
        auth=("login", login),
    )
    assert granted.status_code == 200, granted.text
    alice = granted.json()["access_token"]
    assert stack.api("GET", "/clusters", token=alice).status_code == 200
    disabled = stack.api("PATCH", "/users/alice", json={"enabled": False})
    assert (disabled.status_code, disabled.json()["enabled"]) == (200, False)
    _refused(stack.api("GET", "/clusters", token=alice), 401, "invalid_token")
    assert stack.api("PATCH", "/users/alice", json={"enabled": True}).status_code == 200
    assert stack.api("GET", "/clusters", token=alice).status_code == 200
    assert stack.api("DELETE", "/users/alice").status_code == 204
    _refused(stack.api("GET", "/clusters", token=alice), 401, "invalid_token")

    service = stack.token("login", login)
    assert stack.api("PATCH", "/clients/login", json={"enabled": False}).status_code == 200
    _refused(stack.api("GET", "/clusters", token=service), 401, "invalid_token")


def test_identity_api_errors_and_no_secrets(stack: Stack) -> None:
    before = stack.api("GET", "/users").json()
    _refused(stack.api("POST", "/clients", json={"client_id": "nemo-admin"}), 409, "conflict")
    stack.api("POST", "/users", json={"username": "dup", "password": "dup-password"})
    _refused(stack.api("POST", "/users", json={"username": "dup", "password": "dup-password"}), 409, "conflict")
    for method, path, body in [
        ("DELETE", "/users/ghost", None),
        ("PATCH", "/users/ghost", {"enabled": False}),
        ("GET", "/users/ghost", None),
        ("DELETE", "/clients/ghost", None),
        ("POST", "/clients/ghost/client-secret", None),
    ]:
        _refused(stack.api(method, path, json=body), 404, "not_found")
    bad = {"username": "no spaces", "password": "Xy7#q", "roles": ["nemo-viewer"], "colour": "red"}
    error = _refused(stack.api("POST", "/users", json=bad), 422, "invalid")
    assert {d["field"] for d in error["details"]} == {"username", "password", "colour"}
    assert "Xy7#q" not in json.dumps(error)  # a refused password is not echoed
    error = _refused(
        stack.api("POST", "/clients", json={"client_id": "c", "grant_types": ["implicit"]}), 422, "invalid"
    )
    assert [d["field"] for d in error["details"]] == ["grant_types[0]"]
    error = _refused(stack.api("PATCH", "/users/dup", json={"enabled": "maybe"}), 422, "invalid")
    assert [d["field"] for d in error["details"]] == ["enabled"]
    assert len(stack.api("GET", "/users").json()) == len(before) + 1  # only "dup", once

    listed = json.dumps([stack.api("GET", "/users").json(), stack.api("GET", "/clients").json()])
    assert "hash" not in listed and "secret" not in listed and "$argon2" not in listed
    assert stack.api("GET", "/users/dup").json()["username"] == "dup"


def _password_token(stack: Stack, login: tuple[str, str], username: str, password: str) -> str:
    granted = HTTP.post(
        f"{stack.issuer}/protocol/openid-connect/token",
        data={"grant_type": "password", "username": username, "password": password},
        auth=login,
    )
    assert granted.status_code == 200, granted.text
    return str(granted.json()["access_token"])


def test_the_last_admin_is_kept(stack: Stack) -> None:
    # The admin client is the only enabled holder of nemo-admin: no way to lose it, by API or CLI.
    for method, body in (("PATCH", {"enabled": False}), ("PATCH", {"roles": ["nemo-viewer"]}), ("DELETE", None)):
        error = _refused(stack.api(method, "/clients/nemo-admin", json=body), 409, "last_admin")
        assert "'nemo-admin' is the last enabled user or client with the nemo-admin role" in error["message"]
    for command in ("disable", "remove"):
        refused = stack.cli("client", command, "nemo-admin", check=False)
        assert refused.returncode == 1 and "last enabled user or client with the nemo-admin role" in refused.stderr
    kept = stack.api("GET", "/clients/nemo-admin").json()
    assert (kept["enabled"], kept["roles"]) == (True, ["nemo-admin"])

    # With a second admin, a user, the client may go; then the user is the last one, and is kept in turn.
    login = ("last-admin-login", _client(stack, "last-admin-login", [], ["password"]))
    password = "root-password"
    root_user = {"username": "root", "password": password, "roles": ["nemo-admin"]}
    assert stack.api("POST", "/users", json=root_user).status_code == 201
    root = _password_token(stack, login, "root", password)
    assert stack.api("PATCH", "/clients/nemo-admin", json={"enabled": False}).status_code == 200
    try:
        for method, body in (("PATCH", {"enabled": False}), ("PATCH", {"roles": []}), ("DELETE", None)):
            _refused(stack.api(method, "/users/root", token=root, json=body), 409, "last_admin")
        refused = stack.cli("user", "disable", "root", env={"NEMO_TOKEN": root}, check=False)
        assert refused.returncode == 1 and "'root' is the last enabled user" in refused.stderr
    finally:
        assert stack.api("PATCH", "/clients/nemo-admin", token=root, json={"enabled": True}).status_code == 200
    assert stack.api("DELETE", "/users/root").status_code == 204
    assert stack.api("DELETE", "/clients/last-admin-login").status_code == 204


def test_no_secret_in_the_log(stack: Stack) -> None:
    # Last of the module: by now the log has seen clients, users, tokens and refusals.
    secrets = [stack.admin_credentials()["client_secret"], stack.admin_token(), "alice-password", "bob-password"]
    secrets += [stack.cli_json("client", "add", "log-probe")["secret"]]
    log = (stack.data_dir.parent / f"{stack.data_dir.name}-nemo-up.log").read_text()
    assert "Admin credentials:" in log
    for secret in secrets:
        assert secret not in log


def test_restart_keeps_tokens_and_credentials(tmp_path: Path) -> None:
    with running_stack(tmp_path / "data") as stack:
        credentials = stack.data_dir / "admin-credentials.json"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        assert stat.S_IMODE(stack.data_dir.stat().st_mode) == 0o700
        content, inode = credentials.read_text(), credentials.stat().st_ino
        assert json.loads(content)["issuer"] == stack.issuer
        token = stack.admin_token()
        port = stack.url.rsplit(":", 1)[1]
        stack.stop()
        # Same URL on purpose: the issuer is part of the token, as with Keycloak behind a fixed hostname.
        stack.env["NEMO_API_PORT"] = port
        stack.start()
        assert (credentials.read_text(), credentials.stat().st_ino) == (content, inode)
        response = HTTP.get(f"{stack.url}/api/v1/clusters", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        assert stack.cli("cluster", "list").returncode == 0

        # On another port the issuer moves with the API: the file follows (same secret), so the CLI pointed at
        # the new address by URL still gets in with it.
        stack.stop()
        stack.env["NEMO_API_PORT"] = "0"
        stack.start()
        moved = json.loads(credentials.read_text())
        assert moved == {**json.loads(content), "issuer": stack.issuer} != json.loads(content)
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        assert stack.cli("cluster", "list", "--api", stack.url).returncode == 0


def test_public_url_names_the_issuer(tmp_path: Path) -> None:
    """Behind a name (or a proxy, or a 0.0.0.0 bind) tokens carry the address clients use, not the bind address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    public = f"http://localhost:{port}"
    with running_stack(tmp_path / "data", {"NEMO_API_PORT": str(port), "NEMO_PUBLIC_URL": public}) as stack:
        assert stack.url == f"http://127.0.0.1:{port}"
        configuration = HTTP.get(f"{stack.url}/.well-known/nemo-configuration").json()
        assert configuration["issuer"] == f"{public}/realms/nemo"
        discovery = HTTP.get(f"{public}/realms/nemo/.well-known/openid-configuration").json()
        assert discovery["issuer"] == f"{public}/realms/nemo"
        token = stack.cli("token").stdout.strip()
        assert jwt.decode(token, options={"verify_signature": False})["iss"] == f"{public}/realms/nemo"
        assert stack.api("GET", "/clusters", token=token).status_code == 200
        assert stack.admin_credentials()["issuer"] == f"{public}/realms/nemo"
