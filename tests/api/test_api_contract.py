"""What a caller of the API relies on whatever they send: bounded query integers, bodies refused by size before
they are read, JSON errors (OAuth-shaped on the token endpoint), even for a crash, and an OpenAPI document that
says what the API really takes and answers."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from tests.access.conftest import serve_asgi
from tests.stack import HTTP, Stack, expect_error, running_stack

from nemo_kernel.api.errors import install_error_handlers

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)

LIMIT = 64 * 1024
TOO_BIG = 1 << 63  # one more than the largest id or offset the store can hold


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("contract")
    with running_stack(root / "data", {"NEMO_MAX_BODY_BYTES": str(LIMIT)}) as s:
        yield s


@pytest.fixture(scope="module")
def viewer(stack: Stack) -> str:
    created = stack.api("POST", "/clients", json={"client_id": "contract-viewer", "roles": ["nemo-viewer"]})
    assert created.status_code == 201, created.text
    return stack.token("contract-viewer", created.json()["secret"])


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (f"/workloads?offset={TOO_BIG}", "query.offset"),
        (f"/workloads/web/events?after={TOO_BIG}", "query.after"),
        (f"/clusters/edge/events?after={TOO_BIG}", "query.after"),
        ("/clusters/edge/events?limit=-1", "query.limit"),
        ("/clusters/edge/events?limit=5001", "query.limit"),
        ("/workloads?limit=-1", "query.limit"),
        ("/workloads?offset=-1", "query.offset"),
    ],
)
def test_query_integers_out_of_range_are_refused_with_the_field(
    stack: Stack, viewer: str, path: str, field: str
) -> None:
    error = expect_error(stack.api("GET", path, token=viewer), 422, "invalid")
    assert [d["field"] for d in error["details"]] == [field]


def test_largest_offset_and_id_the_store_holds_are_served(stack: Stack, viewer: str) -> None:
    assert stack.api("GET", f"/workloads?offset={TOO_BIG - 1}", token=viewer).json() == []
    assert stack.api("POST", "/clusters", json=_cluster("edge")).status_code == 201
    assert stack.api("GET", f"/clusters/edge/events?after={TOO_BIG - 1}", token=viewer).json() == []


async def test_an_unexpected_exception_is_a_json_500_that_tells_nothing() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret detail from /etc/shadow")

    async with serve_asgi(app) as base, httpx.AsyncClient(base_url=base) as http:
        response = await http.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "internal"
    assert "shadow" not in response.text


def _exchange(stack: Stack, head: str, body: Iterator[bytes] | None = None, timeout: float = 20) -> tuple[bytes, int]:
    """Send a raw request head, then ``body`` until the server answers; its answer and the body bytes sent.

    The server must answer within ``timeout`` seconds: one that waited for the rest of the body (which never comes)
    fails the test.
    """
    host, port = stack.url.removeprefix("http://").split(":")
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        pending, sent = b"", 0
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no answer within {timeout}s after sending {sent} body bytes"
            if not pending and body is not None:
                pending = next(body, b"")
            readable, writable, _ = select.select([sock], [sock] if pending else [], [], remaining)
            if readable:
                break  # the server answers (while the body may still be incomplete)
            if writable:
                try:
                    n = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    break
                pending, sent = pending[n:], sent + n
        sock.setblocking(True)
        sock.settimeout(max(deadline - time.monotonic(), 0.1))
        answer = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break  # the server closed the connection after its answer
            answer += data
    return answer, sent


def _head(stack: Stack, path: str, **headers: str) -> str:
    lines = [f"POST {path} HTTP/1.1", f"Host: {stack.url.removeprefix('http://')}", "Connection: keep-alive"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


def _status_and_json(answer: bytes) -> tuple[int, Any]:
    import json

    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(stack: Stack) -> None:
    head = _head(
        stack,
        "/api/v1/workloads",
        Authorization=f"Bearer {stack.admin_token()}",
        Content_Type="application/json",
        Content_Length=str(50 * 1024 * 1024),
    )
    answer, _ = _exchange(stack, head)  # not one byte of the 50 MB is sent
    status, body = _status_and_json(answer)
    assert status == 413
    assert body["error"]["code"] == "too_large"
    assert body["error"]["details"] == {"limit": LIMIT}


def _chunked(total: int, size: int = 16 * 1024) -> Iterator[bytes]:
    """A chunked body of ``total`` bytes of JSON-ish filler, never terminated (no last chunk)."""
    for _ in range(total // size):
        yield f"{size:x}\r\n".encode() + b" " * size + b"\r\n"


def test_a_chunked_body_over_the_limit_is_cut_off_while_it_streams(stack: Stack) -> None:
    head = _head(
        stack,
        "/api/v1/workloads",
        Authorization=f"Bearer {stack.admin_token()}",
        Content_Type="application/json",
        Transfer_Encoding="chunked",
    )
    # Up to 8 MiB are offered; the answer comes once the limit is passed, and the body is never finished.
    answer, sent = _exchange(stack, head, _chunked(8 * 1024 * 1024))
    status, body = _status_and_json(answer)
    assert status == 413
    assert body["error"]["code"] == "too_large"
    assert sent < 8 * 1024 * 1024


def test_a_body_within_the_limit_is_read(stack: Stack) -> None:
    filler = " " * (LIMIT - 100)
    response = stack.api(
        "POST",
        "/workloads",
        content=f'{{"name": "x", "deployment": 5{filler}}}',
        headers={"content-type": "application/json"},
    )
    assert expect_error(response, 422, "invalid")


def test_the_token_endpoint_answers_errors_in_the_oauth_shape(stack: Stack) -> None:
    token_url = f"{stack.issuer}/protocol/openid-connect/token"
    anonymous = HTTP.post(token_url, data={"grant_type": "client_credentials"})
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert anonymous.json()["error"] == "invalid_client"
    wrong = HTTP.post(token_url, data={"grant_type": "client_credentials"}, auth=("nemo-admin", "wrong"))
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
    malformed = HTTP.post(token_url, content=b"garbage", headers={"content-type": "multipart/form-data; boundary=x"})
    assert malformed.status_code == 400
    assert malformed.json()["error"] == "invalid_request"
    assert isinstance(malformed.json()["error_description"], str)
    head = _head(stack, "/realms/nemo/protocol/openid-connect/token", Content_Type="application/x-www-form-urlencoded",
                 Content_Length=str(LIMIT + 1))  # fmt: skip
    status, body = _status_and_json(_exchange(stack, head)[0])
    assert status == 413
    assert body["error"] == "invalid_request"


@pytest.mark.parametrize("enabled", [0, "false", "no"])
def test_an_identity_change_takes_only_a_boolean_for_enabled(stack: Stack, enabled: object) -> None:
    client_id = f"strict-{enabled}"
    assert stack.api("POST", "/clients", json={"client_id": client_id}).status_code == 201
    error = expect_error(stack.api("PATCH", f"/clients/{client_id}", json={"enabled": enabled}), 422, "invalid")
    assert [d["field"] for d in error["details"]] == ["enabled"]
    assert stack.api("GET", f"/clients/{client_id}").json()["enabled"] is True


def test_a_405_names_every_method_of_the_resource(stack: Stack) -> None:
    response = stack.api("PATCH", "/clusters")
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["allow"].split(",")} == {"GET", "POST"}
    assert response.json()["error"]["code"] == "method_not_allowed"


# --- the OpenAPI document ------------------------------------------------------------------------------------------

WITHOUT_BODY = {
    ("post", "/api/v1/clusters/{name}/cordon"),
    ("post", "/api/v1/clusters/{name}/drain"),
    ("post", "/api/v1/clusters/{name}/uncordon"),
    ("post", "/api/v1/clients/{client_id}/client-secret"),
}


@pytest.fixture(scope="module")
def document(stack: Stack) -> dict[str, Any]:
    # The document is built on first request (about 1 s here, 7 s or more on a loaded machine): wait for it.
    response = HTTP.get(f"{stack.url}/openapi.json", timeout=120)
    assert response.status_code == 200
    return dict(response.json())


def _operations(document: dict[str, Any], prefix: str = "/api/v1/") -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        if path.startswith(prefix):
            for method, operation in item.items():
                yield method, path, operation


def test_every_write_declares_its_json_and_yaml_body(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for method, path, operation in _operations(document):
        if method not in ("post", "put", "patch") or (method, path) in WITHOUT_BODY:
            continue
        content = operation.get("requestBody", {}).get("content", {})
        assert set(content) == {"application/json", "application/yaml"}, (method, path)
        ref = content["application/json"]["schema"]["$ref"].rpartition("/")[2]
        assert ref in schemas, (method, path)
    apply = document["paths"]["/api/v1/workloads"]["post"]["requestBody"]["content"]["application/yaml"]
    assert "services" in schemas[apply["schema"]["$ref"].rpartition("/")[2]]["properties"]


def test_every_error_is_documented_with_the_api_error_body(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in document["components"]["schemas"]
    # FastAPI's own error shape is {"detail": ...}; no schema of the document may be that (a domain field named
    # `detail`, like a placement decision's level of detail, is not an error body)
    for name, schema in document["components"]["schemas"].items():
        assert set(schema.get("properties", {})) != {"detail"}, name
    error_body = {"$ref": "#/components/schemas/ErrorBody"}
    for method, path, operation in _operations(document):
        for status in ("400", "401", "403", "404", "409", "413", "422"):
            response = operation["responses"][status]
            assert response["content"]["application/json"]["schema"] == error_body, (method, path, status)
        assert operation["security"] == [{"HTTPBearer": []}], (method, path)
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    detail = document["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"code", "message"}


def test_metrics_are_documented_as_the_prometheus_text_format(document: dict[str, Any]) -> None:
    content = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]


def test_the_token_endpoint_documents_oauth_errors(document: dict[str, Any]) -> None:
    responses = document["paths"]["/realms/{realm}/protocol/openid-connect/token"]["post"]["responses"]
    for status in ("400", "401"):
        schema = responses[status]["content"]["application/json"]["schema"]["$ref"].rpartition("/")[2]
        assert set(document["components"]["schemas"][schema]["properties"]) == {"error", "error_description"}


def _cluster(name: str) -> dict[str, Any]:
    node = {"name": "n1", "cpu": 1, "memory_mib": 512}
    return {"name": name, "driver": "sim", "tier": "edge", "region": "eu", "country": "DE", "nodes": [node]}
