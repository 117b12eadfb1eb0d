"""The CLI against a running `nemo up`: where its credentials come from and where they may go, its identity
commands, and how it reports the API's errors."""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.stack import HTTP, Stack, running_stack

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("cli-credentials") / "data") as s:
        yield s


def _client(stack: Stack, client_id: str, roles: list[str]) -> str:
    """Create a client as admin; its secret."""
    created = stack.api("POST", "/clients", json={"client_id": client_id, "roles": roles})
    assert created.status_code == 201, created.text
    return str(created.json()["secret"])


def test_nemo_token_works_with_httpx(stack: Stack) -> None:
    done = stack.cli("token")
    token = done.stdout.strip()
    assert done.stdout == token + "\n" and token.count(".") == 2
    assert HTTP.get(f"{stack.url}/api/v1/clusters", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_cli_caches_its_token_and_retries_once_on_401(stack: Stack) -> None:
    cache = stack.data_dir / "cli-token.json"
    stack.cli("cluster", "list")
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    entries = json.loads(cache.read_text())
    key = f"{stack.issuer} nemo-admin"
    assert list(entries) == [key]
    first = entries[key]["access_token"]
    stack.cli("workload", "list")
    assert json.loads(cache.read_text())[key]["access_token"] == first  # reused, not fetched again
    # A cached token the API refuses (here: garbage) is replaced once, and the command still succeeds.
    cache.write_text(json.dumps({key: {"access_token": "a.b.c", "expires_at": time.time() + 3600}}))
    stack.cli("cluster", "list")
    renewed = json.loads(cache.read_text())[key]["access_token"]
    assert renewed not in ("a.b.c", first)
    assert stack.api("GET", "/clusters", token=renewed).status_code == 200


def test_cli_credentials_order_and_identity_commands(stack: Stack) -> None:
    added = stack.cli(
        "user", "add", "bob", "--role", "nemo-viewer", "--password-stdin", "-o", "json", input="bob-password\n"
    )
    assert json.loads(added.stdout)["roles"] == ["nemo-viewer"]
    assert "bob-password" not in added.stdout
    assert [u["enabled"] for u in stack.cli_json("user", "list") if u["username"] == "bob"] == [True]
    stack.cli("user", "disable", "bob")
    assert [u["enabled"] for u in stack.cli_json("user", "list") if u["username"] == "bob"] == [False]
    stack.cli("user", "enable", "bob")
    stack.cli("user", "remove", "bob")
    assert "bob" not in [u["username"] for u in stack.cli_json("user", "list")]
    refused = stack.cli("user", "remove", "bob", check=False)
    assert refused.returncode == 1 and "no user 'bob'" in refused.stderr
    prompted = stack.cli("user", "add", "carol", "-o", "json", input="carol-password\ncarol-password\n")
    assert json.loads(prompted.stdout)["username"] == "carol" and "carol-password" not in prompted.stdout
    short = stack.cli("user", "add", "dave", "--password-stdin", input="short\n", check=False)
    assert short.returncode == 1 and "password" in short.stderr
    # Given by URL, the API gets the local admin secret because it names the issuer the secret belongs to.
    assert stack.cli("user", "list", env={"NEMO_API": stack.url}).returncode == 0

    ci = stack.cli_json("client", "add", "ci", "--role", "nemo-operator")
    table = stack.cli("client", "add", "ci-table", "--role", "nemo-viewer").stdout
    assert "shown this once" in table
    as_ci = {"NEMO_CLIENT_ID": "ci", "NEMO_CLIENT_SECRET": ci["secret"]}
    token = stack.cli("token", env=as_ci).stdout.strip()
    assert jwt.decode(token, options={"verify_signature": False})["azp"] == "ci"
    denied = stack.cli("cluster", "remove", "cloud-eu", env=as_ci, check=False)
    assert denied.returncode == 1 and "requires role nemo-admin" in denied.stderr
    # --token (and NEMO_TOKEN) come first: a viewer token beats the admin credentials file.
    viewer = stack.token("cli-viewer", _client(stack, "cli-viewer", ["nemo-viewer"]))
    assert stack.cli("--token", viewer, "workload", "list").returncode == 0
    refused = stack.cli("--token", viewer, "user", "list", check=False)
    assert refused.returncode == 1 and "requires role nemo-admin" in refused.stderr
    assert stack.cli("user", "list", env={"NEMO_TOKEN": viewer}, check=False).returncode == 1

    reset = stack.cli_json("client", "reset-secret", "ci")
    old = stack.cli("token", env=as_ci, check=False)
    assert old.returncode == 1 and "client authentication failed" in old.stderr
    assert stack.cli("token", env={"NEMO_CLIENT_ID": "ci", "NEMO_CLIENT_SECRET": reset["secret"]}).returncode == 0
    stack.cli("client", "disable", "ci")
    assert [c["enabled"] for c in stack.cli_json("client", "list") if c["client_id"] == "ci"] == [False]
    stack.cli("client", "enable", "ci")
    stack.cli("client", "remove", "ci")
    assert "ci" not in [c["client_id"] for c in stack.cli_json("client", "list")]


def test_cli_never_sends_local_credentials_to_a_foreign_api(stack: Stack) -> None:
    """A server given by --api that claims to trust the local issuer still gets no token made from the local
    admin secret: where credentials go is decided from local facts, not from what a server says."""
    seen: list[str | None] = []
    issuer = stack.issuer

    class Impostor(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            body = {"issuer": issuer, "audience": "nemo-api", "realm": "nemo"}
            if not self.path.startswith("/.well-known/"):
                body = {"error": {"code": "invalid_token", "message": "missing bearer token", "details": None}}
            data = json.dumps(body).encode()
            self.send_response(200 if self.path.startswith("/.well-known/") else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        impostor = f"http://127.0.0.1:{server.server_address[1]}"
        refused = stack.cli("cluster", "list", "--api", impostor, check=False)
        assert refused.returncode == 1 and "no credentials" in refused.stderr
        assert seen and all(header is None for header in seen)
        # The same command against the real local API, also given by URL, is let in.
        assert stack.cli("cluster", "list", "--api", stack.url).returncode == 0
    finally:
        server.shutdown()
        server.server_close()


def test_cli_reports_api_errors(stack: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    # "Bad" alone is a display name now (its id is derived); a line break makes it no name at all.
    bad.write_text(json.dumps({"name": "Bad\n", "deployment": {"command": ["true"]}}))
    done = stack.cli("workload", "apply", "-f", str(bad), check=False)
    assert done.returncode == 1
    assert "HTTP 422" in done.stderr and "name:" in done.stderr
    assert stack.cli("cluster", "get", "nope", check=False).returncode == 1


def test_no_password_given_to_the_cli_reaches_the_log(stack: Stack) -> None:
    # Last of the module: by now the identity commands above have set passwords by prompt and by stdin.
    log = (stack.data_dir.parent / f"{stack.data_dir.name}-nemo-up.log").read_text()
    assert "Admin credentials:" in log
    for secret in ("bob-password", "carol-password", stack.admin_credentials()["client_secret"]):
        assert secret not in log
