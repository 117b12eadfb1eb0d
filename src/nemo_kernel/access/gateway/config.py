"""The gateway's configuration, shaped like Kong's declarative config: services, routes, consumers, plugins;
read from a file, or from a database named by :data:`DATABASE_URL_ENV`.

Everything is validated whole when loaded (unknown plugin names, dangling references and bad plugin settings
are errors), so a gateway never starts on half a configuration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from nemo_kernel.access.gateway.paths import normalise_path
from nemo_kernel.domain.common import is_one_line

Network = IPv4Network | IPv6Network

#: The environment variable a gateway reads the URL of the database holding its configuration from, when
#: ``--database-url`` is not given (keeps a password out of the process list).
DATABASE_URL_ENV = "NEMO_GATEWAY_DATABASE_URL"


def _networks(values: list[str]) -> list[Network]:
    # strict=False: "10.0.0.1" and "2001:db8::/32" alike; a host address becomes a /32 or /128.
    return [ip_network(v, strict=False) for v in values]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Settings are admin input taken as written (strict: ``true`` is no number, ``"yes"`` no flag, ``"5"`` no count)
#: and every number is bounded: a timeout, leeway or cache lifetime of 1e308 would switch its protection off.
Flag = Annotated[bool, Field(strict=True)]
Seconds = Annotated[float, Field(strict=True, ge=0)]
#: A count of requests (rate limits, quotas): finite and far above any real limit.
Count = Annotated[int, Field(strict=True, gt=0, le=1_000_000_000)]


def _one_line(value: str) -> str:
    if not is_one_line(value):
        raise ValueError("one line of text, without control characters, bidi overrides or invisible characters")
    return value


#: A name as stored (the key of its row): one line, no control, bidi or invisible character ("svc\n" is not a name).
Name = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_one_line)]

_METHOD = re.compile(r"[A-Za-z]{1,32}")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\]")


class ServiceConfig(_Model):
    """An upstream (Kong service): where matched requests go, a fixed ``url`` or a deployed ``workload``."""

    name: Name
    url: str | None = Field(default=None, description="upstream base URL, e.g. http://127.0.0.1:8080/api")
    workload: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="NAMESPACE/NAME of a workload: requests go round-robin to its running replicas",
    )
    path: str = Field(default="", description="prefix added to the upstream path of a workload service")
    connect_timeout: Seconds = Field(default=5.0, gt=0, le=600, description="seconds")
    read_timeout: Seconds = Field(
        default=60.0, gt=0, le=600, description="seconds between upstream reads; past it: 504"
    )
    forward_authorization: Flag = Field(default=False, description="pass the client's Authorization upstream")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("service url must be http(s)://host[:port][/path]")
        if "@" in parts.netloc:
            # Credentials in it would be stored and shown back in clear by every read of the configuration.
            raise ValueError("service url must not hold user:password@")
        try:
            port = parts.port
        except ValueError:  # not a number, or above 65535
            port = 0
        if port == 0:
            raise ValueError("service url port must be 1..65535")
        if parts.path:
            # In normal form, so that no request path appended to it can resolve to somewhere above it.
            value = urlunsplit(parts._replace(path=normalise_path(parts.path)))
        return value.rstrip("/")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError("path must start with /")
        return normalise_path(value).rstrip("/") if value else value

    @model_validator(mode="after")
    def _one_upstream(self) -> ServiceConfig:
        if (self.url is None) == (self.workload is None):
            raise ValueError("a service needs exactly one of url and workload")
        return self


class RouteConfig(_Model):
    """Which requests reach a service: path prefixes, and optionally methods and hosts."""

    name: Name
    service: str
    paths: list[str] = Field(default_factory=lambda: ["/"])
    methods: list[str] | None = None
    hosts: list[str] | None = None
    strip_path: bool = True

    @field_validator("paths")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        if not value or any(not p.startswith("/") for p in value):
            raise ValueError("route paths must be non-empty and start with /")
        # Requests are matched in normal form (see paths.py), so prefixes are kept in it too.
        return [normalise_path(p) for p in value]

    @field_validator("methods")
    @classmethod
    def _upper(cls, value: list[str] | None) -> list[str] | None:
        # A method is an HTTP token (RFC 9110): "GET\r\nX: y" would be stored and printed as it is.
        if value and not all(_METHOD.fullmatch(m) for m in value):
            raise ValueError("a method is a word of letters, such as GET or POST")
        return [m.upper() for m in value] if value else None

    @field_validator("hosts")
    @classmethod
    def _host_names(cls, value: list[str] | None) -> list[str] | None:
        # Compared with the Host header's name, which the gateway lower-cases as DNS names are case-insensitive.
        if value and not all(_HOST.fullmatch(h) for h in value):
            raise ValueError("a host is a DNS name or an IP address, such as api.example.org, 10.0.0.1 or [::1]")
        return [h.lower() for h in value] if value else None


class ConsumerConfig(_Model):
    """A consumer of the APIs. A verified token maps to it when its client id, username or subject is listed."""

    username: Name
    subjects: list[str] = Field(default_factory=list, description="token sub / azp / preferred_username values")
    active: Flag = Field(default=True, description="registration active (usage-control consumer-active rule)")
    expires_at: datetime | None = None


class _PluginEntry(_Model):
    """Where a plugin applies: globally (no scope), or to a service, route and/or consumer."""

    id: str | None = Field(default=None, max_length=128, description="assigned by the store when absent")
    enabled: Flag = True
    service: str | None = None
    route: str | None = None
    consumer: str | None = None


class IpRestrictionSettings(_Model):
    """Allow and deny lists of addresses or CIDRs; deny wins; an empty allow list allows everyone not denied."""

    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    status: int = Field(default=403, strict=True, ge=400, le=599)
    message: str = "your IP address is not allowed"

    @field_validator("allow", "deny")
    @classmethod
    def _valid(cls, value: list[str]) -> list[str]:
        _networks(value)
        return value

    def networks(self) -> tuple[list[Network], list[Network]]:
        """Parsed (allow, deny)."""
        return _networks(self.allow), _networks(self.deny)


class IntrospectionSettings(_Model):
    """A client that may call the issuer's introspection endpoint."""

    client_id: str
    client_secret: str = Field(repr=False)
    cache_ttl: Seconds = Field(default=10.0, le=3600, description="seconds a result is reused (revocation delay)")


