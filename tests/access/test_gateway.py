"""The gateway over real HTTP: seed 6.5.1 scenario, proxy behaviour, and every plugin's edge cases."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from nemo_kernel.access.gateway import parse_gateway_config
from nemo_kernel.access.issuer import IdentityAdmin

from .conftest import Clock, IssuerServer, closed_port, running_gateway, running_issuer

# --- seed 6.5.1 ----------------------------------------------------------------------------------------------


async def test_seed_651_register_and_retrieve_cluster(upstream: str) -> None:
    async with running_issuer() as issuer:
        admin = IdentityAdmin(issuer.realm.users, issuer.realm.clients, issuer.realm.hasher)
        gw_client = await admin.add_client("gateway")
        operator = await admin.add_client("ops", roles=["nemo-admin"])
        nobody = await admin.add_client("nobody")
        oidc = {
            "issuer": issuer.issuer,
            "audience": "nemo-api",
            "introspect_jwts": True,
            "introspection": {"client_id": "gateway", "client_secret": gw_client.secret, "cache_ttl": 0},
        }
        config = {
            "services": [{"name": "api", "url": f"{upstream}/api/v1"}],
            "routes": [
                {"name": "register-cluster", "service": "api", "paths": ["/clusters"], "methods": ["POST"]},
                {"name": "retrieve-cluster-details", "service": "api", "paths": ["/clusters"], "methods": ["GET"]},
            ],
            "plugins": [
                {"name": "oidc", "config": oidc},
                {"name": "acl", "route": "register-cluster", "config": {"allow": ["nemo-admin"]}},
                {"name": "acl", "route": "retrieve-cluster-details", "config": {"allow": ["nemo-viewer"]}},
            ],
        }
        async with running_gateway(config) as gateway, httpx.AsyncClient(base_url=gateway) as http:
            calls = [("POST", "/clusters", {"name": "edge-1"}), ("GET", "/clusters/edge-1", None)]

            async def statuses(token: str | None) -> list[httpx.Response]:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                return [await http.request(m, p, json=b, headers=headers) for m, p, b in calls]

            for response in await statuses(None):
                assert response.status_code == 401
                assert response.headers["www-authenticate"].startswith('Bearer realm="nemo", error="invalid_token"')
                assert response.json()["error"]["code"] == "invalid_token"

            revoked = await issuer.client_token("ops", operator.secret)
            async with httpx.AsyncClient() as raw:
                await raw.post(
                    f"{issuer.issuer}/protocol/openid-connect/revoke",
                    data={"token": revoked},
                    auth=("ops", operator.secret),
                )
            assert [r.status_code for r in await statuses(revoked)] == [401, 401]

            issuer.realm.access_token_ttl = -120
            expired = await issuer.client_token("ops", operator.secret)
            issuer.realm.access_token_ttl = 300
            expired_responses = await statuses(expired)
            assert [r.status_code for r in expired_responses] == [401, 401]
            assert "expired" in expired_responses[0].json()["error"]["message"]

            no_role = await statuses(await issuer.client_token("nobody", nobody.secret))
            assert [r.status_code for r in no_role] == [403, 403]
            assert no_role[0].json()["error"]["details"] == {"required_any": ["nemo-admin"]}

            ok = await statuses(await issuer.client_token("ops", operator.secret))
            assert [r.status_code for r in ok] == [200, 200]
            echoed = ok[1].json()
            assert echoed["path"] == "/api/v1/edge-1"
            assert "authorization" not in echoed["headers"]
            assert echoed["headers"]["x-authenticated-client"] == "ops"
            assert echoed["headers"]["x-forwarded-for"] == "127.0.0.1"


# --- proxy behaviour -----------------------------------------------------------------------------------------


async def test_proxy_headers_bodies_and_errors(upstream: str, caplog: pytest.LogCaptureFixture) -> None:
    config = {
        "services": [
            {"name": "echo", "url": upstream, "forward_authorization": True},
            {"name": "slow", "url": upstream, "read_timeout": 0.2},
            {"name": "down", "url": f"http://127.0.0.1:{closed_port()}"},
        ],
        "routes": [
            {"name": "echo", "service": "echo", "paths": ["/echo"], "strip_path": False},
            {"name": "slow", "service": "slow", "paths": ["/t"]},
            {"name": "down", "service": "down", "paths": ["/down"]},
        ],
    }
    caplog.set_level(logging.INFO, logger="nemo.gateway.access")
    async with running_gateway(config) as gateway, httpx.AsyncClient(base_url=gateway) as http:
        spoofed = {"Authorization": "Bearer abc", "X-Consumer-Username": "admin", "X-Forwarded-For": "6.6.6.6"}
        response = await http.post("/echo/a?q=1", content=b"y" * 1_000_000, headers=spoofed)
        echoed = response.json()
        assert echoed["path"] == "/echo/a?q=1" and echoed["body"] == 1_000_000
        assert echoed["headers"]["authorization"] == "Bearer abc"  # this service asks for it
        assert "x-consumer-username" not in echoed["headers"]
        assert echoed["headers"]["x-forwarded-for"] == "127.0.0.1"  # untrusted peer: its XFF is replaced
        assert echoed["headers"]["x-request-id"] == response.headers["x-request-id"]
        big = await http.get("/echo/../t/big")
        assert big.status_code in (200, 404)
        streamed = await http.get("/t/big")
        assert streamed.status_code == 200 and len(streamed.content) == 16 * 65536
        timeout = await http.get("/t/slow")
        assert timeout.status_code == 504 and timeout.json()["error"]["code"] == "upstream_timeout"
        down = await http.get("/down/x")
        assert down.status_code == 502 and down.json()["error"]["code"] == "bad_gateway"
        assert (await http.get("/nowhere")).status_code == 404
        metrics = await http.get("/_gateway/metrics")
        assert 'nemo_gateway_requests_total{decided_by="proxy",route="slow",status="504"} 1.0' in metrics.text
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "nemo.gateway.access"]
    timeout_record = next(r for r in records if r["status"] == 504)
    assert timeout_record["decision"] == "deny" and timeout_record["decided_by"] == "proxy"


# --- ip-restriction --------------------------------------------------------------------------------------------


def _ip_config(upstream: str, ip: dict[str, Any], trusted: list[str]) -> dict[str, Any]:
    return {
        "services": [{"name": "s", "url": upstream}],
        "routes": [{"name": "r", "service": "s"}],
        "plugins": [{"name": "ip-restriction", "config": ip}],
        "trusted_proxies": trusted,
    }


async def test_ip_restriction_ipv6_cidr_deny_over_allow_and_trusted_proxy(upstream: str) -> None:
    rules = {"allow": ["2001:db8::/32", "10.0.0.0/8"], "deny": ["2001:db8::5/128", "10.1.0.0/16"]}
    async with (
        running_gateway(_ip_config(upstream, rules, ["127.0.0.1"])) as gateway,
        httpx.AsyncClient(base_url=gateway) as http,
    ):

        async def status(xff: str) -> int:
            return (await http.get("/", headers={"X-Forwarded-For": xff})).status_code

        assert await status("2001:db8::6") == 200
        assert await status("2001:db8::5") == 403  # deny wins over the allowed /32
        assert await status("2001:db9::1") == 403  # not in the allow list
        assert await status("10.2.3.4") == 200
        assert await status("10.1.3.4") == 403
        # The right-most untrusted hop is the client; what it claims further left is ignored.
        assert await status("2001:db8::6, 10.1.0.1") == 403
        assert await status("10.1.0.1, 2001:db8::6") == 200
        refused = await http.get("/", headers={"X-Forwarded-For": "2001:db8::5"})
        assert refused.json()["error"]["details"] == {"ip": "2001:db8::5"}
    # Without a trusted proxy the socket address (127.0.0.1) decides and X-Forwarded-For is ignored.
    async with (
        running_gateway(_ip_config(upstream, {"allow": ["2001:db8::/32"]}, [])) as gateway,
        httpx.AsyncClient(base_url=gateway) as http,
    ):
        assert (await http.get("/", headers={"X-Forwarded-For": "2001:db8::6"})).status_code == 403
    async with (
        running_gateway(_ip_config(upstream, {"deny": ["::1", "127.0.0.0/8"]}, [])) as gateway,
        httpx.AsyncClient(base_url=gateway) as http,
    ):
        assert (await http.get("/")).status_code == 403


# --- rate-limiting ---------------------------------------------------------------------------------------------


def _rl_config(upstream: str, plugins: list[dict[str, Any]], routes: list[str] | None = None) -> dict[str, Any]:
    names = routes or ["r"]
    return {
        "services": [{"name": "s", "url": upstream}],
        "routes": [{"name": n, "service": "s", "paths": [f"/{n}"]} for n in names],
        "plugins": plugins,
    }


async def test_rate_limit_window_boundary_and_headers(upstream: str) -> None:
    clock = Clock(1_700_000_039.5)  # 0.5 s before a minute boundary (1_700_000_040 is a multiple of 60)
    plugins = [{"name": "rate-limiting", "config": {"minute": 2, "hour": 10, "limit_by": "ip"}}]
    async with (
        running_gateway(_rl_config(upstream, plugins), clock) as gateway,
        httpx.AsyncClient(base_url=gateway) as http,
    ):
        first = await http.get("/r")
        assert first.status_code == 200
        assert first.headers["X-RateLimit-Limit-Minute"] == "2"
        assert first.headers["X-RateLimit-Remaining-Minute"] == "1"
        assert first.headers["X-RateLimit-Remaining-Hour"] == "9"
        assert first.headers["RateLimit-Limit"] == "2" and first.headers["RateLimit-Remaining"] == "1"
        assert first.headers["RateLimit-Reset"] == "1"
        assert (await http.get("/r")).status_code == 200
        limited = await http.get("/r")
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "1"
        assert limited.json()["error"]["code"] == "rate_limited"
        clock.now = 1_700_000_040.0  # the next minute: a fresh window, the hour window keeps counting
        fresh = await http.get("/r")
        assert fresh.status_code == 200
        assert fresh.headers["X-RateLimit-Remaining-Minute"] == "1"
        assert fresh.headers["X-RateLimit-Remaining-Hour"] == "6"


async def test_plugin_precedence_route_over_service_over_global_and_consumer(upstream: str) -> None:
    plugins = [
        {"name": "rate-limiting", "config": {"minute": 100, "limit_by": "ip"}},
        {"name": "rate-limiting", "service": "s", "config": {"minute": 50, "limit_by": "ip"}},
        {"name": "rate-limiting", "route": "special", "config": {"minute": 5, "limit_by": "ip"}},
    ]
    config = _rl_config(upstream, plugins, ["plain", "special"])
    config["services"].append({"name": "other", "url": upstream})
    config["routes"].append({"name": "elsewhere", "service": "other", "paths": ["/elsewhere"]})
    async with running_gateway(config, Clock(1_700_000_000)) as gateway, httpx.AsyncClient(base_url=gateway) as http:
        assert (await http.get("/special")).headers["X-RateLimit-Limit-Minute"] == "5"
        assert (await http.get("/plain")).headers["X-RateLimit-Limit-Minute"] == "50"
        assert (await http.get("/elsewhere")).headers["X-RateLimit-Limit-Minute"] == "100"


async def test_consumer_scoped_plugin_wins_after_authentication(upstream: str, issuer: IssuerServer) -> None:
    admin = IdentityAdmin(issuer.realm.users, issuer.realm.clients, issuer.realm.hasher)
    gold = await admin.add_client("gold-app", roles=["nemo-viewer"])
    basic = await admin.add_client("basic-app", roles=["nemo-viewer"])
    plugins = [
        {"name": "oidc", "config": {"issuer": issuer.issuer, "audience": "nemo-api"}},
        {"name": "rate-limiting", "route": "r", "config": {"minute": 3}},
        {"name": "rate-limiting", "consumer": "gold", "config": {"minute": 1000}},
    ]
    config = _rl_config(upstream, plugins)
    config["consumers"] = [{"username": "gold", "subjects": ["gold-app"]}]
    async with running_gateway(config, Clock(1_700_000_000)) as gateway, httpx.AsyncClient(base_url=gateway) as http:
        gold_token = await issuer.client_token("gold-app", gold.secret)
        basic_token = await issuer.client_token("basic-app", basic.secret)
        as_gold = await http.get("/r", headers={"Authorization": f"Bearer {gold_token}"})
        assert as_gold.headers["X-RateLimit-Limit-Minute"] == "1000"
        assert as_gold.json()["headers"]["x-consumer-username"] == "gold"
        as_basic = await http.get("/r", headers={"Authorization": f"Bearer {basic_token}"})
        assert as_basic.headers["X-RateLimit-Limit-Minute"] == "3"


async def test_redis_counters_shared_between_two_gateways(upstream: str) -> None:
    # Fresh counters in the shared Redis for every run: the counter key carries the plugin's scope (this route),
    # and the fixed clock would otherwise put concurrent or back-to-back runs in the same window.
    route = f"r{uuid.uuid4().hex[:12]}"
    plugins = [{"name": "rate-limiting", "route": route, "config": {"minute": 3, "limit_by": "ip", "policy": "redis"}}]
    clock = Clock(1_700_000_000)
    config = _rl_config(upstream, plugins, [route])
    async with (
        running_gateway(config, clock) as one,
        running_gateway(config, clock) as two,
        httpx.AsyncClient() as http,
    ):
        codes = [(await http.get(f"{base}/{route}")).status_code for base in (one, two, one, two)]
    assert codes == [200, 200, 200, 429]


@pytest.mark.parametrize(("fault_tolerant", "expected"), [(True, 200), (False, 503)])
async def test_redis_down_fail_open_or_closed(upstream: str, fault_tolerant: bool, expected: int) -> None:
    plugins = [
        {
            "name": "rate-limiting",
            "config": {
                "minute": 3,
                "policy": "redis",
                "redis_url": f"redis://127.0.0.1:{closed_port()}/0",
                "fault_tolerant": fault_tolerant,
            },
        }
    ]
    async with running_gateway(_rl_config(upstream, plugins)) as gateway, httpx.AsyncClient(base_url=gateway) as http:
        response = await http.get("/r")
    assert response.status_code == expected
    assert "RateLimit-Limit" not in response.headers


# --- acl and usage-control -------------------------------------------------------------------------------------


async def test_acl_without_identity_is_401_and_deny_wins(upstream: str, issuer: IssuerServer) -> None:
    admin = IdentityAdmin(issuer.realm.users, issuer.realm.clients, issuer.realm.hasher)
    both = await admin.add_client("both", roles=["nemo-viewer", "suspended"])
    config = _rl_config(upstream, [{"name": "acl", "config": {"allow": ["nemo-viewer"]}}])
    async with running_gateway(config) as gateway, httpx.AsyncClient(base_url=gateway) as http:
        assert (await http.get("/r")).status_code == 401  # acl without any authentication plugin
    plugins = [
        {"name": "oidc", "config": {"issuer": issuer.issuer}},
        {"name": "acl", "config": {"allow": ["nemo-viewer"], "deny": ["suspended"]}},
    ]
    async with running_gateway(_rl_config(upstream, plugins)) as gateway, httpx.AsyncClient(base_url=gateway) as http:
        token = await issuer.client_token("both", both.secret)
        denied = await http.get("/r", headers={"Authorization": f"Bearer {token}"})
        assert denied.status_code == 403 and denied.json()["error"]["details"] == {"denied": ["suspended"]}


@pytest.mark.parametrize(("introspect_jwts", "after_revocation"), [(None, 401), (True, 401), (False, 200)])
async def test_oidc_with_introspection_refuses_a_revoked_jwt_unless_told_not_to(
    upstream: str, issuer: IssuerServer, introspect_jwts: bool | None, after_revocation: int
) -> None:
    admin = IdentityAdmin(issuer.realm.users, issuer.realm.clients, issuer.realm.hasher)
    gateway_client = await admin.add_client("gateway")
    app = await admin.add_client("app", roles=["nemo-viewer"])
    oidc: dict[str, Any] = {
        "issuer": issuer.issuer,
        "introspection": {"client_id": "gateway", "client_secret": gateway_client.secret, "cache_ttl": 0},
    }
    if introspect_jwts is not None:
        oidc["introspect_jwts"] = introspect_jwts
    config = _rl_config(upstream, [{"name": "oidc", "config": oidc}])
    async with running_gateway(config) as gateway, httpx.AsyncClient(base_url=gateway) as http:
        token = await issuer.client_token("app", app.secret)
        headers = {"Authorization": f"Bearer {token}"}
        assert (await http.get("/r", headers=headers)).status_code == 200
        revoked = await http.post(
            f"{issuer.issuer}/protocol/openid-connect/revoke", data={"token": token}, auth=("app", app.secret)
        )
        assert revoked.status_code == 200
        after = await http.get("/r", headers=headers)
        assert after.status_code == after_revocation  # the next call, not after the token expires
        if after_revocation == 401:
            assert after.json()["error"]["code"] == "invalid_token"


async def test_usage_control_rules(upstream: str, issuer: IssuerServer) -> None:
    admin = IdentityAdmin(issuer.realm.users, issuer.realm.clients, issuer.realm.hasher)
    apps = {name: await admin.add_client(name) for name in ("active-app", "lapsed-app", "stranger")}
    rules = [
        {"type": "consumer-active"},
        {"type": "time-window", "days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"},
        {"type": "daily-quota", "limit": 2},
    ]
    plugins = [
        {"name": "oidc", "config": {"issuer": issuer.issuer}},
        {"name": "usage-control", "config": {"rules": rules}},
    ]
    config = _rl_config(upstream, plugins)
    config["consumers"] = [
        {"username": "active", "subjects": ["active-app"]},
        {"username": "lapsed", "subjects": ["lapsed-app"], "expires_at": "2023-01-01T00:00:00Z"},
    ]
    clock = Clock(1_700_000_000)  # Tuesday 2023-11-14 22:13 UTC: outside the window
    async with running_gateway(config, clock) as gateway, httpx.AsyncClient(base_url=gateway) as http:
        tokens = {name: await issuer.client_token(name, issued.secret) for name, issued in apps.items()}

        async def call(name: str) -> httpx.Response:
            return await http.get("/r", headers={"Authorization": f"Bearer {tokens[name]}"})

        assert (await call("stranger")).json()["error"]["code"] == "consumer_unknown"
        assert (await call("lapsed-app")).json()["error"]["code"] == "consumer_inactive"
        late = await call("active-app")
        assert late.status_code == 403 and late.json()["error"]["code"] == "outside_time_window"
        clock.now = 1_699_956_000  # Tuesday 2023-11-14 10:00 UTC
        assert [(await call("active-app")).status_code for _ in range(3)] == [200, 200, 429]
        clock.now = 1_699_956_000 + 86_400  # Wednesday: a new quota day
        assert (await call("active-app")).status_code == 200


async def test_config_is_validated_whole() -> None:
    with pytest.raises(ValueError, match="unknown service"):
        parse_gateway_config({"routes": [{"name": "r", "service": "nope"}]})
    with pytest.raises(ValueError):
        parse_gateway_config({"plugins": [{"name": "no-such-plugin", "config": {}}]})
    with pytest.raises(ValueError):
        parse_gateway_config({"plugins": [{"name": "ip-restriction", "config": {"allow": ["300.1.1.1"]}}]})
    yaml_text = """
