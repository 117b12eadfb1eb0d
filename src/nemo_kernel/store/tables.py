"""The relational schema (SQLAlchemy 2). Changes go through an Alembic migration in ``migrations/``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from nemo_kernel.domain import utcnow


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores no zone, so it is added back on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use nemo_kernel.domain.utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map = {dict[str, Any]: JSON, datetime: UtcDateTime}


class ClusterRow(Base):
    """A registered cluster; ``spec`` holds the validated ClusterSpec as JSON."""

    __tablename__ = "clusters"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    driver: Mapped[str] = mapped_column(String(20))
    tier: Mapped[str] = mapped_column(String(10))
    region: Mapped[str] = mapped_column(String(64))
    country: Mapped[str] = mapped_column(String(2))
    spec: Mapped[dict[str, Any]]
    phase: Mapped[str] = mapped_column(String(16), default="Pending")
    cordoned: Mapped[bool] = mapped_column(Boolean, default=False)
    draining: Mapped[bool] = mapped_column(Boolean, default=False)
    message: Mapped[str] = mapped_column(Text, default="")
    last_heartbeat: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    nodes: Mapped[list[NodeRow]] = relationship(
        back_populates="cluster", cascade="all, delete-orphan", passive_deletes=True, order_by="NodeRow.name"
    )


class NodeRow(Base):
    """A node of a cluster, with its capacity accounting (sums of the requests of its active replicas)."""

    __tablename__ = "nodes"
    __table_args__ = (UniqueConstraint("cluster_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    spec: Mapped[dict[str, Any]]
    ready: Mapped[bool] = mapped_column(Boolean, default=True)
    allocated_cpu: Mapped[float] = mapped_column(Float, default=0.0)
    allocated_memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    replica_count: Mapped[int] = mapped_column(Integer, default=0)

    cluster: Mapped[ClusterRow] = relationship(back_populates="nodes")


class WorkloadRow(Base):
    """A workload: its latest descriptor and version. ``needs_placement`` queues it for the decision engine."""

    __tablename__ = "workloads"
    __table_args__ = (UniqueConstraint("namespace", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    namespace: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(63))
    version: Mapped[int] = mapped_column(Integer, default=1)
    descriptor: Mapped[dict[str, Any]]
    phase: Mapped[str] = mapped_column(String(16), default="Pending")
    message: Mapped[str] = mapped_column(Text, default="")
    needs_placement: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    deleting: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ReplicaRow(Base):
    """One replica bound to a node. ``desired`` False means it is being removed (old version, moved, deleted)."""

    __tablename__ = "replicas"
    __table_args__ = (
        Index("ix_replicas_cluster_desired", "cluster", "desired"),
        # The rollout's question on every pass: which clusters have a replica to send (desired, Scheduled) or to
        # remove (not desired)? Answered from this index alone, not by scanning every replica of the fleet.
        Index("ix_replicas_desired_phase_cluster", "desired", "phase", "cluster"),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    index: Mapped[int] = mapped_column(Integer)
    cluster: Mapped[str] = mapped_column(String(63))
    node: Mapped[str] = mapped_column(String(63))
    runtime: Mapped[str | None] = mapped_column(String(63))
    cpu_request: Mapped[float] = mapped_column(Float)
    memory_request_mib: Mapped[int] = mapped_column(Integer)
    desired: Mapped[bool] = mapped_column(Boolean, default=True)
    phase: Mapped[str] = mapped_column(String(16), default="Scheduled")
    url: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    cpu_percent: Mapped[float | None] = mapped_column(Float)
    memory_mib: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DecisionRow(Base):
    """A stored placement decision with its full explanation."""

    __tablename__ = "placement_decisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    decision: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EventRow(Base):
    """A state change: the history of a subject, and the outbox of the bus (``published`` False until sent)."""

    __tablename__ = "events"
    # (kind, id): the reaction dispatcher reads the recent events of a few kinds on every pass
    __table_args__ = (Index("ix_events_subject_id", "subject", "id"), Index("ix_events_kind_id", "kind", "id"))

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]]
    published: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- Access control: the built-in OIDC issuer's realms (nemo_kernel.access.issuer keeps the logic) -----------------


class IdentityUserRow(Base):
    """A user of a realm of the built-in issuer. ``password_hash`` is Argon2id; the password is never stored."""

    __tablename__ = "identity_users"
    __table_args__ = (UniqueConstraint("realm", "username"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    realm: Mapped[str] = mapped_column(String(64))
    username: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(Text)
    realm_roles: Mapped[list[str]] = mapped_column(JSON)
    client_roles: Mapped[dict[str, Any]]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    email: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdentityClientRow(Base):
    """An OAuth client of a realm; confidential clients carry ``secret_hash`` (Argon2id), never the secret."""

    __tablename__ = "identity_clients"
    __table_args__ = (UniqueConstraint("realm", "client_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    realm: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(String(64))
    secret_hash: Mapped[str | None] = mapped_column(Text)
    grant_types: Mapped[list[str]] = mapped_column(JSON)
    realm_roles: Mapped[list[str]] = mapped_column(JSON)
    client_roles: Mapped[dict[str, Any]]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SigningKeyRow(Base):
    """A token-signing key of a realm (PKCS#8 PEM). Retired keys leave the JWKS; the newest live key signs."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    realm: Mapped[str] = mapped_column(String(64), index=True)
    algorithm: Mapped[str] = mapped_column(String(8))
    private_pem: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None]


