"""The gateway routes on the path its upstream receives: one normal form (RFC 3986 section 6.2.2), chosen once.

Requests are sent with the path exactly as written (aiohttp with an already encoded URL): httpx would resolve the
dot segments itself and the gateway would never see them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from nemo_kernel.access.gateway import parse_gateway_config
from nemo_kernel.access.gateway import store as gateway_store
from nemo_kernel.access.gateway.app import Gateway
from nemo_kernel.access.gateway.paths import PathRejected, normalise_path
from tests.conftest import migrated_database

from .conftest import running_gateway, serve_aiohttp


def _raw_echo() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        # raw_path: the request target as it came over the wire, path and query, nothing decoded
        return web.json_response({"target": request.raw_path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.fixture
async def raw_upstream() -> AsyncIterator[str]:
    """An upstream that answers with the request target it received, byte for byte."""
    async with serve_aiohttp(_raw_echo()) as url:
        yield url


async def _get(base: str, target: str) -> tuple[int, Any]:
    """GET ``target`` sent verbatim (no dot-segment removal, no re-encoding by the client)."""
    async with aiohttp.ClientSession() as http, http.get(URL(base + target, encoded=True)) as response:
        return response.status, await response.json()


def _protected_config(upstream: str) -> dict[str, Any]:
    """An open catch-all route and a more specific route that needs a role (no token: 401)."""
    return {
        "services": [{"name": "site", "url": upstream}, {"name": "vault", "url": f"{upstream}/vault"}],
        "routes": [
            {"name": "public", "service": "site", "paths": ["/"], "strip_path": False},
            {"name": "secret", "service": "site", "paths": ["/secret"], "strip_path": False},
            {"name": "pub", "service": "vault", "paths": ["/pub"]},
        ],
        "plugins": [{"name": "acl", "route": "secret", "config": {"allow": ["nemo-admin"]}}],
    }


@pytest.mark.parametrize(
    "target",
    [
        "/pub/../secret",
        "/pub/%2e%2e/secret",
        "/pub/%2E%2e/secret",
        "/pub/.%2e/secret",
        "/x/./../secret/data",
    ],
)
async def test_a_path_with_dot_segments_gets_the_plugins_of_the_route_it_reaches(
    raw_upstream: str, target: str
) -> None:
    async with running_gateway(_protected_config(raw_upstream)) as gateway:
        status, body = await _get(gateway, target)
    assert status == 401, body  # the acl of route "secret" decided, not the open catch-all
    assert body["error"]["code"] == "invalid_token"


async def test_the_upstream_receives_exactly_the_normalised_path_and_the_raw_query(raw_upstream: str) -> None:
    async with running_gateway(_protected_config(raw_upstream)) as gateway:
        cases = {
            "/pub/a/./b/../c": "/vault/a/c",
            "/pub/%7euser/%2e/x": "/vault/~user/x",
            "/pub/a%3Fb": "/vault/a%3Fb",  # an encoded '?' stays part of the path
            "/pub/a%23b": "/vault/a%23b",
            "/pub/%252e%252e/secret": "/vault/%252e%252e/secret",  # double encoding stays literal
            "/pub/x?q=a%26b&r=%2F&s=../..": "/vault/x?q=a%26b&r=%2F&s=../..",
            "/pub/%c3%a4": "/vault/%C3%A4",
            "/docs/../pub": "/vault/",
        }
        for target, expected in cases.items():
            status, body = await _get(gateway, target)
            assert (status, body) == (200, {"target": expected}), target


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("/pub/../../secret", "above"),
        ("/pub/%2e%2e/%2e%2e/etc/passwd", "above"),
        ("/..", "above"),
        ("/pub%2f..%2fsecret", "encoded"),
        ("/pub/a%2Fb", "encoded"),
        ("/pub/a%5cb", "encoded"),
        ("/pub/..%5c..%5csecret", "encoded"),
        ("/pub\\..\\secret", "backslash"),
        ("/pub/a%zz", "percent"),
        ("/pub/a%", "percent"),
        ("/pub/..;/secret", "parameters"),
        ("/pub/%2e%2e;x/secret", "parameters"),
        ("/pub//../../secret", "empty segment"),
    ],
)
async def test_paths_that_cannot_be_routed_safely_are_refused(raw_upstream: str, target: str, reason: str) -> None:
    async with running_gateway(_protected_config(raw_upstream)) as gateway:
        status, body = await _get(gateway, target)
    assert status == 400, body
    assert body["error"]["code"] == "invalid_path"
    assert reason in body["error"]["message"]
    assert body["error"]["details"]["field"] == "path"


async def test_paths_an_upstream_reads_as_a_more_specific_route_never_skip_its_plugins(raw_upstream: str) -> None:
    # Tomcat, Jetty and Spring strip ";..." from a segment and many servers merge "//": to them, these paths are
    # /vault/secret/x, guarded here by route "secret"; routed as written they would reach the open route "pub".
    config = {
        "services": [{"name": "vault", "url": f"{raw_upstream}/vault"}],
        "routes": [
            {"name": "pub", "service": "vault", "paths": ["/pub"]},
            {"name": "secret", "service": "vault", "paths": ["/pub/secret"], "strip_path": False},
        ],
        "plugins": [{"name": "ip-restriction", "route": "secret", "config": {"deny": ["127.0.0.0/8", "::1"]}}],
    }
    async with running_gateway(config) as gateway:
        for target in ("/pub/secret;x/x", "/pub/secret;/x", "/pub/secret;jsessionid=1", "/pub//secret/x"):
            status, body = await _get(gateway, target)
            assert status == 400 and body["error"]["code"] == "invalid_path", (target, body)
            assert body["error"]["details"] == {"field": "path"}
        assert (await _get(gateway, "/pub/secret/x"))[0] == 403
        assert await _get(gateway, "/pub/") == (200, {"target": "/vault/"})  # a trailing "/" is no empty segment
        assert await _get(gateway, "/pub/a%3Bb") == (200, {"target": "/vault/a%3Bb"})


async def test_headers_that_upstreams_route_on_are_not_forwarded() -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"headers": sorted(k.lower() for k in request.headers)})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    overrides = {"X-Original-URL": "/secret", "X-Rewrite-URL": "/secret", "X-Original-Path": "/secret"}
    async with serve_aiohttp(app) as upstream:
        config = {
            "services": [{"name": "s", "url": upstream}],
            "routes": [{"name": "r", "service": "s", "paths": ["/"]}],
        }
        async with (
            running_gateway(config) as gateway,
            aiohttp.ClientSession() as http,
            http.get(f"{gateway}/pub", headers={**overrides, "X-Kept": "1"}) as response,
        ):
            received = (await response.json())["headers"]
    assert "x-kept" in received
    assert not {h.lower() for h in overrides} & set(received)


async def test_a_request_never_leaves_its_service_base_path(raw_upstream: str) -> None:
    config = {
        "services": [{"name": "app", "url": f"{raw_upstream}/apps/one"}],
        "routes": [{"name": "app", "service": "app", "paths": ["/one"]}],
    }
    async with running_gateway(config) as gateway:
        assert await _get(gateway, "/one/x/../y") == (200, {"target": "/apps/one/y"})
        status, body = await _get(gateway, "/one/../../apps/two")
        assert status == 400 and body["error"]["code"] == "invalid_path"
        # "/one/.." is "/", which no route serves: it never reaches "/apps" on the upstream
        for target in ("/one/..", "/one/%2e%2e", "/one/%2e%2e/two"):
            status, body = await _get(gateway, target)
            assert status == 404 and body["error"]["code"] == "no_route", target


async def test_the_seeded_api_route_reaches_only_the_api(raw_upstream: str, tmp_path: Path) -> None:
    with migrated_database(f"sqlite:///{tmp_path / 'nemo.db'}") as db:
        with db.transaction() as session:
            gateway_store.seed(session, raw_upstream)
        with db.transaction() as session:
            config = gateway_store.load_config(session)
    gateway = Gateway(config)
    async with serve_aiohttp(gateway.application()) as url:
        for target in ("/api/v1/../../metrics", "/api/v1/%2e%2e/%2E%2E/metrics", "/realms/../metrics"):
            status, body = await _get(url, target)
            assert status == 404 and body["error"]["code"] == "no_route", target
        assert await _get(url, "/api/v1/clusters/../workloads") == (200, {"target": "/api/v1/workloads"})


async def test_rate_limits_by_path_count_every_spelling_of_a_path_once(raw_upstream: str) -> None:
    config = {
        "services": [{"name": "s", "url": raw_upstream}],
        "routes": [{"name": "r", "service": "s", "paths": ["/r"]}],
        "plugins": [{"name": "rate-limiting", "config": {"minute": 2, "limit_by": "path"}}],
    }
    async with running_gateway(config) as gateway:
        statuses = [(await _get(gateway, t))[0] for t in ("/r/a", "/r/./a", "/r/b/../a", "/r/%61")]
    assert statuses == [200, 200, 429, 429]


def test_route_and_service_paths_are_kept_in_normal_form() -> None:
    config = parse_gateway_config(
        {
            "services": [
                {"name": "u", "url": "http://127.0.0.1:1/a/./b/%7ec"},
                {"name": "w", "workload": "default/web", "path": "/x/../y"},
            ],
            "routes": [{"name": "r", "service": "u", "paths": ["/%61pi/", "/b/c/.."]}],
        }
    )
    assert config.services[0].url == "http://127.0.0.1:1/a/b/~c"
    assert config.services[1].path == "/y"
    assert config.routes[0].paths == ["/api/", "/b/"]
    for bad in ("/a%2fb", "/../a", "/a\\b"):
        with pytest.raises(ValueError, match="path"):
            parse_gateway_config({"services": [{"name": "u", "url": "http://h"}], "routes": [
                {"name": "r", "service": "u", "paths": [bad]}
            ]})  # fmt: skip
    with pytest.raises(ValueError, match="path"):
        parse_gateway_config({"services": [{"name": "u", "url": "http://h/a/../../b"}]})


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/", "/"),
        ("/a/b/c/./../../g", "/a/g"),  # RFC 3986 section 5.2.4
        ("/mid/content=5/../6", "/mid/6"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("//x", None),
        ("/a//../b", None),
        ("/%41%2D%5f%7E%30", "/A-_~0"),
        ("/%2e%2E/", None),
        ("/a%3a%40", "/a%3A%40"),
        ("/a|b{c}", "/a%7Cb%7Bc%7D"),
        ("/a;b=c,d", None),
        ("/a%3bb", "/a%3Bb"),  # an encoded ';' is no parameter to anyone: it stays part of the segment
    ],
)
def test_normal_form(raw: str, normal: str | None) -> None:
    if normal is None:
        with pytest.raises(PathRejected):
            normalise_path(raw)
    else:
        assert normalise_path(raw) == normal
        assert normalise_path(normal) == normal  # idempotent
