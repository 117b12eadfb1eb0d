"""The front door of every state change: one command per operation, shared by the API, the CLI (through the API),
the bus and the web pages.

A command validates its input whole, writes in one transaction (with the events the change records), then wakes
the reconcile loop when the change is desired state it must carry out. Nothing is written when validation fails.
Reads go through :mod:`nemo_kernel.orchestrator.views`. Each group of commands is one module with one reason to
change; a new operation is a method in its group, or a new group module plus one line here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nemo_kernel.orchestrator.commands.base import Wake
from nemo_kernel.orchestrator.commands.clusters import ClusterCommands
from nemo_kernel.orchestrator.commands.faults import FaultCommands
from nemo_kernel.orchestrator.commands.gateway import GatewayCommands
from nemo_kernel.orchestrator.commands.migrations import MIGRATE_INTENT, MigrationCommands
from nemo_kernel.orchestrator.commands.modules import ModuleCommands, module_keys, raw_public_key
from nemo_kernel.orchestrator.commands.rebalance import REBALANCER, RebalanceCommands, RebalanceSettings
from nemo_kernel.orchestrator.commands.slas import SlaCommands
from nemo_kernel.orchestrator.commands.workloads import WorkloadCommands
from nemo_kernel.orchestrator.decision import DecisionEngine
from nemo_kernel.orchestrator.intake import Intake
from nemo_kernel.orchestrator.key_directory import StoredKeyDirectory
from nemo_kernel.orchestrator.rebalance import RebalanceLimits
from nemo_kernel.orchestrator.resources import ResourceManager
from nemo_kernel.store import Database

__all__ = [
    "MIGRATE_INTENT",
    "REBALANCER",
    "ClusterCommands",
    "Commands",
    "FaultCommands",
    "GatewayCommands",
    "MigrationCommands",
    "ModuleCommands",
    "RebalanceCommands",
    "RebalanceSettings",
    "SlaCommands",
    "Wake",
    "WorkloadCommands",
    "module_keys",
    "raw_public_key",
]


class Commands:
    """Every state-changing operation of the control plane, by what it changes."""

    def __init__(
        self,
        db: Database,
        wake: Wake,
        *,
        intake: Intake,
        directory: StoredKeyDirectory,
        carbon_roots: Sequence[Path] = (),
        resources: ResourceManager,
        decisions: DecisionEngine | None = None,
        webhook_hosts: Sequence[str] = (),
        rebalance: RebalanceSettings | None = None,
    ) -> None:
        """``wake`` asks for a reconcile pass (safe from any thread); ``intake`` validates workloads and petitions;
        ``directory`` is the module key directory the bus verifies against; ``carbon_roots`` are the directories
        clusters' carbon intensity files may be in (``NEMO_CARBON_DATA_ROOTS``); ``resources`` holds the clusters'
        drivers (faults are injected through them); ``decisions`` checks migration targets (an engine with the
        default weights and criteria unless given); ``webhook_hosts`` the hosts SLA webhooks may name
        (``NEMO_WEBHOOK_HOSTS``); ``rebalance`` holds the rebalancer's limits and cooldown (``NEMO_REBALANCE_*``;
        their defaults unless given)."""
        self.clusters = ClusterCommands(db, wake, carbon_roots)
        self.faults = FaultCommands(db, wake, resources)
        self.workloads = WorkloadCommands(db, wake, intake)
        self.modules = ModuleCommands(directory)
        self.gateway = GatewayCommands(db)
        engine = decisions or DecisionEngine()
        self.migrations = MigrationCommands(db, wake, engine)
        self.rebalance = RebalanceCommands(
            db, wake, engine, self.migrations, rebalance or RebalanceSettings(RebalanceLimits(), cooldown_s=3600.0)
        )
        self.slas = SlaCommands(db, webhook_hosts)
