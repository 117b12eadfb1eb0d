"""The gateway's stored configuration on SQLite and PostgreSQL: whole-config validation, revisions, seeding,
and concurrent changes that can never leave an invalid configuration behind."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pydantic import ValidationError

from nemo_kernel.access.gateway import parse_gateway_config
from nemo_kernel.access.gateway import store as gw
from nemo_kernel.access.gateway.secret_fields import MASKED
from nemo_kernel.store import Database, NotFound

UPSTREAM = "http://127.0.0.1:9"


def _put(db: Database, kind: str, document: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    with db.transaction() as s:
        spec, _ = gw.put_entity(s, kind, document, **kwargs)
        return spec


def _export(db: Database) -> dict[str, Any]:
    with db.transaction() as s:
        return gw.export_config(s)


def test_changes_are_validated_whole_and_bump_the_revision(database: Database) -> None:
    with database.transaction() as s:
        assert gw.revision(s) == 0
    _put(database, "service", {"name": "a", "url": UPSTREAM})
    _put(database, "route", {"name": "r", "service": "a", "paths": ["/a"]})
    plugin = _put(database, "plugin", {"name": "acl", "route": "r", "config": {"allow": ["x"]}})
    assert plugin["id"]  # generated
    with database.transaction() as s:
        assert gw.revision(s) == 3
    before = _export(database)

    with pytest.raises(gw.GatewayConfigRejected) as dangling:
        _put(database, "route", {"name": "r2", "service": "missing"})
    assert (dangling.value.status, dangling.value.details[0]["field"]) == (422, "routes[r2].service")
    with pytest.raises(gw.GatewayConfigRejected) as used, database.transaction() as s:
        gw.delete_entity(s, "service", "a")
    assert used.value.status == 409
    assert used.value.details == [{"field": "routes[r].service", "message": "unknown service 'a'"}]
    with pytest.raises(ValidationError):  # bad plugin settings: no window at all
        _put(database, "plugin", {"name": "rate-limiting", "config": {"limit_by": "ip"}})
    with pytest.raises(gw.GatewayConfigRejected) as duplicate:
        _put(database, "service", {"name": "a", "url": UPSTREAM}, create=True)
    assert duplicate.value.status == 409
    with pytest.raises(NotFound), database.transaction() as s:
        gw.delete_entity(s, "consumer", "nobody")
    assert _export(database) == before  # nothing of the refused changes was stored

    with database.transaction() as s:
        gw.delete_entity(s, "plugin", plugin["id"])
        gw.delete_entity(s, "route", "r")
        gw.delete_entity(s, "service", "a")
    assert _export(database)["services"] == []


def test_replace_round_trip_and_seed(database: Database) -> None:
    document = {
        "services": [{"name": "s", "url": UPSTREAM}, {"name": "w", "workload": "default/demo", "path": "/v1"}],
        "routes": [{"name": "r", "service": "s", "paths": ["/s"]}, {"name": "rw", "service": "w"}],
        "consumers": [{"username": "gold", "subjects": ["client-gold"]}],
        "plugins": [{"name": "ip-restriction", "service": "s", "config": {"deny": ["10.0.0.0/8"]}}],
        "trusted_proxies": ["192.0.2.1"],
    }
    with database.transaction() as s:
        gw.replace_config(s, parse_gateway_config(document))
    exported = _export(database)
    assert exported["trusted_proxies"] == ["192.0.2.1"]
    plugin_id = exported["plugins"][0]["id"]
    with database.transaction() as s:  # exporting and importing again changes nothing
        gw.replace_config(s, parse_gateway_config(exported))
    assert _export(database) == exported
    assert exported["plugins"][0]["id"] == plugin_id

    with database.transaction() as s:  # not a first start: only nemo-api (absent here) would be re-pointed
        assert gw.seed(s, "http://127.0.0.1:7700") is False
    assert _export(database) == exported


def test_seed_adds_the_api_service_once_and_follows_the_api_url(database: Database) -> None:
    with database.transaction() as s:
        assert gw.seed(s, "http://127.0.0.1:1111") is True
    with database.transaction() as s:
        assert gw.seed(s, "http://127.0.0.1:2222") is False
        config = gw.load_config(s)
    (service,) = config.services
    assert (service.name, service.url, service.forward_authorization) == ("nemo-api", "http://127.0.0.1:2222", True)
    assert config.routes[0].paths == ["/api/v1", "/realms", "/.well-known/nemo-configuration"]


def test_later_starts_add_missing_api_paths_and_keep_the_admins_changes(database: Database) -> None:
    # A database seeded before /.well-known/nemo-configuration was an API path, whose route an admin changed.
    old = {
        "services": [{"name": "nemo-api", "url": UPSTREAM, "forward_authorization": True}],
        "routes": [
            {"name": "nemo-api", "service": "nemo-api", "paths": ["/api/v1", "/realms", "/extra"],
             "methods": ["GET", "POST"], "hosts": ["api.example"], "strip_path": False},
        ],
    }  # fmt: skip
    with database.transaction() as s:
        gw.replace_config(s, parse_gateway_config(old))
    with database.transaction() as s:
        assert gw.seed(s, UPSTREAM) is False
        (route,) = gw.load_config(s).routes
    assert route.paths == ["/api/v1", "/realms", "/extra", "/.well-known/nemo-configuration"]
    assert (route.methods, route.hosts, route.strip_path) == (["GET", "POST"], ["api.example"], False)
    with database.transaction() as s:  # complete now: the next start changes nothing
        before = gw.revision(s)
        gw.seed(s, UPSTREAM)
        assert gw.revision(s) == before

    # A route the admin sent elsewhere, or deleted, is not touched.
    _put(database, "service", {"name": "other", "url": UPSTREAM})
    _put(database, "route", {"name": "nemo-api", "service": "other", "paths": ["/api/v1"]})
    with database.transaction() as s:
        gw.seed(s, UPSTREAM)
        assert gw.get_entity(s, "route", "nemo-api")["paths"] == ["/api/v1"]
        gw.delete_entity(s, "route", "nemo-api")
    with database.transaction() as s:
        gw.seed(s, UPSTREAM)
        assert gw.list_entities(s, "route") == []


def test_concurrent_changes_never_store_an_invalid_config(database: Database) -> None:
    # Twenty rounds of a race: one writer deletes service "a", another adds a route to it. Whoever wins,
    # the loser must be refused against the winner's state, never both applied.
    for round_ in range(20):
        _put(database, "service", {"name": "a", "url": UPSTREAM})
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def delete(barrier: threading.Barrier = barrier, errors: list[BaseException] = errors) -> None:
            barrier.wait()
            try:
                with database.transaction() as s:
                    gw.delete_entity(s, "service", "a")
            except Exception as exc:
                errors.append(exc)

        def add_route(
            name: str = f"r{round_}", barrier: threading.Barrier = barrier, errors: list[BaseException] = errors
        ) -> None:
            barrier.wait()
            try:
                _put(database, "route", {"name": name, "service": "a"})
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=delete), threading.Thread(target=add_route)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        # Serialised, exactly one of them loses, and for the right reason (not a database error).
        assert len(errors) == 1 and isinstance(errors[0], gw.GatewayConfigRejected), errors
        with database.transaction() as s:
            config = gw.load_config(s)  # validates: no route names a missing service
        for route in list(config.routes):
            with database.transaction() as s:
                gw.delete_entity(s, "route", route.name)
        with database.transaction() as s:
            if gw.load_config(s).services:
                gw.delete_entity(s, "service", "a")


def test_concurrent_changes_each_advance_the_revision(database: Database) -> None:
    # A running gateway polls only the revision: two changes sharing one revision number would hide the
    # second from a gateway that reloaded between them. N changes at once must advance it by exactly N.
    writers = 8
    _put(database, "service", {"name": "base", "url": UPSTREAM})
    with database.transaction() as s:
        start = gw.revision(s)
    assert _add_services_at_once(database, writers) == []
    with database.transaction() as s:
        assert gw.revision(s) == start + writers
        assert len(gw.load_config(s).services) == writers + 1


def test_the_first_changes_of_a_fresh_database_race_safely(database: Database) -> None:
    # No revision row yet: concurrent first changes must not both try to create it.
    writers = 4
    assert _add_services_at_once(database, writers) == []
    with database.transaction() as s:
        assert gw.revision(s) == writers


def test_a_snapshot_never_claims_a_revision_newer_than_its_config(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each statement of a snapshot may see a newer commit (SQLite outside a write, PostgreSQL's read committed).
    # A change committed while the snapshot is read must leave the snapshot's revision older than that change,
    # or the gateway that took it would never load the change.
    _put(database, "service", {"name": "a", "url": UPSTREAM})
    load_config = gw.load_config
    changed = threading.Event()

    def load_then_change(session: Any) -> Any:
        config = load_config(session)
        if not changed.is_set():
            changed.set()
            worker = threading.Thread(target=_put, args=(database, "service", {"name": "b", "url": UPSTREAM}))
            worker.start()
            worker.join(30)
        return config

    monkeypatch.setattr(gw, "load_config", load_then_change)
    with database.snapshot() as s:  # as the gateway reads it (live.py)
        taken = gw.snapshot(s)
    monkeypatch.undo()
    assert changed.is_set()
    with database.transaction() as s:
        latest = gw.snapshot(s)
    assert latest.revision > taken.revision or taken.config == latest.config


OIDC = {
    "name": "oidc",
    "config": {"issuer": "http://127.0.0.1:9/realms/nemo", "introspection": {"client_id": "gw", "client_secret": "s3"}},
}
LIMIT = {"name": "rate-limiting", "config": {"minute": 5, "policy": "redis", "redis_url": "redis://u:p%40ss@h:6379/0"}}


def _stored_secrets(db: Database) -> list[str]:
    with db.transaction() as s:
        plugins = {p.name: p.config for p in gw.load_config(s).plugins}
    return [plugins["oidc"].introspection.client_secret, plugins["rate-limiting"].redis_url]


def test_secrets_are_masked_when_read_and_kept_when_the_mask_comes_back(database: Database) -> None:
    oidc = _put(database, "plugin", OIDC)
    limit = _put(database, "plugin", LIMIT)
    masked_url = "redis://u:********@h:6379/0"
    assert oidc["config"]["introspection"]["client_secret"] == MASKED  # not even in the answer to a write
    assert limit["config"]["redis_url"] == masked_url
    assert _stored_secrets(database) == ["s3", "redis://u:p%40ss@h:6379/0"]
    with database.transaction() as s:
        views = [gw.list_entities(s, "plugin"), [gw.get_entity(s, "plugin", oidc["id"])], gw.export_config(s)]
    assert "s3" not in repr(views) and "p%40ss" not in repr(views)
    assert views[0] == views[2]["plugins"] == [oidc, limit]

    # Written back as read: one entity, or the whole export (validated whole on the real values), keep them.
    _put(database, "plugin", {**oidc, "enabled": False}, key=oidc["id"])
    moved = {**limit["config"], "redis_url": "redis://u:********@h2:6379/1"}  # another host, the same password
    _put(database, "plugin", {**limit, "config": moved}, key=limit["id"])
    assert _stored_secrets(database) == ["s3", "redis://u:p%40ss@h2:6379/1"]
    with database.transaction() as s:
        gw.replace_config(s, parse_gateway_config(gw.export_config(s)))
    assert _stored_secrets(database) == ["s3", "redis://u:p%40ss@h2:6379/1"]
    # A new value replaces the secret.
    renewed = {**oidc["config"], "introspection": {"client_id": "gw", "client_secret": "new"}}
    _put(database, "plugin", {**oidc, "config": renewed}, key=oidc["id"])
    assert _stored_secrets(database)[0] == "new"

    # The placeholder for a plugin with no secret stored behind it (a new one) is refused, not stored.
    before = _export(database)
    masked_new = {**OIDC, "id": "fresh", "config": oidc["config"]}
    with pytest.raises(gw.GatewayConfigRejected) as single:
        _put(database, "plugin", masked_new)
    assert (single.value.status, single.value.details[0]["field"]) == (422, "config.introspection.client_secret")
    with pytest.raises(gw.GatewayConfigRejected) as whole, database.transaction() as s:
        gw.replace_config(s, parse_gateway_config({**before, "plugins": [*before["plugins"], masked_new]}))
    assert whole.value.details[0]["field"] == "plugins[fresh].config.introspection.client_secret"
    assert _export(database) == before


def _add_services_at_once(database: Database, count: int) -> list[BaseException]:
    """Add services ``s0``..``s{count-1}`` from ``count`` threads released together; the errors they raised."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def change(name: str) -> None:
        barrier.wait()
        try:
            _put(database, "service", {"name": name, "url": UPSTREAM})
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=change, args=(f"s{i}",)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors
