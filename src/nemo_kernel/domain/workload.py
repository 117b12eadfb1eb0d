"""Workloads: the CMDT service descriptor (seed section 6.2) extended with a deployment spec.

A descriptor without a ``deployment`` section is a catalogue entry: the service's digital twin (services,
properties, microservices, endpoints), registered but not run.
"""

from __future__ import annotations

import os
import posixpath
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
    with_config,
)
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from nemo_kernel.domain.cluster import MAX_MEMORY_MIB, MAX_NODE_CPU, Architecture, Region, TeeType, Tier
from nemo_kernel.domain.common import (
    Labels,
    Lax,
    Model,
    Name,
    Spec,
    check_int64,
    derived_name,
    is_dns_label,
    is_one_line,
)
from nemo_kernel.domain.countries import COUNTRY_CODES, CountryCode
from nemo_kernel.domain.rebalance import RebalancePolicy

_NO_NUL = r"^[^\x00]*$"
MAX_PATH_LENGTH = 4095  # PATH_MAX (4096, with its NUL) on Linux: a longer working directory cannot be entered
SOURCES_DIR = "sources"
"""Where petitions check out a workload's repository: ``DATA_DIR/sources/<namespace>/<name>``."""
PropertyValue = Annotated[str | int | float | bool, BeforeValidator(check_int64)]


class Isolation(StrEnum):
    """Isolation level a workload asks for; each maps to runtimes that provide it."""

    STANDARD = "standard"
    UNIKERNEL = "unikernel"
    CONFIDENTIAL = "confidential"


RUNTIMES_FOR_ISOLATION: dict[Isolation, frozenset[str]] = {
    Isolation.STANDARD: frozenset({"runc", "crun", "runsc", "process"}),
    Isolation.UNIKERNEL: frozenset({"runh", "urunc", "runu"}),
    Isolation.CONFIDENTIAL: frozenset({"kata-qemu-tdx", "kata-qemu-snp", "kata-qemu-sev", "kata-cc", "enclave-cc"}),
}
"""Runtime classes (Kubernetes RuntimeClass handler names) that provide each isolation level."""


class Microservice(Spec):
    """A microservice of a CMDT service, with the endpoints through which it is reached."""

    name: str = Field(alias="Name", min_length=1)
    description: str = Field(default="", alias="Description")
    endpoints: list[str] = Field(default_factory=list, alias="Endpoints")


class Service(Spec):
    """A service of a CMDT descriptor."""

    name: str = Field(alias="Name", min_length=1)
    description: str = Field(default="", alias="Description")
    package: str | None = Field(default=None, alias="Package")
    properties: list[dict[str, PropertyValue]] = Field(default_factory=list, alias="Properties")
    microservices: list[Microservice] = Field(default_factory=list, alias="Microservices")


MIN_CPU = 0.001
"""The smallest CPU request (a millicore)."""


class Resources(Spec):
    """Resources each replica requests; capacity accounting and placement use these."""

    # at least a millicore, Kubernetes' finest unit: 1e-300 was accepted, and 10**6 such replicas fitted one core
    cpu: float = Field(default=0.1, ge=MIN_CPU, le=MAX_NODE_CPU, description="cores, from 0.001")
    memory_mib: int = Field(default=64, gt=0, le=MAX_MEMORY_MIB)


class PortSpec(Spec):
    """A port the workload listens on; the local driver gives each replica its own host port."""

    name: str = Field(default="http", pattern=r"^[a-z][a-z0-9-]{0,14}$")
    port: int = Field(default=8080, ge=1, le=65535, description="container port (Kubernetes driver)")
    protocol: str = Field(default="TCP", pattern=r"^(TCP|UDP)$")


class HealthCheck(Spec):
    """How to tell a replica is healthy: an HTTP GET on the first port, or the process being alive."""

    http_path: str | None = Field(default=None, pattern=r"^/")
    timeout_seconds: float = Field(default=1.0, gt=0, le=30)


class MetricsEndpoint(Spec):
    """Where a workload serves its own Prometheus series; the cluster's agent scrapes every replica there."""

    path: str = Field(
        default="/metrics",
        max_length=1024,
        pattern=r"^(/[A-Za-z0-9._~!$&'()*+,;=:@-]+)+$",
        description="absolute URL path, no query, no empty, '.' or '..' segments",
    )
    port: str = Field(default="http", pattern=r"^[a-z][a-z0-9-]{0,14}$", description="name of a declared port")

    @field_validator("path")
    @classmethod
    def _no_dot_segments(cls, value: str) -> str:
        # '..' would name another path of the same server than the one written: refuse rather than guess
        if any(segment in (".", "..") for segment in value.split("/")):
            raise ValueError("must not contain '.' or '..' segments")
        return value