class RevokedTokenRow(Base):
    """A revoked token id (``jti``), kept until the token would have expired anyway."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


# --- Access control: the gateway's Kong-like configuration ----------------------------------------------------------


class GatewayEntityRow(Base):
    """One gateway object. ``kind`` is service, route, consumer or plugin; ``key`` is its name (a consumer's
    username, a plugin's id); ``spec`` is the validated object as in the declarative file."""

    __tablename__ = "gateway_entities"
    __table_args__ = (UniqueConstraint("kind", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# --- Intercommunication security: the directory of module keys and the record of handled messages -------------------


class ModuleKeyRow(Base):
    """A module's public keys (Ed25519 signing, X25519 encryption). The module's current key is its newest
    non-revoked one by ``current_since`` (rotation moves a key to now)."""

    __tablename__ = "bus_module_keys"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    module: Mapped[str] = mapped_column(String(63), index=True)
    signing_public: Mapped[bytes] = mapped_column(LargeBinary(32))
    encryption_public: Mapped[bytes] = mapped_column(LargeBinary(32))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    current_since: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class ModuleSubscriptionsRow(Base):
    """The routing key patterns a module declared it reads (broker read permissions and event recipients)."""

    __tablename__ = "bus_module_subscriptions"

    module: Mapped[str] = mapped_column(String(63), primary_key=True)
    patterns: Mapped[list[str]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SeenMessageRow(Base):
    """A message a consumer has handled (replay refusal and exactly-once handling), kept until ``expires_at``."""

    __tablename__ = "bus_seen_messages"

    consumer: Mapped[str] = mapped_column(String(63), primary_key=True)
    message_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


# --- Reactions: which reaction handled which event (exactly once), and how far each has settled the event log ------


class ReactionRunRow(Base):
    """One reaction's run on one event: the "seen" marker, committed with the reaction's own writes, and its audit
    record. ``status`` is ``done`` or ``failed`` (given up after ``attempts``, ``error`` says why)."""

    __tablename__ = "reaction_runs"

    reaction: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(8))
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]


class ReactionWatermarkRow(Base):
    """How far a reaction has settled the event log: every event of its kinds with an id up to ``settled_through``
    has a run, and no event with such an id can still commit (see ``orchestrator.reactions_dispatcher``)."""

    __tablename__ = "reaction_watermarks"

    reaction: Mapped[str] = mapped_column(String(200), primary_key=True)
    settled_through: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# --- Metrics: downsampled history of the embedded metrics store (nemo_kernel.metrics.rollups) -----------------------


class MetricSeriesRow(Base):
    """A series whose rollups are stored: its name and canonical label text; ``id`` is a digest of both (label
    texts can be longer than an index entry may be)."""

    __tablename__ = "metric_series"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), index=True)
    labels: Mapped[str] = mapped_column(Text)


