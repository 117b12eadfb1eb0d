"""The gateway's configuration in the database: CRUD of services, routes, consumers and plugins.

One row per object in ``gateway_entities`` (``kind`` service|route|consumer|plugin, ``key`` its name, username
or plugin id). Two more rows: ``settings/global`` holds the global settings (``trusted_proxies``,
``status_path``, ``status_allow``, ``upstream_pool_size``) and ``meta/revision`` a counter that every change
increments. Every change starts by incrementing that counter in SQL (which takes a write lock on SQLite, a row
lock on PostgreSQL), so changes are serialised and each gets a revision of its own; then it validates the whole
resulting configuration and only then writes. The stored configuration is therefore always valid, and a running
gateway only has to poll the revision to notice a change.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from nemo_kernel.access.gateway.config import (
    ConsumerConfig,
    GatewayConfig,
    PluginSpec,
    RouteConfig,
    ServiceConfig,
    dangling,
    duplicate_keys,
    entity_key,
)
from nemo_kernel.access.gateway.secret_fields import MASKED, mask_plugin, restore_plugin
from nemo_kernel.domain import utcnow
from nemo_kernel.store import NotFound
from nemo_kernel.store.tables import GatewayEntityRow
from nemo_kernel.store.workloads import running_urls

#: Entity kinds and the section of the declarative file that lists them.
SECTIONS: Mapping[str, str] = {"service": "services", "route": "routes", "consumer": "consumers", "plugin": "plugins"}
_ADAPTERS: Mapping[str, TypeAdapter[Any]] = {
    "service": TypeAdapter(ServiceConfig),
    "route": TypeAdapter(RouteConfig),
    "consumer": TypeAdapter(ConsumerConfig),
    "plugin": TypeAdapter(PluginSpec),
}
#: The property of each kind that is its key (its name in the URL).
KEY_FIELDS: Mapping[str, str] = {"service": "name", "route": "name", "consumer": "username", "plugin": "id"}
_SETTINGS = ("settings", "global")
_REVISION = ("meta", "revision")
_IS_REVISION = (GatewayEntityRow.kind == _REVISION[0], GatewayEntityRow.key == _REVISION[1])
_REVISION_VALUE = GatewayEntityRow.spec["revision"].as_integer()
_Upsert = sqlite.Insert | postgresql.Insert
#: Per dialect: its INSERT ... ON CONFLICT, and its function building a JSON object in SQL.
_UPSERTS: Mapping[str, tuple[Callable[[type[GatewayEntityRow]], _Upsert], Callable[..., Any]]] = {
    "sqlite": (sqlite.insert, func.json_object),
    "postgresql": (postgresql.insert, func.json_build_object),
}
_SETTINGS_FIELDS = ("trusted_proxies", "status_path", "status_allow", "upstream_pool_size")
#: The service and route ``nemo up`` seeds so that ``http://gateway/api/v1/...`` reaches the API: the REST API,
#: the built-in issuer, and the document naming the issuer that a client (the CLI) reads before getting a token.
API_SERVICE = "nemo-api"
API_PATHS = ("/api/v1", "/realms", "/.well-known/nemo-configuration")


class GatewayConfigRejected(Exception):
    """A change that would make the stored configuration invalid (422) or break references to an object (409)."""

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True, slots=True)
class GatewaySnapshot:
    """The stored configuration at one revision, with the running replicas of the workloads it exposes."""

    revision: int
    config: GatewayConfig
    replicas: dict[str, list[str]]


def _dump(entity: BaseModel) -> dict[str, Any]:
    return entity.model_dump(mode="json", exclude_none=True)


def _rows(session: Session) -> list[GatewayEntityRow]:
    # populate_existing: rows this session read before the change locked the store may be stale by now.
    query = select(GatewayEntityRow).order_by(GatewayEntityRow.id).execution_options(populate_existing=True)
    return list(session.scalars(query))


def revision(session: Session) -> int:
    """The revision of the stored configuration (0 before the first change)."""
    # A column, not the row object: a row already in the session would not show a later increment.
    value = session.scalars(select(_REVISION_VALUE).where(*_IS_REVISION)).first()
    return int(value) if value is not None else 0


def _advance_revision(session: Session) -> int:
    """Advance the revision and return it; the first statement of every change.

    One statement that writes before it reads, so that the increment is atomic and the write lock (SQLite's
    database lock, PostgreSQL's row lock) is held from the start of the change to its commit: changes are
    serialised, none validates against an old state, and no two share a revision. A SELECT ... FOR UPDATE
    would not do on SQLite, whose driver starts the transaction only at the first write.
    """
    dialect = session.get_bind().dialect.name
    if dialect not in _UPSERTS:
        raise NotImplementedError(f"the gateway store supports SQLite and PostgreSQL, not {dialect}")
    insert, json_object = _UPSERTS[dialect]
    now = utcnow()
    statement = (
        insert(GatewayEntityRow)
        .values(kind=_REVISION[0], key=_REVISION[1], spec={"revision": 1}, created_at=now, updated_at=now)
        .on_conflict_do_update(
            index_elements=[GatewayEntityRow.kind, GatewayEntityRow.key],
            set_={"spec": json_object("revision", _REVISION_VALUE + 1), "updated_at": now},
        )
        .returning(_REVISION_VALUE)
    )
    return int(session.execute(statement).scalar_one())


def _document(rows: Iterable[GatewayEntityRow]) -> dict[str, Any]:
    document: dict[str, Any] = {section: [] for section in SECTIONS.values()}
    for row in rows:
        if row.kind in SECTIONS:
            document[SECTIONS[row.kind]].append(row.spec)
        elif (row.kind, row.key) == _SETTINGS:
            document.update(row.spec)
    return document


def load_config(session: Session) -> GatewayConfig:
    """The stored configuration, validated (it always is: every change validated it whole)."""
    return GatewayConfig.model_validate(_document(_rows(session)))


def export_config(session: Session) -> dict[str, Any]:
    """The stored configuration as a declarative document (what ``PUT /gateway/config`` takes back), secrets
    masked."""
    document = _dump(load_config(session))
    document["plugins"] = [mask_plugin(plugin) for plugin in document["plugins"]]
    return {"_format_version": "nemo/1", **document}


def snapshot(session: Session) -> GatewaySnapshot:
    """Revision, configuration and the replicas of exposed workloads, read in one transaction.

    Each statement may see changes committed since the previous one (SQLite reads outside a write transaction,
    PostgreSQL reads committed), so the revision is read first: the configuration is then at least as new as
    the revision claims, and a change committed in between shows as a newer revision at the next poll.
    """
    current = revision(session)
    config = load_config(session)
    workloads = {s.workload for s in config.services if s.workload}
    return GatewaySnapshot(current, config, running_urls(session, workloads))


def list_entities(session: Session, kind: str) -> list[dict[str, Any]]:
    """Every object of ``kind``, oldest first, secrets masked."""
    return [_shown(kind, row.spec) for row in _rows(session) if row.kind == kind]


def get_entity(session: Session, kind: str, key: str) -> dict[str, Any]:
    """One object, secrets masked; :class:`NotFound` if there is none."""
    row = _find(session, kind, key)
    if row is None:
        raise NotFound(f"gateway {kind}", key)
    return _shown(kind, row.spec)


def _shown(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    # Only plugins hold secrets.
    return mask_plugin(spec) if kind == "plugin" else spec


def _with_stored_secrets(spec: dict[str, Any], stored: Mapping[str, Any] | None, field: str) -> dict[str, Any]:
    """A plugin entry with each masked secret put back from ``stored`` (the plugin as stored, if it is); 422 for
    a placeholder with nothing stored behind it. ``field`` prefixes the fields an error names."""
    restored, unresolved = restore_plugin(spec, stored)
    if unresolved:
        details = [
            {"field": field + name, "message": f"{MASKED!r} keeps a stored secret, and there is none: give the secret"}
            for name in unresolved
        ]
        summary = "; ".join(d["field"] for d in details)
        raise GatewayConfigRejected(422, "invalid", f"gateway configuration invalid: no stored secret for {summary}",
                                    details)  # fmt: skip
    return restored


def _find(session: Session, kind: str, key: str) -> GatewayEntityRow | None:
    return session.scalars(
        select(GatewayEntityRow).where(GatewayEntityRow.kind == kind, GatewayEntityRow.key == key)
    ).first()


def put_entity(
    session: Session, kind: str, document: Mapping[str, Any], *, key: str | None = None, create: bool = False
) -> tuple[dict[str, Any], bool]:
    """Create or replace one object (``create``: refuse to replace, 409). Returns its stored form (secrets
    masked) and whether it was created. ``key`` (from the URL) must match the object's own name, when the object
    gives one. A plugin secret given as the masked placeholder keeps the secret stored for that plugin."""
    document = dict(document)
    key_field = KEY_FIELDS[kind]
    if key is not None:
        given = document.setdefault(key_field, key)
        if given != key:
            raise GatewayConfigRejected(
                422, "invalid", f"{key_field} {given!r} does not match the URL ({key!r})",
                [{"field": key_field, "message": f"must be {key!r}"}],
            )  # fmt: skip
    if kind == "plugin" and not document.get("id"):
        document["id"] = str(uuid.uuid4())
    entity = _ADAPTERS[kind].validate_python(document)  # before taking the lock: bad input fails fast
    key = entity_key(entity)
    _advance_revision(session)
    rows = _rows(session)
    existing = next((r for r in rows if r.kind == kind and r.key == key), None)
    if existing is not None and create:
        raise GatewayConfigRejected(409, "conflict", f"gateway {kind} {key!r} already exists", [])
    if kind == "plugin":
        # Validated again: the secrets put back are not the placeholders it was validated with.
        document = _with_stored_secrets(document, existing.spec if existing else None, "")
        entity = _ADAPTERS[kind].validate_python(document)
    spec = _dump(entity)
    candidate = _document(r for r in rows if r is not existing)
    candidate[SECTIONS[kind]].append(spec)
    _validate(candidate, status=422)
    if existing is None:
        session.add(GatewayEntityRow(kind=kind, key=key, spec=spec))
    else:
        existing.spec = spec
    return _shown(kind, spec), existing is None


def delete_entity(session: Session, kind: str, key: str) -> None:
    """Delete one object; :class:`NotFound` if absent, 409 if other objects still name it."""
    _advance_revision(session)
    rows = _rows(session)
    target = next((r for r in rows if r.kind == kind and r.key == key), None)
    if target is None:
        raise NotFound(f"gateway {kind}", key)
    _validate(_document([r for r in rows if r is not target]), status=409)
    session.delete(target)


def replace_config(session: Session, config: GatewayConfig) -> GatewayConfig:
    """Replace the whole stored configuration with ``config`` (already validated) in this transaction; returns
    what was stored. A plugin secret given as the masked placeholder keeps the secret stored for the plugin of
    the same id. Plugins without an id get one."""
    _advance_revision(session)
    rows = _rows(session)
    stored = {row.key: row.spec for row in rows if row.kind == "plugin"}
    document = _dump(config)
    document["plugins"] = [
        _with_stored_secrets(
            plugin, stored.get(plugin.get("id", "")), f"plugins[{plugin.get('id') or plugin['name']}]."
        )
        for plugin in document["plugins"]
    ]
    # Validated again, whole: the secrets put back are not the placeholders it was validated with.
    config = GatewayConfig.model_validate(document)
    plugins = [p if p.id else p.model_copy(update={"id": str(uuid.uuid4())}) for p in config.plugins]
    config = config.model_copy(update={"plugins": plugins})
    for row in rows:
        if row.kind in SECTIONS or (row.kind, row.key) == _SETTINGS:
            session.delete(row)
    session.flush()
    for kind, section in SECTIONS.items():
        for entity in getattr(config, section):
            session.add(GatewayEntityRow(kind=kind, key=entity_key(entity), spec=_dump(entity)))
    settings = {k: v for k, v in _dump(config).items() if k in _SETTINGS_FIELDS}
    session.add(GatewayEntityRow(kind=_SETTINGS[0], key=_SETTINGS[1], spec=settings))
    return config


def _validate(document: dict[str, Any], *, status: int) -> GatewayConfig:
    # Entities were validated one by one already; what is left to check is how they fit together.
    sections = {
        section: [_ADAPTERS[kind].validate_python(spec) for spec in document[section]]
        for kind, section in SECTIONS.items()
    }
    shape = GatewayConfig.model_construct(**sections)  # type: ignore[arg-type]
    details = [
        {"field": f"{SECTIONS[ref.kind]}[{ref.key}].{ref.field}", "message": f"unknown {ref.field} {ref.target!r}"}
        for ref in dangling(shape)
    ]
    details += [
        {"field": f"{SECTIONS[kind]}[{key}]", "message": f"duplicate {kind} {key!r}"}
        for kind, key in duplicate_keys(shape)
    ]
    if details:
        verb = "still named by" if status == 409 else "invalid:"
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:3])
        code = "conflict" if status == 409 else "invalid"
        raise GatewayConfigRejected(status, code, f"gateway configuration {verb} {summary}", details)
    return GatewayConfig.model_validate(document)


def seed(session: Session, api_url: str, initial: GatewayConfig | None = None) -> bool:
    """First start (nothing stored yet): store ``initial`` or an empty configuration, plus the ``nemo-api``
    service and its route unless ``initial`` defines them. Later starts: point ``nemo-api`` at ``api_url``,
    which changes when the API's port is picked at random, and add to its route any of :data:`API_PATHS` it
    lacks (a database seeded by an older version). Returns whether this was the first start."""
    first = _find(session, *_SETTINGS) is None
    if first:
        config = initial or GatewayConfig()
        services = list(config.services)
        routes = list(config.routes)
        if not any(s.name == API_SERVICE for s in services):
            # The API checks its own bearer tokens, so this service must receive the client's Authorization.
            services.append(ServiceConfig(name=API_SERVICE, url=api_url, forward_authorization=True))
            routes.append(RouteConfig(name=API_SERVICE, service=API_SERVICE, paths=list(API_PATHS), strip_path=False))
        replace_config(session, config.model_copy(update={"services": services, "routes": routes}))
        return True
    service = _find(session, "service", API_SERVICE)
    if service is not None and service.spec.get("url") not in (None, api_url):
        put_entity(session, "service", {**service.spec, "url": api_url}, key=API_SERVICE)
    route = _find(session, "route", API_SERVICE)
    # Only paths are added: whatever else an admin changed on the route stays, and a route the admin deleted or
    # sent to another service is left alone.
    if route is not None and route.spec.get("service") == API_SERVICE:
        paths = list(route.spec.get("paths", []))
        missing = [path for path in API_PATHS if path not in paths]
        if missing:
            put_entity(session, "route", {**route.spec, "paths": [*paths, *missing]}, key=API_SERVICE)
    return False
