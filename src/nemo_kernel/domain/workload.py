"""Workloads: the CMDT service descriptor (seed section 6.2) extended with a deployment spec."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from nemo_kernel.domain.cluster import Tier
from nemo_kernel.domain.common import Labels, Model, Name


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


class Microservice(Model):
    """A microservice of a CMDT service, with the endpoints through which it is reached."""

    name: str = Field(alias="Name", min_length=1)
    description: str = Field(default="", alias="Description")
    endpoints: list[str] = Field(default_factory=list, alias="Endpoints")


class Service(Model):
    """A service of a CMDT descriptor."""

    name: str = Field(alias="Name", min_length=1)
    description: str = Field(default="", alias="Description")
    package: str | None = Field(default=None, alias="Package")
    properties: list[dict[str, str | int | float | bool]] = Field(default_factory=list, alias="Properties")
    microservices: list[Microservice] = Field(default_factory=list, alias="Microservices")


class Resources(Model):
    """Resources each replica requests; capacity accounting and placement use these."""

    cpu: float = Field(default=0.1, gt=0, description="cores")
    memory_mib: int = Field(default=64, gt=0)


class PortSpec(Model):
    """A port the workload listens on; the local driver gives each replica its own host port."""

    name: str = Field(default="http", pattern=r"^[a-z][a-z0-9-]{0,14}$")
    port: int = Field(default=8080, ge=1, le=65535, description="container port (Kubernetes driver)")
    protocol: str = Field(default="TCP", pattern=r"^(TCP|UDP)$")


class HealthCheck(Model):
    """How to tell a replica is healthy: an HTTP GET on the first port, or the process being alive."""

    http_path: str | None = Field(default=None, pattern=r"^/")
    timeout_seconds: float = Field(default=1.0, gt=0, le=30)


class PlacementConstraints(Model):
    """Where a workload may run. Empty lists mean no restriction."""

    tiers: list[Tier] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    countries: list[str] = Field(default_factory=list, description="data residency: ISO 3166-1 alpha-2")
    architectures: list[str] = Field(default_factory=list)
    node_labels: Labels = Field(default_factory=dict)
    clusters: list[str] = Field(default_factory=list)

    @field_validator("countries")
    @classmethod
    def _iso_countries(cls, value: list[str]) -> list[str]:
        for code in value:
            if len(code) != 2 or not code.isalpha() or not code.isupper():
                raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
        return value


class DeploymentSpec(Model):
    """How to run the workload: what to execute, how many, with which resources and isolation."""

    command: list[str] | None = Field(default=None, min_length=1, description="argv, for the local driver")
    image: str | None = Field(default=None, min_length=1, description="container image, for Kubernetes")
    working_dir: str | None = None
    replicas: int = Field(default=1, ge=0, le=1000)
    resources: Resources = Field(default_factory=Resources)
    ports: list[PortSpec] = Field(default_factory=lambda: [PortSpec()])
    env: dict[str, str] = Field(default_factory=dict)
    isolation: Isolation = Isolation.STANDARD
    tee_required: bool = Field(default=False, description="needs a node with a TEE (implied by confidential)")
    stateful: bool = False
    health: HealthCheck = Field(default_factory=HealthCheck)
    placement: PlacementConstraints = Field(default_factory=PlacementConstraints)

    @model_validator(mode="after")
    def _something_to_run(self) -> DeploymentSpec:
        if self.command is None and self.image is None:
            raise ValueError("give a command (local driver) or an image (Kubernetes driver)")
        return self

    @property
    def needs_tee(self) -> bool:
        """Whether the workload may only run on a node with a trusted execution environment."""
        return self.tee_required or self.isolation is Isolation.CONFIDENTIAL


class WorkloadDescriptor(Model):
    """What a user applies: a CMDT service descriptor plus its deployment spec."""

    name: Name
    namespace: Name = "default"
    description: str = ""
    services: list[Service] = Field(default_factory=list)
    deployment: DeploymentSpec


class WorkloadPhase(StrEnum):
    """Lifecycle of a workload as a whole."""

    PENDING = "Pending"  # no placement yet (fits nowhere, or not decided)
    DEPLOYING = "Deploying"  # placed; not all desired replicas running
    RUNNING = "Running"
    DEGRADED = "Degraded"  # was running, some replicas are not
    DELETING = "Deleting"


class ReplicaPhase(StrEnum):
    """Lifecycle of one replica."""

    SCHEDULED = "Scheduled"  # assigned to a node, not yet reported by the cluster
    STARTING = "Starting"
    RUNNING = "Running"
    CRASHED = "Crashed"  # exited; the cluster restarts it with backoff
    STOPPING = "Stopping"


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
    namespace: str
    version: int
    phase: WorkloadPhase
    message: str = ""
    descriptor: WorkloadDescriptor
    desired_replicas: int
    ready_replicas: int
    replicas: list[ReplicaStatus]
    created_at: datetime
    updated_at: datetime
