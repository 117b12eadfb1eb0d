"""Events: every state change is stored, then published on the bus under its routing key."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from nemo_kernel.domain.common import Model
from nemo_kernel.domain.workload import WorkloadPhase


class EventKind(StrEnum):
    """Every kind of event the control plane records; the value is its bus routing key, ``<domain>.<event>``.

    Subscribers (modules on the bus, reactions in the control plane) bind to these, so a kind is renamed here or
    nowhere.
    """

    CONTROLPLANE_BOOTSTRAPPED = "controlplane.bootstrapped"

    CLUSTER_REGISTERED = "cluster.registered"
    CLUSTER_REMOVED = "cluster.removed"
    CLUSTER_CORDONED = "cluster.cordoned"
    CLUSTER_DRAINING = "cluster.draining"
    CLUSTER_UNCORDONED = "cluster.uncordoned"
    CLUSTER_READY = "cluster.ready"
    CLUSTER_NOT_READY = "cluster.not_ready"
    CLUSTER_FAILED = "cluster.failed"  # its stored spec cannot be read: isolated, the loop goes on
    CLUSTER_LINKS_CHANGED = "cluster.links_changed"  # its emulated links (to the control plane, to peers)
    CLUSTER_FAULT_STARTED = "cluster.fault_started"  # an operator injected a fault (nemo cluster fault)
    CLUSTER_FAULT_ENDED = "cluster.fault_ended"  # its time was up (or the control plane restarted without it)
    CLUSTER_MOVES_BACK_WAITING = "cluster.moves_back_waiting"  # it recovered: workloads wait for a migration slot

    WORKLOAD_REGISTERED = "workload.registered"
    WORKLOAD_UPDATED = "workload.updated"
    WORKLOAD_PENDING = "workload.pending"
    WORKLOAD_DEPLOYING = "workload.deploying"
    WORKLOAD_RUNNING = "workload.running"
    WORKLOAD_DEGRADED = "workload.degraded"
    WORKLOAD_DELETING = "workload.deleting"
    WORKLOAD_DELETED = "workload.deleted"
    WORKLOAD_FAILED = "workload.failed"  # one step of a pass failed on it: isolated, the loop goes on

    PLACEMENT_DECIDED = "placement.decided"
    PLACEMENT_PENDING = "placement.pending"

    DEPLOYMENT_APPLIED = "deployment.applied"
    DEPLOYMENT_ROLLED_OUT = "deployment.rolled_out"

    REPLICA_SCHEDULED = "replica.scheduled"
    REPLICA_STARTED = "replica.started"
    REPLICA_CRASHED = "replica.crashed"
    REPLICA_RESCHEDULED = "replica.rescheduled"
    REPLICA_MOVING_BACK = "replica.moving_back"  # its cluster recovered: a migration (reason recovered) returns it
    REPLICA_NOT_MOVED_BACK = "replica.not_moved_back"  # its cluster recovered but does not admit it: it stays
    REPLICA_REPLACED = "replica.replaced"
    REPLICA_REJECTED = "replica.rejected"
    REPLICA_REMOVED = "replica.removed"

    INTENT_ACCEPTED = "intent.accepted"
    INTENT_REJECTED = "intent.rejected"

    MIGRATION_STARTED = "migration.started"
    MIGRATION_PROGRESSED = "migration.progressed"  # it entered a new phase
    MIGRATION_COMPLETED = "migration.completed"
    MIGRATION_FAILED = "migration.failed"  # failed or rolled back: ``data.phase`` says which

    REBALANCE_PLANNED = "rebalance.planned"  # a plan was made (dry run or to apply): its moves and saving
    REBALANCE_APPLIED = "rebalance.applied"  # every move of an applied plan ended (done, skipped or failed)
    REBALANCE_FAILED = "rebalance.failed"  # the solve failed or was infeasible: nothing moved

    SLA_APPLIED = "sla.applied"  # created or a new version stored
    SLA_ACTIVATED = "sla.activated"  # Draft -> Active: its workload exists and is deployed
    SLA_VIOLATED = "sla.violated"  # Active -> Violated: an SLO is outside its objective
    SLA_RECOVERED = "sla.recovered"  # Violated -> Active: every SLO back within its objective
    SLA_BREACH_PREDICTED = "sla.breach_predicted"  # an SLO's trend crosses its objective soon (time, confidence)
    SLA_TERMINATED = "sla.terminated"  # deleted: no longer evaluated; its history stays
    SLA_ACTION = "sla.action"  # the closed loop acted on an SLA (audit record in sla_actions)

    # Findings of the analytics engine (metrics.findings), on the workload of a replica or the cluster of a node.
    ANALYTICS_BOTTLENECK = "analytics.bottleneck"  # CPU or memory at or above the threshold for NEMO_BOTTLENECK_FOR
    ANALYTICS_BOTTLENECK_CLEARED = "analytics.bottleneck_cleared"  # that episode ended
    ANALYTICS_ANOMALY = "analytics.anomaly"  # a series far outside its recent band (once per episode)

    REACTION_FAILED = "reaction.failed"  # a reaction gave up on an event after its retries: recorded, the loop goes on

    @classmethod
    def for_phase(cls, phase: WorkloadPhase) -> EventKind:
        """The event recorded when a workload enters ``phase``."""
        return _PHASE_EVENTS[phase]


_PHASE_EVENTS: dict[WorkloadPhase, EventKind] = {
    WorkloadPhase.REGISTERED: EventKind.WORKLOAD_REGISTERED,
    WorkloadPhase.PENDING: EventKind.WORKLOAD_PENDING,
    WorkloadPhase.DEPLOYING: EventKind.WORKLOAD_DEPLOYING,
    WorkloadPhase.RUNNING: EventKind.WORKLOAD_RUNNING,
    WorkloadPhase.DEGRADED: EventKind.WORKLOAD_DEGRADED,
    WorkloadPhase.DELETING: EventKind.WORKLOAD_DELETING,
}


class Event(Model):
    """A stored state change. ``kind`` is the bus routing key, ``<domain>.<event>``."""

    id: int
    kind: str = Field(pattern=r"^[a-z_]+(\.[a-z_]+)+$")
    subject: str = Field(description="what it is about: 'cluster/<name>' or 'workload/<ns>/<name>'")
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
