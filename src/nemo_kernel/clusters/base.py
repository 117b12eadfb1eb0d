"""The ClusterDriver protocol: how the orchestration engine tells one cluster what to run, and learns what runs.

Drivers are level-based: the engine says which replicas should exist (``ensure_replica`` is idempotent,
``remove_replica`` too) and reads back the cluster's whole report with ``status``. A driver never keeps
control-plane state; a cluster (or its agent) keeps its own, so that a control-plane restart adopts
what is already running.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from pydantic import Field

from nemo_kernel.domain import HealthCheck, Isolation, Model, PortSpec, ReplicaPhase, Resources


class ClusterUnreachable(Exception):
    """The cluster did not answer (timeout, connection refused, bad credentials)."""


class ReplicaSpec(Model):
    """One replica the engine wants on one node of the cluster."""

    id: str = Field(pattern=r"^[a-z0-9][-a-z0-9.]{0,120}$")
    workload: str = Field(description="'<namespace>/<name>'")
    version: int
    index: int
    node: str
    command: list[str] | None = None
    image: str | None = None
    working_dir: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    ports: list[PortSpec] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    isolation: Isolation = Isolation.STANDARD
    runtime: str | None = Field(default=None, description="runtime class chosen on the node")
    health: HealthCheck = Field(default_factory=HealthCheck)


class ReplicaReport(Model):
    """What the cluster reports about one replica it runs."""

    id: str
    node: str
    phase: ReplicaPhase
    url: str | None = None
    pid: int | None = None
    restarts: int = 0
    exit_code: int | None = None
    cpu_percent: float | None = None
    memory_mib: float | None = None
    started_at: datetime | None = None
    message: str = ""


class NodeReport(Model):
    """What the cluster reports about one node."""

    name: str
    ready: bool = True
    cpu_percent: float | None = None
    memory_mib: float | None = None


class ClusterReport(Model):
    """A heartbeat: the cluster's nodes and every replica it runs."""

    cluster: str
    nodes: list[NodeReport]
    replicas: list[ReplicaReport]
    sandbox: str | None = Field(
        default=None, description="how replicas are kept from the control plane's data: none, user, namespace"
    )


class ClusterDriver(Protocol):
    """One cluster, as the orchestration engine drives it."""

    async def status(self) -> ClusterReport:
        """Heartbeat and full report; raises :class:`ClusterUnreachable`."""

    async def ensure_replica(self, spec: ReplicaSpec) -> None:
        """Make sure the replica runs as specified (idempotent); raises :class:`ClusterUnreachable`."""

    async def remove_replica(self, replica_id: str) -> None:
        """Stop and forget the replica (idempotent: unknown ids are fine); raises :class:`ClusterUnreachable`."""

    async def close(self) -> None:
        """Release connections (the cluster itself keeps running)."""
