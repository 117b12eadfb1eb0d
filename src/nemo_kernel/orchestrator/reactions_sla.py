"""PPEF's closed loop: the SLA's policies acting on ``sla.breach_predicted`` and ``sla.violated``.

The SLO loop publishes each of these once per episode (a forecast that starts, an SLA going Active -> Violated):
that is the hysteresis. Here, each policy of the SLA whose trigger and SLOs match acts, unless the same action
ran for this SLA within its ``cooldown``; every act (or decision not to act) is an audit record
(``sla_actions``, event ``sla.action``) with what was predicted; the SLO loop fills in what happened after.

- ``scale_out``: the workload's next version with ``replicas + step``, at most ``max_replicas`` (a new version:
  reconcile rolls it out);
- ``notify`` and ``notify_only``: the ``sla.action`` event itself, which the outbox publishes on the bus. The
  webhook POST of ``notify`` is not sent from here (a reaction never calls the network) and is not built yet;
- ``move``: recorded as not done: re-placing on a better cluster waits for the migration service.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from nemo_kernel.domain import Event, EventKind, WorkloadDescriptor, utcnow
from nemo_kernel.domain.sla import Policy, PolicyAction, PolicyTrigger, SlaSpec, duration_seconds
from nemo_kernel.orchestrator.reactions import reactions
from nemo_kernel.store import slas as store
from nemo_kernel.store import workloads
from nemo_kernel.store.errors import NotFound

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
    recent = store.list_actions(s, row, limit=100)
    for policy in spec.policies:
        if trigger not in policy.on or (policy.slos and not set(policy.slos) & set(slos)):
            continue
        since = utcnow() - timedelta(seconds=duration_seconds(policy.cooldown))
        if any(a.action == policy.action.value and a.at >= since for a in recent):
            continue  # cooldown: this action ran for this SLA a moment ago
        outcome = _do(s, spec, policy)
        store.record_action(
            s,
            row,
            slo=slos[0] if slos else None,
            trigger=trigger.value,
            predicted=predicted,
            action=policy.action.value,
            outcome=outcome,
        )


def _do(s: Session, spec: SlaSpec, policy: Policy) -> str:
    match policy.action:
        case PolicyAction.SCALE_OUT:
            return _scale_out(s, spec, policy)
        case PolicyAction.MOVE:
            return "not done: moving a workload needs the migration service"
        case PolicyAction.NOTIFY:
            return "notified on the bus (sla.action); webhook not sent: not built yet"
        case _:
            return "recorded"


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
