"""Reads of the control plane's state, shared by the API, the CLI (through the API), the bus and the web pages.

A view reads in one transaction and returns domain models; it never changes anything (changes are
:mod:`nemo_kernel.orchestrator.commands`).
"""

from __future__ import annotations

from collections.abc import Callable

from nemo_kernel.metrics import MetricsReader, MetricsUnavailable
from nemo_kernel.orchestrator.decision import DecisionEngine
from nemo_kernel.orchestrator.key_directory import StoredKeyDirectory
from nemo_kernel.orchestrator.views.clusters import ClusterViews, LastHeartbeatOf, SandboxOf, never_heard
from nemo_kernel.orchestrator.views.gateway import GatewayViews
from nemo_kernel.orchestrator.views.metrics import (
    ClusterTop,
    ClusterUsage,
    MetricsViews,
    NodeTop,
    NodeUsage,
    ReplicaUsage,
    WorkloadMetrics,
    WorkloadTop,
    WorkloadUsage,
)
from nemo_kernel.orchestrator.views.migrations import MigrationViews
from nemo_kernel.orchestrator.views.modules import ModuleEntry, ModuleKey, ModuleViews
from nemo_kernel.orchestrator.views.rebalances import RebalanceViews
from nemo_kernel.orchestrator.views.slas import SlaPage, SlaReport, SlaViews, ViolationPage
from nemo_kernel.orchestrator.views.workloads import (
    PlacementExplanation,
    ReplicaPlacement,
    StoredDecision,
    WorkloadViews,
)
from nemo_kernel.store import Database

__all__ = [
    "ClusterTop",
    "ClusterUsage",
    "ClusterViews",
    "GatewayViews",
    "MetricsViews",
    "MigrationViews",
    "ModuleEntry",
    "ModuleKey",
    "ModuleViews",
    "NodeTop",
    "NodeUsage",
    "PlacementExplanation",
    "RebalanceViews",
    "ReplicaPlacement",
    "ReplicaUsage",
    "SandboxOf",
    "SlaPage",
    "SlaReport",
    "SlaViews",
    "StoredDecision",
    "Views",
    "ViolationPage",
    "WorkloadMetrics",
    "WorkloadTop",
    "WorkloadUsage",
    "WorkloadViews",
]


def _no_metrics() -> MetricsReader:
    raise MetricsUnavailable("this control plane has no analytics engine")


class Views:
    """Every read of the control plane's state, by what it shows."""

    def __init__(
        self,
        db: Database,
        sandbox_of: SandboxOf,
        directory: StoredKeyDirectory,
        decisions: DecisionEngine | None = None,
        metrics: Callable[[], MetricsReader] = _no_metrics,
        last_heartbeat_of: LastHeartbeatOf = never_heard,
    ) -> None:
        """``sandbox_of`` tells how a cluster's running agent confines replicas (live, not stored); ``directory``
        is the module key directory the bus verifies against; ``decisions`` is the engine placement uses, to
        explain every node's verdict on request (an engine with the default weights if not given); ``metrics``
        returns the analytics engine's current reader (without one, metrics views answer
        :class:`MetricsUnavailable`); ``last_heartbeat_of`` tells when a cluster last answered the running control
        plane (the stored time otherwise)."""
        self.clusters = ClusterViews(db, sandbox_of, last_heartbeat_of)
        self.modules = ModuleViews(directory)
        self.workloads = WorkloadViews(db, decisions)
        self.gateway = GatewayViews(db)
        self.metrics = MetricsViews(metrics, self.workloads)
        self.migrations = MigrationViews(db)
        self.rebalances = RebalanceViews(db)
        self.slas = SlaViews(db)