class MetricRollupRow(Base):
    """One bucket (``resolution`` seconds from ``start``, unix seconds) of one series. Values are nullable because
    SQLite stores NaN as NULL."""

    __tablename__ = "metric_rollups"
    __table_args__ = (Index("ix_metric_rollups_resolution_start", "resolution", "start"),)

    series_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    resolution: Mapped[int] = mapped_column(Integer, primary_key=True)
    start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    sum: Mapped[float | None] = mapped_column(Float(53))
    min: Mapped[float | None] = mapped_column(Float(53))
    max: Mapped[float | None] = mapped_column(Float(53))
    last: Mapped[float | None] = mapped_column(Float(53))
    increase: Mapped[float | None] = mapped_column(Float(53))


# --- PPEF: SLAs, the status of their SLOs, violations, and the audit of the closed loop (nemo_kernel.store.slas) -----


class SlaRow(Base):
    """An SLA: its latest spec (validated SlaSpec as JSON) and version, and its lifecycle ``state``."""

    __tablename__ = "slas"
    __table_args__ = (
        UniqueConstraint("namespace", "name"),
        Index("ix_slas_namespace_workload", "namespace", "workload"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    namespace: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(63))
    workload: Mapped[str | None] = mapped_column(String(63))
    version: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(16), default="Draft", index=True)
    spec: Mapped[dict[str, Any]]
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SloStatusRow(Base):
    """The last evaluation of one SLO of an SLA (one row per SLO, replaced at each evaluation)."""

    __tablename__ = "slo_status"

    sla_id: Mapped[int] = mapped_column(ForeignKey("slas.id", ondelete="CASCADE"), primary_key=True)
    slo: Mapped[str] = mapped_column(String(63), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float(53))
    target: Mapped[float] = mapped_column(Float(53))
    budget_remaining: Mapped[float | None] = mapped_column(Float(53))
    burn_rates: Mapped[dict[str, Any]]
    predicted_breach_at: Mapped[datetime | None]
    confidence: Mapped[float | None] = mapped_column(Float(53))
    message: Mapped[str] = mapped_column(Text, default="")
    evaluated_at: Mapped[datetime | None]


