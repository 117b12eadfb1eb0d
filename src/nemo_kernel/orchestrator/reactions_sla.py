"""PPEF's closed loop: the SLA's policies acting on ``sla.breach_predicted`` and ``sla.violated``.

The SLO loop publishes each of these once per episode (a forecast that starts, an SLA going Active -> Violated):
that is the hysteresis. Here, each policy of the SLA whose trigger and SLOs match acts, unless the same action
ran for this SLA within its ``cooldown``; every act (or decision not to act) is an audit record
(``sla_actions``, event ``sla.action``) with what was predicted; the SLO loop fills in what happened after.

- ``scale_out``: the workload's next version with ``replicas + step``, at most ``max_replicas`` (a new version:
  reconcile rolls it out);
- ``notify`` and ``notify_only``: the ``sla.action`` event itself, which the outbox publishes on the bus; a
  ``notify`` policy with a ``webhook`` is recorded *pending*, and the SLA action runner
  (``orchestrator/sla_actions.py``) POSTs it, since a reaction never calls the network;
- ``move``: recorded *pending*; the runner re-places the workload's replica on a cluster the decision engine
  prefers for the SLO's kind, through the migration service (``MigrationCommands.start``, its own transaction).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from nemo_kernel.domain import Event, EventKind, WorkloadDescriptor, utcnow
from nemo_kernel.domain.sla import Policy, PolicyAction, PolicyTrigger, SlaSpec, duration_seconds
from nemo_kernel.orchestrator.reactions import reactions
from nemo_kernel.ppef.sli import threshold_of
from nemo_kernel.store import slas as store
from nemo_kernel.store import workloads
from nemo_kernel.store.errors import NotFound
from nemo_kernel.store.tables import SlaRow

_TRIGGERS = {
    EventKind.SLA_BREACH_PREDICTED.value: PolicyTrigger.PREDICTED,
    EventKind.SLA_VIOLATED.value: PolicyTrigger.VIOLATED,
}


@reactions.on(EventKind.SLA_BREACH_PREDICTED, retries=3)
def act_on_predicted_breach(s: Session, event: Event) -> None:
    """The SLA's policies for a predicted breach."""
    _act(s, event)


@reactions.on(EventKind.SLA_VIOLATED, retries=3)
def act_on_violation(s: Session, event: Event) -> None:
    """The SLA's policies for a violation."""
    _act(s, event)


def _act(s: Session, event: Event) -> None:
    parts = event.subject.split("/")
    if len(parts) != 3 or parts[0] != "sla":
        return
    try:
        row = store.get_sla(s, parts[1], parts[2])
    except NotFound:
        return  # deleted since
    spec = store.sla_spec(row)
    trigger = _TRIGGERS[event.kind]
    slos = [event.data["slo"]] if "slo" in event.data else list(event.data.get("slos", []))
    predicted: dict[str, Any] = {
        k: event.data[k] for k in ("slo", "value", "threshold", "predicted_at", "confidence") if k in event.data
    }
    predicted["event_id"] = event.id
    _observed(s, row, spec, slos, predicted)
    recent = store.list_actions(s, row, limit=100)
    for policy in spec.policies:
        if trigger not in policy.on or (policy.slos and not set(policy.slos) & set(slos)):
            continue
        since = utcnow() - timedelta(seconds=duration_seconds(policy.cooldown))
        if any(a.action == policy.action.value and a.at >= since for a in recent):
            continue  # cooldown: this action ran for this SLA a moment ago
        acted = [n for n in slos if not policy.slos or n in policy.slos]
        outcome, pending = _do(s, spec, policy)
        store.record_action(
            s,
            row,
            slo=acted[0] if acted else None,
            trigger=trigger.value,
            predicted=predicted,
            action=policy.action.value,
            outcome=outcome,
            pending=pending,
        )


def _observed(s: Session, row: SlaRow, spec: SlaSpec, slos: list[str], predicted: dict[str, Any]) -> None:
    """Add the SLO's last value and its target to what a violation reports (its event names only the SLOs): the
    audit and a webhook say what was seen."""
    if not slos or "value" in predicted:
        return
    status = next((st for st in store.slo_statuses(s, row) if st.slo == slos[0]), None)
    slo = next((x for x in spec.slos if x.name == slos[0]), None)
    predicted["slo"] = slos[0]
    if status is not None:
        predicted["value"] = status.value
    if slo is not None:
        predicted["threshold"] = threshold_of(slo)
        predicted["target"] = slo.target


def _do(s: Session, spec: SlaSpec, policy: Policy) -> tuple[str, bool]:
    """The outcome to record, and whether the SLA action runner still has to carry the act out."""
    match policy.action:
        case PolicyAction.SCALE_OUT:
            return _scale_out(s, spec, policy), False
        case PolicyAction.MOVE if spec.workload is None:
            return "not done: a namespace-wide SLA names no workload to move", False
        case PolicyAction.MOVE:
            return "pending: choosing a better cluster for the SLO", True
        case PolicyAction.NOTIFY if policy.webhook is not None:
            return "notified on the bus (sla.action); pending: webhook", True
        case PolicyAction.NOTIFY:
            return "notified on the bus (sla.action)", False
        case _:
            return "recorded", False


def _scale_out(s: Session, spec: SlaSpec, policy: Policy) -> str:
    if spec.workload is None:
        return "not done: a namespace-wide SLA names no workload to scale"
    try:
        row = workloads.get_workload(s, spec.namespace, spec.workload)
    except NotFound:
        return f"not done: workload {spec.namespace}/{spec.workload} does not exist"
    descriptor = WorkloadDescriptor.model_validate(row.descriptor)
    if descriptor.deployment is None:
        return "not done: the workload has no deployment"
    before = descriptor.deployment.replicas
    after = min(before + policy.step, policy.max_replicas)
    if after <= before:
        return f"not done: already at {before} replicas (max_replicas {policy.max_replicas})"
    changed: dict[str, Any] = {"deployment": descriptor.deployment.model_copy(update={"replicas": after})}
    workloads.apply_workload(s, descriptor.model_copy(update=changed))
    return f"scaled out from {before} to {after} replicas"