class OidcSettings(_Model):
    """Bearer token validation against an OIDC issuer (discovery, JWKS) and optional introspection."""

    issuer: str
    audience: str | None = None
    introspection: IntrospectionSettings | None = None
    introspect_jwts: Flag | None = Field(
        default=None,
        description="also introspect JWTs, so a revoked one is refused on its next call; unset: whenever "
        "introspection is configured (false: JWTs are checked by signature and expiry only)",
    )
    leeway: Seconds = Field(default=30.0, le=300, description="seconds of clock skew allowed on exp, nbf and iat")

    def introspects_jwts(self) -> bool:
        """Whether JWTs are introspected: as set, or, when unset, whenever introspection is configured."""
        return self.introspection is not None if self.introspect_jwts is None else self.introspect_jwts


class AclSettings(_Model):
    """Allow or deny by role (realm roles, plus client roles of ``client``); deny wins."""

    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    client: str | None = None

    @model_validator(mode="after")
    def _one_list(self) -> AclSettings:
        if not self.allow and not self.deny:
            raise ValueError("acl needs an allow or a deny list")
        return self


class CounterBackend(_Model):
    """Where counters live: this process (``local``) or Redis (shared by every gateway instance)."""

    policy: Literal["local", "redis"] = "local"
    redis_url: str = "redis://127.0.0.1:6379/0"
    fault_tolerant: Flag = Field(
        default=True,
        description="Redis down: true lets requests through uncounted (fail-open, Kong's default); "
        "false refuses them with 503 (fail-closed)",
    )


class RateLimitingSettings(CounterBackend):
    """Fixed windows aligned to the clock (as Kong's), keyed by consumer, IP, a header or the path."""

    second: Count | None = None
    minute: Count | None = None
    hour: Count | None = None
    day: Count | None = None
    limit_by: Literal["consumer", "ip", "header", "path"] = "consumer"
    header_name: str | None = None
    hide_client_headers: Flag = False

    @model_validator(mode="after")
    def _some_limit(self) -> RateLimitingSettings:
        if not any((self.second, self.minute, self.hour, self.day)):
            raise ValueError("rate-limiting needs at least one of second, minute, hour, day")
        if self.limit_by == "header" and not self.header_name:
            raise ValueError("limit_by header needs header_name")
        return self

    def windows(self) -> list[tuple[str, int, int]]:
        """(name, seconds, limit) of each configured window, shortest first."""
        spans = (("second", 1, self.second), ("minute", 60, self.minute), ("hour", 3600, self.hour))
        all_windows = (*spans, ("day", 86400, self.day))
        return [(name, size, limit) for name, size, limit in all_windows if limit]


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ConsumerActiveRule(_Model):
    """The request must come from a known consumer whose registration is active and not expired."""

    type: Literal["consumer-active"]


class DailyQuotaRule(_Model):
    """At most ``limit`` requests per consumer per calendar day (UTC)."""

    type: Literal["daily-quota"]
    limit: Count


class TimeWindowRule(_Model):
    """Requests only on ``days`` between ``start`` and ``end`` (local time of ``timezone``; may cross midnight)."""

    type: Literal["time-window"]
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS))
    start: time
    end: time
    timezone: str = "UTC"


