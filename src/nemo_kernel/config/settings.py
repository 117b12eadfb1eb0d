"""Settings of a NEMO Kernel process, from the environment (``NEMO_*``) with embedded defaults."""

from __future__ import annotations

import ipaddress
import os
import pwd
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_OLD_WEIGHTS = ("cost", "carbon", "balance")
"""The criteria that had a variable each (``NEMO_WEIGHT_COST``...) before ``NEMO_WEIGHTS``."""


def _checked_weights(value: Any, old: dict[str, float]) -> dict[str, float]:
    """Every criterion's weight from ``NEMO_WEIGHTS`` (JSON text, or a mapping) and the old variables' ``old``.

    A criterion named by both must have the same weight in both: neither silently wins over the other. Raises
    ValueError naming what is wrong; the caller reports it as ``NEMO_WEIGHTS``.
    """
    # Imported here: settings are read by every CLI command, which has no other use for the domain models.
    from nemo_kernel.domain import CRITERIA, DEFAULT_WEIGHT, DEFAULT_WEIGHTS, MAX_WEIGHT, DocumentError, load_document

    if isinstance(value, str | bytes):
        try:
            value = load_document(value, yaml_syntax=False)
        except DocumentError as exc:
            raise ValueError(f"not a JSON mapping of criterion to weight: {exc}") from None
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ValueError(f'must be a JSON mapping of criterion to weight, like {{"cost": 1}}, not {value!r}')
    weights: dict[str, float] = {}
    for name, weight in value.items():
        if name not in CRITERIA:
            raise ValueError(f"unknown criterion {name!r}; known: {', '.join(CRITERIA)}")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(f"weight of {name} must be a number from 0 to {MAX_WEIGHT:g}, not {weight!r}")
        weights[name] = float(weight)
    for name, weight in old.items():
        if weights.get(name, weight) != weight:
            variable = f"NEMO_WEIGHT_{name.upper()}"
            raise ValueError(f"{name} is {weights[name]:g} in NEMO_WEIGHTS but {weight:g} in {variable}; set it once")
        weights[name] = weight
    full = {name: weights.get(name, DEFAULT_WEIGHTS.get(name, DEFAULT_WEIGHT)) for name in CRITERIA}
    if not any(full.values()):
        raise ValueError("at least one weight must be above 0")
    return full


