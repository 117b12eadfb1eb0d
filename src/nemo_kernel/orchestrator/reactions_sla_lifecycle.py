"""SLA activation: an SLA applied before its workload was deployed becomes Active when the workload first runs."""

from __future__ import annotations

from sqlalchemy.orm import Session

from nemo_kernel.domain import Event, EventKind
from nemo_kernel.orchestrator.reactions import reactions
from nemo_kernel.ppef import lifecycle


@reactions.on(EventKind.WORKLOAD_RUNNING, EventKind.WORKLOAD_DEGRADED)
def activate_slas(s: Session, event: Event) -> None:
    """Draft SLAs of the workload the event names go Active (``sla.activated``); others are left as they are."""
    _, namespace, name = event.subject.split("/", 2)
    lifecycle.activate_for_workload(s, namespace, name)