UsageRule = Annotated[ConsumerActiveRule | DailyQuotaRule | TimeWindowRule, Field(discriminator="type")]


class UsageControlSettings(CounterBackend):
    """Business rules checked per request, in order; the first that fails decides."""

    rules: list[UsageRule]


class IpRestrictionPlugin(_PluginEntry):
    """``ip-restriction`` entry."""

    name: Literal["ip-restriction"]
    config: IpRestrictionSettings


class OidcPlugin(_PluginEntry):
    """``oidc`` entry."""

    name: Literal["oidc"]
    config: OidcSettings


class AclPlugin(_PluginEntry):
    """``acl`` entry."""

    name: Literal["acl"]
    config: AclSettings


class RateLimitingPlugin(_PluginEntry):
    """``rate-limiting`` entry."""

    name: Literal["rate-limiting"]
    config: RateLimitingSettings


class UsageControlPlugin(_PluginEntry):
    """``usage-control`` entry."""

    name: Literal["usage-control"]
    config: UsageControlSettings


PluginSpec = Annotated[
    IpRestrictionPlugin | OidcPlugin | AclPlugin | RateLimitingPlugin | UsageControlPlugin,
    Field(discriminator="name"),
]


class GatewayConfig(_Model):
    """The whole gateway configuration (Kong-like declarative format)."""

    services: list[ServiceConfig] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)
    consumers: list[ConsumerConfig] = Field(default_factory=list)
    plugins: list[PluginSpec] = Field(default_factory=list)
    trusted_proxies: list[str] = Field(
        default_factory=list, description="peers whose X-Forwarded-For is believed (addresses or CIDRs)"
    )
    status_path: str = Field(default="/_gateway", description="prefix of /metrics and /healthz on the proxy port")
    status_allow: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    upstream_pool_size: int = Field(
        default=256, strict=True, gt=0, le=10_000, description="pooled upstream connections per gateway"
    )

    @field_validator("trusted_proxies", "status_allow")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        _networks(value)
        return value

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        problems = [f"duplicate {kind} {key!r}" for kind, key in duplicate_keys(self)]
        problems += [f"{ref.kind} {ref.key!r} names unknown {ref.field} {ref.target!r}" for ref in dangling(self)]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def trusted_networks(self) -> list[Network]:
        """Parsed ``trusted_proxies``."""
        return _networks(self.trusted_proxies)


@dataclass(frozen=True, slots=True)
class DanglingReference:
    """An object (``kind`` ``key``) whose ``field`` names a ``target`` that does not exist."""

    kind: str
    key: str
    field: str
    target: str


def entity_key(entity: Any) -> str:
    """The key of a service, route, consumer (username) or plugin (id, or its name when it has none yet)."""
    if isinstance(entity, ConsumerConfig):
        return entity.username
    if isinstance(entity, _PluginEntry):
        return str(entity.id or getattr(entity, "name", ""))
    return str(entity.name)


def duplicate_keys(config: GatewayConfig) -> list[tuple[str, str]]:
    """``(kind, key)`` of every key used twice (plugins without an id are not compared)."""
    found: list[tuple[str, str]] = []
    groups = (("service", config.services), ("route", config.routes), ("consumer", config.consumers))
    for kind, entities in (*groups, ("plugin", [p for p in config.plugins if p.id])):
        seen: set[str] = set()
        for entity in entities:
            key = entity_key(entity)
            if key in seen:
                found.append((kind, key))
            seen.add(key)
    return found


def dangling(config: GatewayConfig) -> list[DanglingReference]:
    """Every reference to a service, route or consumer that is not in ``config``."""
    names = {
        "service": {s.name for s in config.services},
        "route": {r.name for r in config.routes},
        "consumer": {c.username for c in config.consumers},
    }
    found = [
        DanglingReference("route", route.name, "service", route.service)
        for route in config.routes
        if route.service not in names["service"]
    ]
    for plugin in config.plugins:
        for field, target in (("service", plugin.service), ("route", plugin.route), ("consumer", plugin.consumer)):
            if target is not None and target not in names[field]:
                found.append(DanglingReference("plugin", plugin.id or plugin.name, field, target))
    return found


def parse_gateway_config(data: str | dict[str, Any]) -> GatewayConfig:
    """Validate a configuration from YAML text or a mapping (``_format_version`` and similar keys are ignored)."""
    raw = yaml.safe_load(data) if isinstance(data, str) else data
    if not isinstance(raw, dict):
        raise ValueError("gateway configuration must be a mapping")
    return GatewayConfig.model_validate({k: v for k, v in raw.items() if not k.startswith("_")})


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read and validate a declarative YAML file."""
    return parse_gateway_config(Path(path).read_text())