def default_data_dir() -> Path:
    """Per-user data directory: ``$XDG_DATA_HOME/nemo`` (``~/.local/share/nemo``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "nemo"


class Settings(BaseSettings):
    """Everything a control plane needs to know to start. Each field is ``NEMO_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="NEMO_", extra="ignore", allow_inf_nan=False)

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in data_dir if unset")
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=7700, ge=0, le=65535, description="0 picks a free port")
    clusters_file: Path | None = Field(default=None, description="YAML list of clusters created on first start")
    latency_file: Path | None = Field(
        default=None,
        description="YAML round-trip times between regions (domain.LatencyMatrix) for the latency criterion and "
        "placement.max_latency_ms; unset: every other region is unknown_ms (300) away",
    )
    gateway_enabled: bool = Field(default=True, description="nemo up starts the gateway (a child process)")
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=7780, ge=0, le=65535, description="0 picks a free port")
    gateway_config: Path | None = Field(default=None, description="declarative gateway YAML stored on first start")
    bus_url: str | None = Field(default=None, description="amqp(s):// URL of RabbitMQ; the in-process bus if unset")
    bus_ca_file: Path | None = Field(default=None, description="CA of the broker's certificate (amqps)")
    bus_cert_file: Path | None = Field(default=None, description="client certificate for the broker (amqps)")
    bus_key_file: Path | None = Field(default=None, description="client key for the broker (amqps)")

    max_body_bytes: int = Field(
        default=1 << 20, ge=1024, le=64 << 20, description="largest request body the API reads; larger ones get 413"
    )

    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#]+(/[^?#]*)?$",
        description="the API's address as clients reach it (a name, a proxy); the built-in issuer's URL is "
        "PUBLIC_URL/realms/REALM. Default: the address the API binds to",
    )
    realm: str = Field(default="nemo", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="issuer realm")
    token_ttl: int = Field(
        default=300, ge=60, le=86400, description="seconds an access token of the built-in issuer is valid"
    )
    oidc_issuer: str | None = Field(default=None, description="external OIDC issuer URL; the built-in one if unset")
    oidc_audience: str = Field(default="nemo-api", description="audience API tokens must carry")
    oidc_client_id: str | None = Field(default=None, description="client for introspection at the external issuer")
    oidc_client_secret: SecretStr | None = None
    oidc_introspect_jwts: bool = Field(
        default=True,
        description="with an introspection client, introspect JWTs too, so a revoked JWT is refused (false for"
        " providers that do not track their JWTs)",
    )
    oidc_introspection_cache_ttl: float = Field(default=10.0, ge=0, le=3600, description="seconds an answer is reused")

    prometheus_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#@\s]+(/[^?#\s]*)?$",
        description="Prometheus whose HTTP API answers the analytics engine's queries (PromQL) instead of the "
        "embedded store, which keeps collecting; no credentials in the URL",
    )
    prometheus_timeout: float = Field(
        default=10.0, gt=0, le=300, description="seconds a query to Prometheus may take before it answers 503"
    )

    heartbeat_interval: float = Field(
        default=3.0,
        ge=0,
        le=3600,
        description="seconds between heartbeats of a quiet cluster (0: on every reconcile pass); a cluster is asked "
        "on every pass while it is starting or stopping a replica, after the control plane sent it something, and "
        "while its heartbeats fail, so this delays only what nobody asked for (a crash, a node's readiness); keep "
        "it below NEMO_HEARTBEAT_TIMEOUT",
    )
    heartbeat_timeout: float = Field(
        default=6.0, gt=0, le=86400, description="silence after which a cluster is NotReady"
    )
    reconcile_interval: float = Field(default=1.0, ge=0.05, le=3600, description="seconds between reconcile passes")
    store_poll_interval: float = Field(
        default=5.0,
        ge=0.05,
        le=3600,
        description="seconds the loops that handle stored events (outbox, reactions, SLA acts, migrations, faults) "
        "wait at most for a change: this process wakes them at once, so it bounds how late they see another "
        "process's changes",
    )
    resync_interval: float = Field(
        default=60.0,
        ge=1,
        le=86400,
        description="seconds between whole reports of each cluster (observed against the store, its rollout "
        "planned), the fleet's spread over the interval, and between passes that run every step whatever changed: "
        "the safety net of change-driven passes",
    )
    slo_interval: float = Field(
        default=15.0, ge=0.05, le=3600, description="seconds between evaluations of the SLAs' objectives (PPEF)"
    )
    driver_timeout: float = Field(default=3.0, ge=0.1, le=600, description="seconds a driver call may take")
    migration_drain: float = Field(
        default=2.0,
        ge=0.5,
        le=3600,
        description="seconds a migration's source keeps running after the traffic switch, for the gateway to follow "
        "and in-flight requests to finish",
    )
    migration_prepare_timeout: float = Field(
        default=60.0, ge=1, le=3600, description="seconds a migration's target may take to run before it is rolled back"
    )
    evacuation_concurrency: int = Field(
        default=8,
        ge=1,
        le=10_000,
        description="migrations the engine may have in flight at once for drains, NotReady clusters and moves back "
        "to a recovered cluster (a drain of a cluster with 500 replicas moves this many at a time)",
    )
    rebalance_interval: float = Field(
        default=0.0,
        ge=0,
        le=86400,
        description="seconds between periodic rebalances that apply their plan (0: only on demand); off by default "
        "because moving replicas is a decision an operator should opt into",
    )
    rebalance_max_moves: int = Field(default=50, ge=1, le=10_000, description="most replicas one rebalance moves")
    rebalance_cooldown: float = Field(
        default=3600.0, ge=0, le=30 * 86400, description="seconds a workload the rebalancer moved is left in place"
    )
    rebalance_time_limit: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="seconds a rebalance plan may take (model, LP pricing, MIP); past it, its best plan",
    )
    rebalance_move_cost: float = Field(
        default=0.1, ge=0, le=1000, description="cost of one move, in average replica-hours of weighted cost and carbon"
    )
    rebalance_min_saving: float = Field(
        default=0.01, ge=0, le=1, description="share of the weighted cost and carbon a plan must save to be applied"
    )
    rebalance_min_saving_eur_h: float = Field(
        default=0.01, ge=0, le=1e6, description="EUR/h a plan must save to be applied (or the gCO2/h below)"
    )
    rebalance_min_saving_gco2_h: float = Field(
        default=10.0, ge=0, le=1e9, description="gCO2/h a plan must save to be applied (or the EUR/h above)"
    )
    replica_user: str = Field(
        default="nobody", min_length=1, description="user local replicas run as when nemo up runs as root"
    )

    managed_tier: str = Field(default="edge", pattern="^(cloud|edge|iot)$", description="of petition-made clusters")
    managed_region: str = "local"
    managed_country: str = Field(default="EU", pattern="^[A-Z]{2}$")
    managed_node_cpu: float = Field(default=4.0, gt=0, le=100_000)
    managed_node_memory_mib: int = Field(default=4096, gt=0, le=1 << 40)
    max_managed_clusters: int = Field(
        default=20, ge=0, le=1000, description="clusters join petitions may create in all (each local one is an agent)"
    )

    petition_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="directories (absolute, separated by ':') under which deploy petitions may read local paths and "
        "file:// repositories; empty refuses them all",
    )
    metrics_interval: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="seconds between collections of every cluster's series (and the gateway's); 0 disables collection",
    )
    carbon_data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="directories (absolute, separated by ':') under which clusters' carbon_intensity_source files may "
        "be read; empty refuses them all",
    )
    webhook_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="hosts (separated by ',') an SLA's notify policy may POST its webhook to; empty refuses them all. "
        "A host resolving to a loopback, private or link-local address is refused unless that address or its network "
        "(127.0.0.1, 10.0.0.0/8) is listed too",
    )
    webhook_timeout: float = Field(default=5.0, gt=0, le=60, description="seconds a webhook POST may take in all")

    petition_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="addresses or networks (separated by ',', e.g. 10.0.0.0/8) that petitions' git hosts may resolve "
        "to although they are not global: a git server on the local network; empty, git hosts must resolve to global "
        "addresses only",
    )
    petition_allow_http: bool = Field(default=False, description="petitions may clone plain http:// repositories")
    petition_clone_timeout: float = Field(default=60.0, gt=0, le=600, description="seconds a petition's clone may take")
    petition_clone_max_mib: int = Field(default=100, ge=1, le=10240, description="size limit of a petition's clone")

    # The embedded metrics store (metrics.embedded): raw samples in memory, 1 min and 1 h rollups in the database.
    metrics_raw_retention: float = Field(
        default=7200.0, ge=300, le=7 * 86400, description="seconds of raw samples kept in memory per series"
    )
    metrics_raw_max_samples: int = Field(
        default=7200, ge=16, le=1_000_000, description="most raw samples kept per series (a memory bound)"
    )
    metrics_rollup_1m_retention: float = Field(
        default=2 * 86400.0, ge=3600, le=90 * 86400, description="seconds 1-minute rollups are kept in the database"
    )
    metrics_rollup_1h_retention: float = Field(
        default=90 * 86400.0, ge=86400, le=5 * 366 * 86400, description="seconds 1-hour rollups are kept"
    )
    metrics_max_series: int = Field(
        default=200_000,
        ge=100,
        le=10_000_000,
        description="most series held (workloads' own series: at most half); samples of new ones beyond are dropped",
    )
    federate_max_series: int = Field(
        default=50_000,
        ge=10,
        le=1_000_000,
        description="most series one /federate or /metrics answer holds (about 200 bytes each); more is refused",
    )
    metrics_flush_interval: float = Field(
        default=60.0, ge=1, le=3600, description="seconds between writes of finished rollups to the database"
    )

    # Findings of the analytics engine (metrics.findings, orchestrator.findings).
    findings_interval: float = Field(
        default=15.0, ge=1, le=3600, allow_inf_nan=False, description="seconds between looks for bottlenecks"
    )
    bottleneck_for: float = Field(
        default=60.0, ge=1, le=86400, allow_inf_nan=False, description="seconds at or above the threshold"
    )
    bottleneck_threshold: float = Field(
        default=0.9, gt=0, le=10, allow_inf_nan=False, description="share of a node's capacity, of a replica's request"
    )
    # 20 minutes: 80 points at the default interval. Every cycle reads the whole window of every watched series
    # (benchmarks/bench_findings.py), so a longer band costs in proportion.
    anomaly_window: float = Field(
        default=1200.0, ge=60, le=7 * 86400, allow_inf_nan=False, description="seconds of the band an anomaly leaves"
    )

    # The weights of the placement criteria: one JSON mapping, NEMO_WEIGHTS='{"cost": 2, "carbon": 1}'. The three
    # variables before it are still read (an entry each); they are validated with it, in ``_weights``.
    weight_cost: float | None = Field(default=None, ge=0, le=1000, allow_inf_nan=False, description="see weights")
    weight_carbon: float | None = Field(default=None, ge=0, le=1000, allow_inf_nan=False, description="see weights")
    weight_balance: float | None = Field(default=None, ge=0, le=1000, allow_inf_nan=False, description="see weights")
    weights: Annotated[dict[str, float] | None, NoDecode] = Field(
        default=None,
        validate_default=True,
        description="JSON mapping of placement criterion to weight, 0 to 1000; a criterion left out weighs 1. "
        "Unset: every criterion weighs 1",
    )

    @field_validator("replica_user")
    @classmethod
    def _existing_user(cls, value: str) -> str:
        # Checked at start, not when the first agent fails to start its replicas over and over (as root, a
        # missing user would otherwise leave every local cluster Pending with only an agent log saying why).
        try:
            pwd.getpwnam(value)
        except KeyError:
            raise ValueError(f"no user {value!r} on this machine (create it, or name another)") from None
        return value

    @field_validator("metrics_interval")
    @classmethod
    def _collection_interval(cls, value: float) -> float:
        # below half a second the collector would spend its time scraping (each pass reads every replica's /proc)
        if 0 < value < 0.5:
            raise ValueError("must be 0 (collection off) or at least 0.5 seconds")
        return value

    @field_validator("webhook_hosts", "petition_networks", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        # Host names compare case-insensitively; an admin writes them comma-separated in the environment.
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [str(part).strip().lower() for part in value if str(part).strip()]
        return value

    @field_validator("petition_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an address or a network such as 10.0.0.0/8") from None
        return value

    @field_validator("petition_roots", "carbon_data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        # PATH-style in the environment, like every other list of directories an admin writes.
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part.strip()]
        return value

    @field_validator("petition_roots", "carbon_data_roots")
    @classmethod
    def _absolute_roots(cls, value: list[Path]) -> list[Path]:
        for root in value:
            if not root.is_absolute():
                raise ValueError(f"roots must be absolute directories, not {str(root)!r}")
        return value

    @field_validator("weights", mode="before")
    @classmethod
    def _weights(cls, value: Any, info: ValidationInfo) -> dict[str, float] | None:
        old = {name: info.data.get(f"weight_{name}") for name in _OLD_WEIGHTS}
        given = {name: weight for name, weight in old.items() if weight is not None}
        if value is None and not given:
            return None  # the decision engine's defaults; and the CLI never loads the domain models
        return _checked_weights(value, given)

    def resolved_database_url(self) -> str:
        """The database to use: ``database_url``, or a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'nemo.db'}"

    @property
    def endpoint_file(self) -> Path:
        """Where a running ``nemo up`` writes its API URL, so the CLI of the same user finds it."""
        return self.data_dir / "endpoint.json"

    @property
    def admin_credentials_file(self) -> Path:
        """Where ``nemo up`` writes the admin client's credentials on first start (mode 0600)."""
        return self.data_dir / "admin-credentials.json"
