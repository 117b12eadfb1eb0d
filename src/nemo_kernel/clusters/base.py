"""The ClusterDriver protocol: how the orchestration engine tells one cluster what to run, and learns what runs.

Drivers are level-based: the engine says which replicas should exist (``ensure_replica`` is idempotent,
``remove_replica`` too) and reads back the cluster's report with ``status``: whole, or what changed since a
revision it returned (``clusters.revisions`` keeps such revisions for a driver). A driver never keeps
control-plane state; a cluster (or its agent) keeps its own, so that a control-plane restart adopts
what is already running.

A :class:`DriverProvider` opens the drivers of one :class:`~nemo_kernel.domain.DriverKind` and owns what runs
them (agent processes, API clients, a simulation); ``clusters.registry`` maps each kind to its provider.
Optional abilities of a driver (state hand-off, checkpoints, link emulation) are the small protocols of
``clusters.capabilities``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from pydantic import Field

from nemo_kernel.domain import (
    ClusterSpec,
    HealthCheck,
    Isolation,
    MetricsEndpoint,
    Model,
    PortSpec,
    ReplicaPhase,
    Resources,
)


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
    metrics: MetricsEndpoint | None = Field(default=None, description="where the replica serves its own series")


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
    """A heartbeat: the cluster's nodes and every replica it runs (``full``), or what changed since a revision.

    A report with ``full=False`` answers ``status(since)``: only the replicas whose reportable state (phase, url,
    pid, restarts, exit code, node, message) changed since, the nodes whose readiness changed, and in ``gone`` the
    replicas removed since. Usage alone is not a change.
    """

    cluster: str
    nodes: list[NodeReport]
    replicas: list[ReplicaReport]
    sandbox: str | None = Field(
        default=None, description="how replicas are kept from the control plane's data: none, user, namespace"
    )
    revision: str | None = Field(
        default=None, max_length=200, description="opaque; pass it as ``since``; None: the driver knows none"
    )
    full: bool = True
    gone: list[str] = Field(default_factory=list, description="replica ids removed since (partial reports)")


class ClusterDriver(Protocol):
    """One cluster, as the orchestration engine drives it."""

    async def status(self, since: str | None = None) -> ClusterReport:
        """Heartbeat and report; raises :class:`ClusterUnreachable`.

        A full report unless ``since`` is a revision this driver returned and still knows; then only what changed
        since (``full=False``). A driver that knows no revisions returns full reports with ``revision=None``, and
        the engine then never passes ``since``.
        """

    async def ensure_replica(self, spec: ReplicaSpec) -> None:
        """Make sure the replica runs as specified (idempotent); raises :class:`ClusterUnreachable`."""

    async def remove_replica(self, replica_id: str) -> None:
        """Stop and forget the replica (idempotent: unknown ids are fine); raises :class:`ClusterUnreachable`."""

    async def close(self) -> None:
        """Release connections (the cluster itself keeps running)."""


class DriverProvider(Protocol):
    """Opens drivers for the clusters of one kind and owns what runs them (agents, API clients, a simulation).

    The Resource Manager calls it from one event loop; a provider is constructed as ``Provider(settings)`` by
    the registry, or passed in ready-made (tests, embedders).
    """

    async def open(self, spec: ClusterSpec) -> ClusterDriver:
        """A driver for cluster ``spec``, starting what runs it or adopting what already does; raises on failure
        (the Resource Manager tries again on its next pass)."""

    async def revive(self, spec: ClusterSpec) -> ClusterDriver | None:
        """After a failed heartbeat: a fresh driver if what runs the cluster could be restarted, None if there is
        nothing to restart (the cluster then goes NotReady once silent for long enough); may raise, as ``open``."""

    async def forget(self, name: str) -> None:
        """Cluster ``name`` was removed: stop what runs it and every replica it runs, and delete its state."""

    async def close(self) -> None:
        """The control plane stops: release what this process holds; clusters and their replicas keep running."""


@runtime_checkable
class SupportsAgentPid(Protocol):
    """A provider whose clusters are run by a local process (operators and tests stop it to simulate an outage)."""

    def pid_of(self, name: str) -> int | None:
        """Process id of the process running cluster ``name``, or None when none runs."""
