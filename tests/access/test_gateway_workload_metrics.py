"""Requests through the gateway show up per workload: requests by code, errors (the workload's 5xx, a plugin's
refusal) and a latency histogram, under the stable names of ``metrics.names``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from nemo_kernel.access.gateway import parse_gateway_config
from nemo_kernel.access.gateway.app import Gateway
from nemo_kernel.metrics.textformat import parse, samples_of

from .conftest import serve_aiohttp


@pytest.fixture
async def shop() -> AsyncIterator[str]:
    """A replica of workload default/shop: 200 on /ok, 500 on /fail."""

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def fail(_: web.Request) -> web.Response:
        return web.Response(status=500, text="broken")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/fail", fail)
    async with serve_aiohttp(app) as url:
        yield url


async def test_requests_errors_and_latency_per_workload(shop: str) -> None:
    config = parse_gateway_config(
        {
            "services": [{"name": "shop", "workload": "default/shop"}, {"name": "other", "url": shop}],
            "routes": [
                {"name": "shop", "service": "shop", "paths": ["/shop"]},
                {"name": "shop-blocked", "service": "shop", "paths": ["/blocked"]},
                {"name": "plain", "service": "other", "paths": ["/plain"]},
            ],
            "plugins": [{"name": "ip-restriction", "route": "shop-blocked", "config": {"deny": ["127.0.0.0/8"]}}],
        }
    )
    gateway = Gateway(config, replicas={"default/shop": [shop]})
    async with serve_aiohttp(gateway.application()) as url, httpx.AsyncClient(base_url=url) as http:
        assert [(await http.get("/shop/ok")).status_code for _ in range(3)] == [200] * 3
        assert (await http.get("/shop/fail")).status_code == 500
        assert (await http.get("/blocked/ok")).status_code == 403
        assert (await http.get("/plain/ok")).status_code == 200
        page = await http.get("/_gateway/metrics")
    samples = samples_of(parse(page.text, 100_000), 0.0)

    def value(name: str, **labels: str) -> float | None:
        found = [s.value for s in samples if s.name == name and dict(s.labels) == labels]
        return found[0] if found else None

    shop_ok = {"namespace": "default", "workload": "shop", "route": "shop"}
    assert value("nemo_workload_requests_total", **shop_ok, code="200") == 3
    assert value("nemo_workload_requests_total", **shop_ok, code="500") == 1
    assert value("nemo_workload_request_errors_total", **shop_ok, code="500", decided_by="workload") == 1
    assert value("nemo_workload_request_errors_total", **shop_ok, code="200", decided_by="workload") is None
    blocked = {"namespace": "default", "workload": "shop", "route": "shop-blocked"}
    assert value("nemo_workload_request_errors_total", **blocked, code="403", decided_by="ip-restriction") == 1
    assert value("nemo_workload_request_duration_seconds_count", **shop_ok) == 4
    assert value("nemo_workload_request_duration_seconds_bucket", **shop_ok, le="+Inf") == 4
    # a route to a plain URL is no workload's
    assert not [s for s in samples if s.name.startswith("nemo_workload_") and s.labels.get("route") == "plain"]