class SlaViolationRow(Base):
    """A stretch of time one SLO spent outside its objective; ``ended_at`` NULL while it lasts."""

    __tablename__ = "sla_violations"
    __table_args__ = (Index("ix_sla_violations_sla_slo_ended", "sla_id", "slo", "ended_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sla_id: Mapped[int] = mapped_column(ForeignKey("slas.id", ondelete="CASCADE"))
    slo: Mapped[str] = mapped_column(String(63))
    started_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None]
    worst_value: Mapped[float | None] = mapped_column(Float(53))
    breach_level: Mapped[str] = mapped_column(String(32))


class SlaActionRow(Base):
    """The audit of the closed loop: what was predicted or seen, what was done, and what happened after."""

    __tablename__ = "sla_actions"
    __table_args__ = (Index("ix_sla_actions_sla_at", "sla_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sla_id: Mapped[int] = mapped_column(ForeignKey("slas.id", ondelete="CASCADE"))
    slo: Mapped[str | None] = mapped_column(String(63))
    trigger: Mapped[str] = mapped_column(String(16))
    predicted: Mapped[dict[str, Any]]
    action: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    followup: Mapped[dict[str, Any] | None]
    followup_at: Mapped[datetime | None]
    # Decided in a reaction but carried out by the SLA action runner (a webhook, a migration): the reaction may not
    # call the network nor open another transaction. ``outcome`` says what the runner did once this is False.
    pending: Mapped[bool] = mapped_column(Boolean, default=False, index=True)


# --- Migrations: one replica moving to another node, cluster or runtime (nemo_kernel.migration drives them) ---------


class MigrationRow(Base):
    """A migration and how far it got. The migration loop advances it from what is stored here, so a control plane
    killed mid-migration resumes (or rolls back) on restart. ``timings`` lists ``{phase, started_at, ended_at}``."""

    __tablename__ = "migrations"
    __table_args__ = (Index("ix_migrations_phase", "phase"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id", ondelete="CASCADE"), index=True)
    workload: Mapped[str] = mapped_column(String(127))
    mode: Mapped[str] = mapped_column(String(16))
    phase: Mapped[str] = mapped_column(String(16))
    source_replica: Mapped[str] = mapped_column(String(128))
    source_index: Mapped[int] = mapped_column(Integer)
    source_cluster: Mapped[str] = mapped_column(String(63))
    source_node: Mapped[str] = mapped_column(String(63))
    target_replica: Mapped[str | None] = mapped_column(String(128))
    target_cluster: Mapped[str] = mapped_column(String(63))
    target_node: Mapped[str] = mapped_column(String(63))
    target_runtime: Mapped[str | None] = mapped_column(String(63))
    state_version: Mapped[int | None] = mapped_column(Integer)
    """Version of the full state imported into the target (the base of the final delta)."""
    frozen_at: Mapped[datetime | None]
    switched_at: Mapped[datetime | None]
    source_stopped_at: Mapped[datetime | None]
    phase_deadline: Mapped[datetime | None]
    rolling_back: Mapped[bool] = mapped_column(Boolean, default=False)
    """A rollback waits for the frozen source to be thawed (the migration loop retries until it answers)."""
    timings: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    message: Mapped[str] = mapped_column(Text, default="")
    requested_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(String(16))
    """Why the engine moves the replica (``drained``, ``not ready``): an evacuation; ``None`` for a requested move."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RebalanceRow(Base):
    """A rebalancing plan: its totals, the solve's outcome and where applying it is (moves in ``rebalance_moves``)."""

    __tablename__ = "rebalances"
    __table_args__ = (Index("ix_rebalances_state", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    apply: Mapped[bool] = mapped_column(Boolean)
    solver_status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    totals: Mapped[dict[str, Any]] = mapped_column(JSON)
    """``{before: {eur_h, gco2_h}, after: {...}}``."""
    solve_seconds: Mapped[float] = mapped_column(Float)
    pinned: Mapped[dict[str, str]] = mapped_column(JSON)
    requested_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class RebalanceMoveRow(Base):
    """One move of a plan. ``started_at`` of a move that started is when its workload's cooldown began."""

    __tablename__ = "rebalance_moves"
    __table_args__ = (Index("ix_rebalance_moves_state", "state"), Index("ix_rebalance_moves_workload", "workload_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    rebalance_id: Mapped[int] = mapped_column(ForeignKey("rebalances.id", ondelete="CASCADE"), index=True)
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id", ondelete="CASCADE"))
    workload: Mapped[str] = mapped_column(String(127))
    replica: Mapped[str] = mapped_column(String(128))
    index: Mapped[int] = mapped_column(Integer)
    from_cluster: Mapped[str] = mapped_column(String(63))
    from_node: Mapped[str] = mapped_column(String(63))
    to_cluster: Mapped[str] = mapped_column(String(63))
    to_node: Mapped[str] = mapped_column(String(63))
    saving_eur_h: Mapped[float] = mapped_column(Float)
    saving_gco2_h: Mapped[float] = mapped_column(Float)
    criterion: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    migration_id: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime | None]
