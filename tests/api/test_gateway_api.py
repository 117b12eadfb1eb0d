"""``/api/v1/gateway`` and ``nemo gateway`` against a running `nemo up`, and the gateway it runs picking up
every change live: CRUD, validation errors naming the field, import/export round trip, plugins with Redis."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.stack import HTTP, Stack, running_stack, wait_for
from tests.stack import expect_error as _error

from nemo_kernel.access.gateway import store as gateway_store
from nemo_kernel.access.gateway.secret_fields import MASKED
from nemo_kernel.store import Database

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("gateway-api")
    with running_stack(root / "data", {"NEMO_RECONCILE_INTERVAL": "0.3"}) as s:
        yield s


def _through_gateway(stack: Stack, path: str, **kwargs: Any) -> httpx.Response:
    return HTTP.get(f"{stack.gateway_url}{path}", timeout=5, **kwargs)


def test_seeded_route_reaches_the_api_through_the_gateway(stack: Stack) -> None:
    assert stack.gateway_url.startswith("http://127.0.0.1:")
    config = stack.api("GET", "/gateway/config").json()
    (service,) = config["services"]
    assert (service["name"], service["url"], service["forward_authorization"]) == ("nemo-api", stack.url, True)
    direct = HTTP.get(f"{stack.url}/api/v1/clusters", timeout=5)
    # Until its first configuration is loaded the gateway answers 503 "not loaded yet": wait past that.
    via = wait_for(
        lambda: (r := _through_gateway(stack, "/api/v1/clusters")).status_code != 503 and r, 60, "the gateway to serve"
    )
    # The same answer (whatever auth decides, both paths get the same one) and the gateway's request id.
    assert (via.status_code, via.json()) == (direct.status_code, direct.json())
    assert via.headers["X-Request-Id"]
    assert _error(_through_gateway(stack, "/nowhere"), 404, "no_route")


def test_cli_authenticates_through_the_gateway(stack: Stack) -> None:
    # The CLI first asks the API (here: through the gateway) which issuer to get tokens from; with the local
    # admin credentials (same issuer) and with a client's own credentials alike.
    expected = sorted(c["spec"]["name"] for c in stack.api("GET", "/clusters").json())
    assert expected  # nemo up starts with local clusters
    listed = stack.cli_json("cluster", "list", "--api", stack.gateway_url)
    assert sorted(c["spec"]["name"] for c in listed) == expected
    client_id = f"viewer-{uuid.uuid4().hex[:8]}"
    created = stack.api("POST", "/clients", json={"client_id": client_id, "roles": ["nemo-viewer"]})
    assert created.status_code == 201, created.text
    env = {"NEMO_CLIENT_ID": client_id, "NEMO_CLIENT_SECRET": created.json()["secret"]}
    as_viewer = stack.cli("cluster", "list", "--api", stack.gateway_url, "-o", "json", env=env)
    assert sorted(c["spec"]["name"] for c in json.loads(as_viewer.stdout)) == expected


def test_lax_or_unbounded_settings_and_credentials_in_urls_are_refused_naming_the_field(stack: Stack) -> None:
    before = stack.api("GET", "/gateway/config").json()
    refusals = {
        "url": {"url": "http://admin:hunter2@127.0.0.1:9"},
        "connect_timeout": {"url": "http://127.0.0.1:9", "connect_timeout": True},
        "read_timeout": {"url": "http://127.0.0.1:9", "read_timeout": 1e308},
        "forward_authorization": {"url": "http://127.0.0.1:9", "forward_authorization": "yes"},
    }
    for field, body in refusals.items():
        refused = stack.api("POST", "/gateway/services", json={"name": f"lax-{field}", **body})
        error = _error(refused, 422, "invalid")
        assert error["details"][0]["field"] == field, error
        assert "hunter2" not in refused.text  # the refusal does not echo the password either
    rate = {"name": "rate-limiting", "config": {"second": True}}
    assert "second" in _error(stack.api("POST", "/gateway/plugins", json=rate), 422, "invalid")["details"][0]["field"]
    assert stack.api("GET", "/gateway/config").json() == before


def test_crud_with_kong_semantics_and_errors_naming_the_field(stack: Stack) -> None:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    created = stack.api("POST", "/gateway/services", json={"name": name, "url": "http://127.0.0.1:9/x/"})
    assert created.status_code == 201, created.text
    assert created.json()["url"] == "http://127.0.0.1:9/x"
    _error(stack.api("POST", "/gateway/services", json={"name": name, "url": "http://127.0.0.1:9"}), 409, "conflict")
    replaced = stack.api("PUT", f"/gateway/services/{name}", json={"url": "http://127.0.0.1:10", "read_timeout": 2})
    assert (replaced.status_code, replaced.json()["read_timeout"]) == (200, 2)
    assert stack.api("GET", f"/gateway/services/{name}").json()["url"] == "http://127.0.0.1:10"
    assert name in [s["name"] for s in stack.api("GET", "/gateway/services").json()]

    route = stack.api("PUT", f"/gateway/routes/{name}", json={"service": name, "paths": ["/x"]})
    assert route.status_code == 201, route.text
    consumer = stack.api("POST", "/gateway/consumers", json={"username": name, "subjects": ["client-x"]})
    assert consumer.status_code == 201, consumer.text
    plugin = stack.api(
        "POST", "/gateway/plugins", json={"name": "acl", "consumer": name, "route": name, "config": {"deny": ["x"]}}
    )
    assert plugin.status_code == 201, plugin.text
    plugin_id = plugin.json()["id"]
    assert stack.api("GET", f"/gateway/plugins/{plugin_id}").json()["consumer"] == name
    before = stack.api("GET", "/gateway/config").json()

    # Every refusal names the field at fault and stores nothing.
    bad_ref = _error(stack.api("POST", "/gateway/routes", json={"name": "r-bad", "service": "missing"}), 422, "invalid")
    assert bad_ref["details"] == [{"field": "routes[r-bad].service", "message": "unknown service 'missing'"}]
    bad_url = _error(stack.api("POST", "/gateway/services", json={"name": "u", "url": "ftp://x"}), 422, "invalid")
    assert bad_url["details"][0]["field"] == "url"
    bad_plugin = stack.api("POST", "/gateway/plugins", json={"name": "rate-limiting", "config": {"limit_by": "ip"}})
    assert "config" in _error(bad_plugin, 422, "invalid")["details"][0]["field"]
    unknown = _error(stack.api("POST", "/gateway/plugins", json={"name": "teleport", "config": {}}), 422, "invalid")
    assert unknown["details"][0]["field"] == "name" or "teleport" in unknown["message"]
    renamed = stack.api("PUT", f"/gateway/routes/{name}", json={"name": "other", "service": name})
    mismatch = _error(renamed, 422, "invalid")
    assert mismatch["details"][0]["field"] == "name"
    in_use = _error(stack.api("DELETE", f"/gateway/services/{name}"), 409, "conflict")
    assert {"field": f"routes[{name}].service", "message": f"unknown service {name!r}"} in in_use["details"]
    _error(stack.api("DELETE", f"/gateway/consumers/{name}"), 409, "conflict")  # the plugin names it
    _error(stack.api("GET", "/gateway/routes/nope"), 404, "not_found")
    _error(stack.api("DELETE", "/gateway/plugins/nope"), 404, "not_found")
    malformed = stack.api("POST", "/gateway/services", content=b"{", headers={"Content-Type": "application/json"})
    _error(malformed, 400, "malformed")
    assert stack.api("GET", "/gateway/config").json() == before

    for path in (f"/plugins/{plugin_id}", f"/consumers/{name}", f"/routes/{name}", f"/services/{name}"):
        assert stack.api("DELETE", f"/gateway{path}").status_code == 204, path
    _error(stack.api("GET", f"/gateway/services/{name}"), 404, "not_found")


def test_config_import_export_round_trip_over_api_and_cli(stack: Stack, tmp_path: Path) -> None:
    original = stack.api("GET", "/gateway/config").json()
    document = {
        **{k: v for k, v in original.items() if k not in ("_format_version",)},
        "services": [*original["services"], {"name": "echo", "url": stack.url}],
        "routes": [*original["routes"], {"name": "echo", "service": "echo", "paths": ["/echo"], "methods": ["get"]}],
        "consumers": [{"username": "gold", "subjects": ["client-gold"]}],
        "plugins": [{"name": "ip-restriction", "route": "echo", "config": {"allow": ["127.0.0.0/8", "::1"]}}],
    }
    file = tmp_path / "gateway.yaml"
    file.write_text(yaml.safe_dump(document))
    stack.cli("gateway", "apply", "-f", str(file))
    exported = yaml.safe_load(stack.cli("gateway", "get").stdout)  # YAML by default
    assert exported["routes"][-1]["methods"] == ["GET"]
    assert exported["plugins"][0]["id"]
    as_yaml = stack.api("GET", "/gateway/config", headers={"Accept": "application/yaml"})
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(as_yaml.text) == exported
    # Applying the export again is a no-op; a YAML body works as well as JSON.
    yaml_body = {"content": yaml.safe_dump(exported), "headers": {"Content-Type": "application/yaml"}}
    again = stack.api("PUT", "/gateway/config", **yaml_body)
    assert again.status_code == 200, again.text
    assert again.json() == exported
    assert [p["name"] for p in stack.cli_json("gateway", "plugins")] == ["ip-restriction"]
    assert "echo" in stack.cli("gateway", "routes").stdout
    assert [c["username"] for c in stack.cli_json("gateway", "consumers")] == ["gold"]

    # A whole file with one bad reference is refused whole: nothing of it is stored.
    broken = {**exported, "services": [*exported["services"], {"name": "new", "url": stack.url}]}
    broken["routes"] = [*exported["routes"], {"name": "bad", "service": "ghost"}]
    refused = stack.api("PUT", "/gateway/config", json=broken)
    assert "ghost" in _error(refused, 422, "invalid")["message"]
    bad_field = stack.api("PUT", "/gateway/config", json={**exported, "trusted_proxies": ["not-an-ip"]})
    assert _error(bad_field, 422, "invalid")["details"][0]["field"] == "trusted_proxies"
    failed = stack.cli("gateway", "apply", "-f", "-", check=False)
    assert failed.returncode != 0
    assert stack.api("GET", "/gateway/config").json() == exported
    stack.api("PUT", "/gateway/config", json=original)


def test_running_gateway_picks_up_changes_live(stack: Stack) -> None:
    route = f"live-{uuid.uuid4().hex[:8]}"  # fresh Redis counters for every run
    assert _error(_through_gateway(stack, f"/{route}/healthz"), 404, "no_route")
    stack.api("PUT", f"/gateway/services/{route}", json={"url": stack.url})
    stack.api("PUT", f"/gateway/routes/{route}", json={"service": route, "paths": [f"/{route}"]})
    ok = wait_for(lambda: _through_gateway(stack, f"/{route}/healthz").status_code == 200, 5, "the new route")
    assert ok
    # A plugin added through the API applies within about a second: Redis-backed rate limit of 2 a day.
    limit = {"name": "rate-limiting", "route": route, "config": {"day": 2, "limit_by": "ip", "policy": "redis"}}
    plugin_id = stack.api("POST", "/gateway/plugins", json=limit).json()["id"]

    def limited() -> httpx.Response | None:
        response = _through_gateway(stack, f"/{route}/healthz")
        return response if response.status_code == 429 else None

    refused = wait_for(limited, 5, "the rate limit to apply")
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.headers["Retry-After"]
    assert refused.headers["X-RateLimit-Limit-Day"] == "2"
    # Replacing the plugin with an ip-restriction that denies loopback: 403 from ip-restriction.
    stack.api("DELETE", f"/gateway/plugins/{plugin_id}")
    deny = {"name": "ip-restriction", "route": route, "config": {"deny": ["127.0.0.0/8"]}}
    stack.api("POST", "/gateway/plugins", json=deny)
    forbidden = wait_for(
        lambda: (r := _through_gateway(stack, f"/{route}/healthz")).status_code == 403 and r, 5, "the deny list"
    )
    assert json.loads(forbidden.text)["error"]["code"] == "ip_forbidden"
    stack.api("PUT", "/gateway/config", json={**stack.api("GET", "/gateway/config").json(), "plugins": []})
    wait_for(lambda: _through_gateway(stack, f"/{route}/healthz").status_code == 200, 5, "the plugin to be gone")


def _stored_plugins(stack: Stack) -> dict[str, dict[str, Any]]:
    """The plugins as the store holds them, secrets and all (read from the stack's database, not the API)."""
    db = Database(f"sqlite:///{stack.data_dir / 'nemo.db'}")
    try:
        with db.transaction() as session:
            config = gateway_store.load_config(session)
    finally:
        db.dispose()
    return {p.id or "": p.config.model_dump(mode="json") for p in config.plugins}


def test_secrets_are_never_read_back_and_survive_a_cli_round_trip(stack: Stack, tmp_path: Path) -> None:
    original = stack.api("GET", "/gateway/config").json()
    name = f"sec-{uuid.uuid4().hex[:8]}"
    created = stack.api("POST", "/clients", json={"client_id": name, "roles": []})
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    stack.api("PUT", f"/gateway/services/{name}", json={"url": stack.url})
    stack.api("PUT", f"/gateway/routes/{name}", json={"service": name, "paths": [f"/{name}"]})
    introspection = {"client_id": name, "client_secret": secret, "cache_ttl": 0}
    oidc = {"issuer": stack.issuer, "introspect_jwts": True, "introspection": introspection}
    redis_url = "redis://:hunter2@127.0.0.1:6379/0"
    limit = {"minute": 1000, "limit_by": "ip", "policy": "local", "redis_url": redis_url}
    answers = [
        stack.api("POST", "/gateway/plugins", json={"name": "oidc", "route": name, "config": oidc}),
        stack.api("POST", "/gateway/plugins", json={"name": "rate-limiting", "route": name, "config": limit}),
    ]
    assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
    oidc_id, limit_id = (a.json()["id"] for a in answers)

    # Not in the answer to the write, nor in any read view of the API or the CLI.
    views = [a.text for a in answers] + [
        stack.api("GET", "/gateway/plugins").text,
        stack.api("GET", f"/gateway/plugins/{oidc_id}").text,
        stack.api("GET", "/gateway/config").text,
        stack.api("GET", "/gateway/config", headers={"Accept": "application/yaml"}).text,
        stack.cli("gateway", "plugins", "-o", "json").stdout,
    ]
    exported = stack.cli("gateway", "get").stdout
    for view in [*views, exported]:
        assert secret not in view and "hunter2" not in view, view
    plugins = {p["id"]: p["config"] for p in yaml.safe_load(exported)["plugins"]}
    assert plugins[oidc_id]["introspection"]["client_secret"] == MASKED
    assert plugins[limit_id]["redis_url"] == f"redis://:{MASKED}@127.0.0.1:6379/0"

    # `nemo gateway get > f.yaml; nemo gateway apply -f f.yaml` keeps the secrets it could not show...
    file = tmp_path / "gateway.yaml"
    file.write_text(exported)
    applied = stack.cli("gateway", "apply", "-f", str(file), "-o", "json").stdout
    assert secret not in applied and "hunter2" not in applied
    stored = _stored_plugins(stack)
    assert stored[oidc_id]["introspection"]["client_secret"] == secret
    assert stored[limit_id]["redis_url"] == redis_url
    # ... and the running gateway introspects tokens with the kept secret: a valid token gets through.
    token = stack.admin_token()
    wait_for(
        lambda: (
            _through_gateway(stack, f"/{name}/healthz", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        ),
        10,
        "the oidc plugin to accept a valid token",
    )
    # The placeholder stands only for a stored secret: for a new plugin it is refused, naming the field.
    masked_new = {"name": "oidc", "route": name, "config": {**oidc, "introspection": plugins[oidc_id]["introspection"]}}
    refused = _error(stack.api("POST", "/gateway/plugins", json=masked_new), 422, "invalid")
    assert refused["details"][0]["field"] == "config.introspection.client_secret"
    stack.api("PUT", "/gateway/config", json=original)