class TeeChoice(StrEnum):
    """The trusted execution environment a workload asks for: one type, or ``any`` of them."""

    TDX = "tdx"
    SEV_SNP = "sev-snp"
    SEV = "sev"
    SGX = "sgx"
    ANY = "any"


TEE_TYPES: frozenset[TeeType] = frozenset(t for t in TeeType if t is not TeeType.NONE)
"""Every TEE a node can offer."""


DEFAULT_WEIGHT = 1.0
"""The weight of a placement criterion that neither ``NEMO_WEIGHTS`` nor the workload sets."""

MAX_WEIGHT = 1000.0
"""Weights are relative; a cap keeps a typo (1e300) from being taken as a preference."""

Weight = Annotated[float, Field(ge=0, le=MAX_WEIGHT)]


@with_config(ConfigDict(extra="forbid", strict=True, allow_inf_nan=False))
class PlacementWeights(TypedDict, total=False):
    """How much each placement criterion counts in a node's score, 0 to 1000; a criterion left out keeps its weight.

    One key per criterion of the decision engine (``orchestrator/decision/criteria``, a test keeps the two equal).
    A TypedDict rather than a model so an unknown name is refused at ``...weights.<name>`` and only the weights
    written are stored.
    """

    cost: Weight
    carbon: Weight
    balance: Weight
    latency: Weight
    energy: Weight


CRITERIA: tuple[str, ...] = tuple(PlacementWeights.__annotations__)
"""The names of the placement criteria, in the order the decision engine reports their scores."""

DEFAULT_WEIGHTS: dict[str, float] = {"cost": 1.0, "carbon": 1.0, "balance": 1.0, "latency": 1.0, "energy": 0.0}
"""Each criterion's weight when neither ``NEMO_WEIGHTS`` nor the workload sets it (``DEFAULT_WEIGHT`` for others).

Energy weighs 0: carbon is already that energy times the grid's intensity, so weighing both would count the watts
twice. Latency weighs 1 but changes nothing for a workload without ``placement.users`` (every cluster scores 1).
"""


class Optimize(StrEnum):
    """A workload's intent: a preset of weights (``OPTIMIZE_PRESETS``) its explicit ``weights`` may still adjust."""

    COST = "cost"
    CARBON = "carbon"
    LATENCY = "latency"
    BALANCED = "balanced"


OPTIMIZE_PRESETS: dict[Optimize, dict[str, float]] = {
    Optimize.COST: {"cost": 10.0, "carbon": 1.0, "balance": 1.0, "latency": 1.0, "energy": 0.0},
    Optimize.CARBON: {"cost": 1.0, "carbon": 10.0, "balance": 1.0, "latency": 1.0, "energy": 0.0},
    Optimize.LATENCY: {"cost": 1.0, "carbon": 1.0, "balance": 1.0, "latency": 10.0, "energy": 0.0},
    Optimize.BALANCED: dict(DEFAULT_WEIGHTS),
}
"""The weights each intent stands for; they replace ``NEMO_WEIGHTS`` for the criteria they name.

The favoured criterion weighs ten times each other one: it decides unless the others agree against it by a wide
margin, and the others still break its near-ties (the cheapest of two equally green clusters).
"""

MAX_USERS = 64
"""Users' locations per workload; enough for every region of a continent, small enough to score per decision."""

MAX_LATENCY_MS = 60_000.0
MAX_SPREAD_REPLICAS = 1000  # the most replicas a workload may have (DeploymentSpec.replicas)


class UserLocation(Spec):
    """Where some of a workload's users are: a region (as clusters name theirs) and their share of the traffic."""

    region: Region
    weight: float = Field(default=1.0, gt=0, le=MAX_WEIGHT, description="relative share of the users")


class SpreadBy(StrEnum):
    """What a spread constraint counts replicas per."""

    TIER = "tier"
    REGION = "region"
    CLUSTER = "cluster"


class DivisionMode(StrEnum):
    """How ``placement.division`` weighs clusters: as written, or by the replicas each has room for now."""

    STATIC = "static"
    DYNAMIC = "dynamic"


MAX_DIVISION_CLUSTERS = 1000