_format_version: "3.0"
services: [{name: s, url: "http://127.0.0.1:1"}]
routes: [{name: r, service: s, paths: [/a]}]
plugins:
  - {name: rate-limiting, service: s, config: {second: 5, policy: redis}}
"""
    config = parse_gateway_config(yaml_text)
    assert config.plugins[0].name == "rate-limiting"


_SERVICE = {"name": "s", "url": "http://127.0.0.1:1"}


def _oidc(**settings: Any) -> dict[str, Any]:
    return {"plugins": [{"name": "oidc", "config": {"issuer": "http://127.0.0.1:1", **settings}}]}


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"services": [{**_SERVICE, "connect_timeout": 1e308}]}, "connect_timeout"),
        ({"services": [{**_SERVICE, "read_timeout": float("inf")}]}, "read_timeout"),
        ({"services": [{**_SERVICE, "connect_timeout": True}]}, "connect_timeout"),
        ({"services": [{**_SERVICE, "connect_timeout": "5"}]}, "connect_timeout"),
        ({"services": [{**_SERVICE, "forward_authorization": "yes"}]}, "forward_authorization"),
        ({"services": [{**_SERVICE, "forward_authorization": 1}]}, "forward_authorization"),
        ({"services": [{"name": "s", "url": "http://user:pw@127.0.0.1:1"}]}, "url"),
        ({"services": [{"name": "s", "url": "http://token@127.0.0.1"}]}, "url"),
        ({"services": [{"name": "s", "url": "http://127.0.0.1:99999"}]}, "url"),
        ({"services": [{"name": "s", "url": "http://127.0.0.1:0"}]}, "url"),
        ({"plugins": [{"name": "rate-limiting", "config": {"second": True}}]}, "second"),
        ({"plugins": [{"name": "rate-limiting", "config": {"minute": 10**12}}]}, "minute"),
        ({"plugins": [{"name": "rate-limiting", "config": {"hour": 2.5}}]}, "hour"),
        ({"plugins": [{"name": "acl", "enabled": "no", "config": {"allow": ["a"]}}]}, "enabled"),
        ({"upstream_pool_size": True}, "upstream_pool_size"),
        ({"upstream_pool_size": 10**6}, "upstream_pool_size"),
        (_oidc(leeway=1e308), "leeway"),
        (_oidc(leeway=-1), "leeway"),
        (_oidc(introspect_jwts="false"), "introspect_jwts"),
        (_oidc(introspection={"client_id": "c", "client_secret": "x", "cache_ttl": 1e308}), "cache_ttl"),
    ],
)
def test_settings_are_taken_as_written_and_bounded(document: dict[str, Any], field: str) -> None:
    # A timeout, leeway or cache lifetime of 1e308 switches its protection off; true is no number, "yes" no flag.
    with pytest.raises(ValidationError) as refused:
        parse_gateway_config(document)
    assert [error["loc"][-1] for error in refused.value.errors()] == [field]
    assert "pw" not in str(refused.value.errors()[0]["msg"])


def test_settings_from_yaml_still_read_as_numbers_flags_and_times() -> None:
    config = parse_gateway_config("""
services: [{name: s, url: "https://127.0.0.1:65535/a", connect_timeout: 2, read_timeout: 600.0,
            forward_authorization: true}]
consumers: [{username: u, active: false, expires_at: 2030-01-01T00:00:00Z}]
upstream_pool_size: 10000
plugins:
  - {name: rate-limiting, enabled: false, config: {second: 5, day: 1000000000, fault_tolerant: false}}
  - {name: usage-control, config: {rules: [{type: time-window, start: "08:00", end: "18:00"}]}}
  - {name: oidc, config: {issuer: "http://127.0.0.1:1", leeway: 300, introspection:
      {client_id: c, client_secret: x, cache_ttl: 3600}}}
""")
    assert (config.services[0].connect_timeout, config.services[0].forward_authorization) == (2.0, True)
    assert config.consumers[0].active is False
    assert config.upstream_pool_size == 10000
