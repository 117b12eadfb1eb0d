"""Migrations: moving one replica of a workload to another node, cluster or runtime, with its phases and timings.

State machine (one stored record, advanced by the control plane's migration loop; see ``nemo_kernel.migration``)::

    Planned -> Preparing -> [Transferring] -> Switching -> Cleaning -> Completed
        \\           \\             \\             (any failure before Switching)
         `-----------`-------------`---------> RolledBack (the source serves as before, with its state)
    Failed: a failure after the switch (the target serves; only the source's removal is left), or a recreate
    whose target cannot run (its source is already stopped: the workload is queued for placement instead).
    A rollback of a frozen source stays in its phase with ``rolling_back`` until the source is thawed.

``recreate`` skips Transferring and stops the source before the target starts (the seed's baseline);
``stateless`` starts the target, switches the gateway's traffic to it, drains and stops the source;
``stateful`` adds Transferring: full export -> import, then freeze -> delta -> import, then the switch.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from nemo_kernel.domain.common import Lax, Model, Name, Spec

#: ``namespace/name`` of a workload, or a bare name in the ``default`` namespace.
WORKLOAD_REF = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
REPLICA_ID = r"^[a-z0-9][-a-z0-9.]{0,120}$"
RUNTIME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class MigrationMode(StrEnum):
    """How a replica moves."""

    RECREATE = "recreate"  # stop the source, then start the target (the seed's baseline)
    STATELESS = "stateless"  # make-before-break: start the target, switch traffic, drain, stop the source
    STATEFUL = "stateful"  # stateless plus the application state hand-off (export, freeze, delta, import)


class MigrationPhase(StrEnum):
    """Where a migration is; the last three are final."""

    PLANNED = "Planned"
    PREPARING = "Preparing"
    TRANSFERRING = "Transferring"
    SWITCHING = "Switching"
    CLEANING = "Cleaning"
    COMPLETED = "Completed"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"

    @property
    def final(self) -> bool:
        """Whether nothing more happens to a migration in this phase."""
        return self in (MigrationPhase.COMPLETED, MigrationPhase.FAILED, MigrationPhase.ROLLED_BACK)


ACTIVE_PHASES: tuple[str, ...] = tuple(p.value for p in MigrationPhase if not p.final)
"""Phases of a migration still running (a workload has at most one)."""


class MigrationTarget(Spec):
    """Where to: a cluster, optionally one of its nodes and a runtime class. Empty fields are chosen by NEMO."""

    cluster: Name | None = None
    node: Name | None = None
    runtime: Annotated[str, Field(pattern=RUNTIME)] | None = None


class MigrationRequest(Spec):
    """``POST /api/v1/migrations``: move ``replica`` (default: the workload's first) of ``workload``."""

    workload: str = Field(pattern=WORKLOAD_REF, max_length=127, description="'namespace/name' or 'name' (default)")
    replica: Annotated[str, Field(pattern=REPLICA_ID)] | None = None
    to: MigrationTarget
    mode: Annotated[MigrationMode, Lax] | None = Field(
        default=None, description="default: stateful when the workload is stateful, else stateless"
    )


class PhaseTiming(Model):
    """When a migration entered and left one phase."""

    phase: MigrationPhase
    started_at: datetime
    ended_at: datetime | None = None


class MigrationStatus(Model):
    """A stored migration as the API answers it."""

    id: int
    workload: str
    mode: MigrationMode
    phase: MigrationPhase
    source_replica: str
    source_cluster: str
    source_node: str
    target_replica: str | None
    target_cluster: str
    target_node: str
    target_runtime: str | None
    message: str
    requested_by: str
    reason: str | None = Field(
        default=None,
        description="why the engine moved the replica (drained, not ready; recovered: back to a cluster that "
        "recovered, placement.after_recovery move_back); null for a requested move",
    )
    timings: list[PhaseTiming]
    downtime_ms: float | None = Field(
        description="stateful: from the source's freeze to the switch's commit (the window writes are refused); "
        "recreate: from the source's stop to the switch; stateless: 0 (both serve until the switch)"
    )
    created_at: datetime
    updated_at: datetime