class Division(Spec):
    """Replicas divided across clusters by weight, like Karmada's Weighted division: each feasible cluster's share of
    ``replicas`` (largest remainder, ties by name), counting those already there. A preference: replicas go to the
    clusters below their share first; when those are full, the rest go where the scores say."""

    mode: Annotated[DivisionMode, Lax]
    weights: dict[Annotated[str, Field(min_length=1, max_length=63)], Annotated[float, Field(gt=0, le=MAX_WEIGHT)]] = (
        Field(default_factory=dict, max_length=MAX_DIVISION_CLUSTERS, description="static: weight per cluster name")
    )

    @model_validator(mode="after")
    def _weights_with_static_only(self) -> Division:
        if self.mode is DivisionMode.STATIC and not self.weights:
            raise ValueError("static division needs weights: {cluster: weight}")
        if self.mode is DivisionMode.DYNAMIC and self.weights:
            raise ValueError("dynamic division weighs clusters by their free capacity: give no weights")
        return self


class SpreadConstraint(Spec):
    """At most ``max`` (and, while others remain, at least ``min``) replicas of the workload per tier, region or
    cluster. ``min`` is a preference served first, ``max`` a hard limit: replicas that would break it wait."""

    by: Annotated[SpreadBy, Lax]
    min: int | None = Field(default=None, ge=0, le=MAX_SPREAD_REPLICAS)
    max: int | None = Field(default=None, ge=1, le=MAX_SPREAD_REPLICAS)

    @model_validator(mode="after")
    def _min_below_max(self) -> SpreadConstraint:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class AfterRecovery(StrEnum):
    """``placement.after_recovery``: what happens to the replicas the control plane moved off a cluster that left
    (NotReady, drained) once it is back (Ready, uncordoned)."""

    STAY = "stay"  # they stay where they were moved
    MOVE_BACK = "move_back"  # they move back, one at a time, if the cluster admits them (reason ``recovered``)


class PlacementConstraints(Spec):
    """Where a workload may run. Empty lists mean no restriction."""

    tiers: list[Annotated[Tier, Lax]] = Field(default_factory=list)
    regions: list[Region] = Field(default_factory=list)
    countries: list[CountryCode] = Field(
        default_factory=list, max_length=len(COUNTRY_CODES), description="data residency: ISO 3166-1 alpha-2, or EU"
    )
    architectures: list[Architecture] = Field(default_factory=list)
    node_labels: Labels = Field(default_factory=dict)
    clusters: list[Name] = Field(default_factory=list)
    tee: Annotated[TeeChoice, Lax] | None = Field(
        default=None, description="the TEE type the node must offer (tdx, sev-snp, sev, sgx, any); implies a TEE"
    )
    weights: PlacementWeights = Field(
        default_factory=lambda: PlacementWeights(),
        description="this workload's weights of the placement criteria, over those of NEMO_WEIGHTS and optimize",
    )
    optimize: Annotated[Optimize, Lax] | None = Field(
        default=None, description="intent: cost, carbon, latency or balanced, a preset of weights (see weights)"
    )
    users: list[UserLocation] = Field(
        default_factory=list, max_length=MAX_USERS, description="where the users are, for the latency criterion"
    )
    max_latency_ms: float | None = Field(
        default=None,
        gt=0,
        le=MAX_LATENCY_MS,
        description="filter: clusters whose users' weighted mean latency exceeds this are rejected (needs users)",
    )
    spread: list[SpreadConstraint] = Field(
        default_factory=list, max_length=len(SpreadBy), description="min/max replicas per tier, region or cluster"
    )
    division: Division | None = Field(
        default=None, description="replicas divided across clusters by static weights or by free capacity"
    )
    rebalance: Annotated[RebalancePolicy, Lax] = Field(
        default=RebalancePolicy.ALLOWED, description="whether the rebalancer may move its replicas: allowed or never"
    )
    after_recovery: Annotated[AfterRecovery, Lax] = Field(
        default=AfterRecovery.STAY,
        description="when a cluster its replicas were moved off (NotReady, drained) is back: stay where they are, "
        "or move_back to it one at a time, each if the cluster admits it then",
    )

    @field_validator("users")
    @classmethod
    def _one_entry_per_region(cls, value: list[UserLocation]) -> list[UserLocation]:
        regions = [u.region for u in value]
        if len(set(regions)) != len(regions):
            raise ValueError("each region once (add the weights of a repeated region together)")
        return value

    @field_validator("spread")
    @classmethod
    def _one_constraint_per_dimension(cls, value: list[SpreadConstraint]) -> list[SpreadConstraint]:
        dimensions = [c.by for c in value]
        if len(set(dimensions)) != len(dimensions):
            raise ValueError("one constraint per 'by' (tier, region, cluster)")
        return value

    @model_validator(mode="after")
    def _latency_needs_users(self) -> PlacementConstraints:
        if self.max_latency_ms is not None and not self.users:
            raise ValueError("max_latency_ms needs users: the latency is measured from their regions")
        return self


