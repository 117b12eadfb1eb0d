"""Reads of the control plane's state, shared by the API, the CLI (through the API), the bus and the web pages.

A view reads in one transaction and returns domain models; it never changes anything (changes are
:mod:`nemo_kernel.orchestrator.commands`).
"""

from __future__ import annotations

from nemo_kernel.orchestrator.decision import DecisionEngine
from nemo_kernel.orchestrator.key_directory import StoredKeyDirectory
from nemo_kernel.orchestrator.views.clusters import ClusterViews, SandboxOf
from nemo_kernel.orchestrator.views.gateway import GatewayViews
from nemo_kernel.orchestrator.views.modules import ModuleEntry, ModuleKey, ModuleViews
from nemo_kernel.orchestrator.views.slas import SlaPage, SlaReport, SlaViews, ViolationPage
from nemo_kernel.orchestrator.views.workloads import (
    PlacementExplanation,
    ReplicaPlacement,
    StoredDecision,
    WorkloadViews,
)
from nemo_kernel.store import Database

__all__ = [
    "ClusterViews",
    "GatewayViews",
    "ModuleEntry",
    "ModuleKey",
    "ModuleViews",
    "PlacementExplanation",
    "ReplicaPlacement",
    "SandboxOf",
    "SlaPage",
    "SlaReport",
    "SlaViews",
    "StoredDecision",
    "Views",
    "ViolationPage",
    "WorkloadViews",
]


class Views:
    """Every read of the control plane's state, by what it shows."""

    def __init__(
        self,
        db: Database,
        sandbox_of: SandboxOf,
        directory: StoredKeyDirectory,
        decisions: DecisionEngine | None = None,
    ) -> None:
        """``sandbox_of`` tells how a cluster's running agent confines replicas (live, not stored); ``directory``
        is the module key directory the bus verifies against; ``decisions`` is the engine placement uses, to
        explain every node's verdict on request (an engine with the default weights if not given)."""
        self.clusters = ClusterViews(db, sandbox_of)
        self.modules = ModuleViews(directory)
        self.workloads = WorkloadViews(db, decisions)
        self.gateway = GatewayViews(db)
        self.slas = SlaViews(db)