class DeploymentSpec(Spec):
    """How to run the workload: what to execute, how many, with which resources and isolation."""

    command: list[Annotated[str, Field(pattern=_NO_NUL)]] | None = Field(
        default=None, min_length=1, description="argv, for the local driver"
    )
    image: str | None = Field(default=None, min_length=1, description="container image, for Kubernetes")
    working_dir: str | None = Field(
        default=None, max_length=MAX_PATH_LENGTH, description="absolute and normalised: no '//', '.' or '..'"
    )
    replicas: int = Field(default=1, ge=0, le=1000)
    resources: Resources = Field(default_factory=Resources)
    ports: list[PortSpec] = Field(default_factory=lambda: [PortSpec()])
    env: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], Annotated[str, Field(pattern=_NO_NUL)]] = (
        Field(default_factory=dict)
    )
    isolation: Annotated[Isolation, Lax] = Isolation.STANDARD
    tee_required: bool = Field(default=False, description="needs a node with a TEE (implied by confidential)")
    stateful: bool = False
    health: HealthCheck = Field(default_factory=HealthCheck)
    metrics: MetricsEndpoint | None = Field(
        default=None, description="the workload's own Prometheus /metrics, scraped by the cluster's agent"
    )
    placement: PlacementConstraints = Field(default_factory=PlacementConstraints)

    @field_validator("working_dir")
    @classmethod
    def _absolute_normalised(cls, value: str | None) -> str | None:
        # A relative directory would resolve against the agent's cwd, which nobody chose; '..' or '//' would make
        # the data-directory check and the directory the replica gets disagree about which directory it is.
        if value is not None and ("\x00" in value or not _is_normalised(value)):
            raise ValueError("must be an absolute, normalised path (no '//', '.' or '..' segments, no NUL)")
        return value

    @model_validator(mode="after")
    def _something_to_run(self) -> DeploymentSpec:
        if self.command is None and self.image is None:
            raise ValueError("give a command (local driver) or an image (Kubernetes driver)")
        return self

    @field_validator("metrics")
    @classmethod
    def _metrics_on_a_declared_port(cls, value: MetricsEndpoint | None, info: ValidationInfo) -> MetricsEndpoint | None:
        # ports come before metrics, so they are validated already (absent from info.data when they were invalid)
        declared = [p.name for p in info.data.get("ports", [])]
        if value is not None and "ports" in info.data and value.port not in declared:
            raise ValueError(f"port {value.port!r} is not one of the declared ports {declared}")
        return value

    @property
    def needs_tee(self) -> bool:
        """Whether the workload may only run on a node with a trusted execution environment."""
        return self.tee_required or self.isolation is Isolation.CONFIDENTIAL or self.placement.tee is not None

    @property
    def accepted_tees(self) -> frozenset[TeeType]:
        """The TEE types a node must offer one of; empty when the workload needs no TEE."""
        if not self.needs_tee:
            return frozenset()
        wanted = self.placement.tee
        return TEE_TYPES if wanted is None or wanted is TeeChoice.ANY else frozenset({TeeType(wanted.value)})


def _is_normalised(path: str) -> bool:
    return path.startswith("/") and "//" not in path and posixpath.normpath(path) == path


def working_dir_in_data_dir(working_dir: str, data_dir: Path, workload: str) -> bool:
    """Whether ``working_dir``, its symlinks followed, is inside ``data_dir`` but not the workload's own checkout.

    ``workload`` is ``<namespace>/<name>``; its petition checkout (``DATA_DIR/sources/<namespace>/<name>``) is its own
    code, so it may be its working directory; nothing else in the data directory (the control plane's secrets) may.
    The one rule of the API (at apply) and of the local agent (before it runs a replica). Raises OSError when the path
    cannot be resolved (a directory that may not be entered, a link that may not be read): callers refuse it.
    """
    # resolved: a symlink (or /proc/self/root) must not lead into the data directory
    resolved = Path(os.path.realpath(working_dir))
    data = Path(os.path.realpath(data_dir))
    own_checkout = data.joinpath(SOURCES_DIR, *workload.split("/", 1))
    return resolved.is_relative_to(data) and not resolved.is_relative_to(own_checkout)


def _check_display_name(value: str) -> str:
    # Any text a person would call a service, on one line ("pp\n" is not a name).
    if is_dns_label(value):
        return value
    if not value.strip() or len(value) > 253:
        raise ValueError("must be a DNS label, or a display name of 1-253 characters that is not blank")
    if not is_one_line(value):
        raise ValueError(
            "must not contain control characters, line breaks, bidirectional overrides or invisible characters"
        )
    return value


NOT_RUNNABLE = "catalogue entry: needs a deployment section (or a package NEMO can run) to run"
"""The message of a workload registered without a deployment section."""


class WorkloadDescriptor(Spec):
    """What a user applies: a CMDT service descriptor, plus its deployment spec when it is to run.

    ``name`` is the workload's id, a DNS label. A name that is not one (``Name``, ``My Service``) is kept as
    ``display_name`` and the id is derived from it (:func:`derived_name`), so the seed's descriptors apply as written.
    """

    name: Annotated[str, Field(min_length=1), AfterValidator(_check_display_name)]
    display_name: Annotated[str, AfterValidator(_check_display_name)] | None = Field(
        default=None, description="the name as written, when it is not a DNS label"
    )
    namespace: Name = "default"
    description: str = ""
    services: list[Service] = Field(default_factory=list)
    deployment: DeploymentSpec | None = Field(
        default=None, description="how to run it; without it the workload is a catalogue entry (phase Registered)"
    )

    @model_validator(mode="after")
    def _derive_name(self) -> WorkloadDescriptor:
        if not is_dns_label(self.name):
            if self.display_name is not None and self.display_name != self.name:
                raise ValueError(
                    f"name {self.name!r} is not a DNS label, so it is the display name; "
                    f"it contradicts display_name {self.display_name!r}"
                )
            self.display_name, self.name = self.name, derived_name(self.name)
        return self

    @property
    def runnable(self) -> bool:
        """Whether the workload has something to run (else it is a catalogue entry)."""
        return self.deployment is not None


class WorkloadPhase(StrEnum):
    """Lifecycle of a workload as a whole."""

    PENDING = "Pending"  # no placement yet (fits nowhere, or not decided)
    DEPLOYING = "Deploying"  # placed; not all desired replicas running
    RUNNING = "Running"
    DEGRADED = "Degraded"  # was running, some replicas are not
    DELETING = "Deleting"
    REGISTERED = "Registered"  # a catalogue entry: described, nothing to run


class ReplicaPhase(StrEnum):
    """Lifecycle of one replica."""

    SCHEDULED = "Scheduled"  # assigned to a node, not yet reported by the cluster
    STARTING = "Starting"
    RUNNING = "Running"
    CRASHED = "Crashed"  # exited; the cluster restarts it with backoff
    STOPPING = "Stopping"
    REJECTED = "Rejected"  # its cluster refused it (cannot run it as specified); never sent there again
    # Shown, never stored: its cluster is Unmanaged, so nobody observes it (the stored phase is its last report)
    UNKNOWN = "Unknown"


class ReplicaStatus(Model):
    """One replica: where it should run and what the cluster last reported about it."""

    id: str
    index: int
    version: int
    cluster: str
    node: str
    phase: ReplicaPhase
    url: str | None = None
    pid: int | None = None
    restarts: int = 0
    cpu_percent: float | None = None
    memory_mib: float | None = None
    message: str = ""
    updated_at: datetime


class WorkloadStatus(Model):
    """A workload: its descriptor, version, phase and replicas, desired against actual."""

    name: str
    display_name: str | None = Field(default=None, description="the descriptor's name as written, when not the id")
    namespace: str
    version: int
    phase: WorkloadPhase
    message: str = ""
    descriptor: WorkloadDescriptor | None = Field(
        description="None when the stored descriptor no longer passes this version's checks (it was stored by an "
        "older NEMO): ``message`` says which field; apply it again, corrected, or delete the workload"
    )
    desired_replicas: int | None = Field(
        description="how many replicas the descriptor asks for (0 while deleting, or for a catalogue entry); None "
        "when the stored descriptor no longer passes this version's checks: this version cannot tell"
    )
    ready_replicas: int
    replicas: list[ReplicaStatus]
    created_at: datetime
    updated_at: datetime
