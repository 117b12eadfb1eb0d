"""The SLA lifecycle's rules: what an apply checks, and when a Draft becomes Active.

``Draft -> Active -> (Violated <-> Active) -> Terminated``. An SLA is applied as a Draft; it becomes Active as
soon as what it binds is deployed: its workload is Running or Degraded, or, for a namespace-wide SLA (no
``workload``), at once. Part B moves Active <-> Violated; deleting terminates it (its history and audit stay).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from nemo_kernel.domain import WorkloadPhase
from nemo_kernel.domain.errors import ApiError
from nemo_kernel.domain.sla import SlaSpec, SlaState
from nemo_kernel.store import slas
from nemo_kernel.store.slas import SlaApplyResult
from nemo_kernel.store.tables import SlaRow, WorkloadRow

DEPLOYED_PHASES = (WorkloadPhase.RUNNING.value, WorkloadPhase.DEGRADED.value)
"""A workload in one of these phases is deployed: its SLAs are evaluated."""


def _workload_phase(session: Session, namespace: str, name: str) -> str | None:
    row = session.scalar(
        select(WorkloadRow.phase).where(
            WorkloadRow.namespace == namespace, WorkloadRow.name == name, WorkloadRow.deleting.is_(False)
        )
    )
    return row


def check_workload(session: Session, spec: SlaSpec) -> None:
    """422 naming ``workload`` when the SLA names a workload its namespace does not have (or that is deleting)."""
    if spec.workload is not None and _workload_phase(session, spec.namespace, spec.workload) is None:
        message = f"workload {spec.namespace}/{spec.workload} does not exist"
        raise ApiError(422, "invalid", f"workload: {message}", [{"field": "workload", "message": message}])


def apply(session: Session, spec: SlaSpec) -> SlaApplyResult:
    """Check and store an SLA (or its next version), then activate it if what it binds is deployed."""
    check_workload(session, spec)
    result = slas.apply_sla(session, spec)
    session.flush()
    activate_if_deployed(session, result.row)
    return result


def activate_if_deployed(session: Session, row: SlaRow) -> bool:
    """Draft -> Active when the SLA's workload is deployed (a namespace-wide SLA: always); True if it moved."""
    if row.state != SlaState.DRAFT.value:
        return False
    if row.workload is not None:
        phase = _workload_phase(session, row.namespace, row.workload)
        if phase not in DEPLOYED_PHASES:
            return False
        reason = f"workload {row.namespace}/{row.workload} is {phase}"
    else:
        reason = f"binds every workload of namespace {row.namespace}"
    return slas.set_sla_state(session, row, SlaState.ACTIVE, f"active: {reason}")


def activate_for_workload(session: Session, namespace: str, workload: str) -> list[str]:
    """Activate the Draft SLAs of a workload that has just been deployed; the names of those activated."""
    drafts = session.scalars(
        select(SlaRow).where(
            SlaRow.namespace == namespace, SlaRow.workload == workload, SlaRow.state == SlaState.DRAFT.value
        )
    )
    return [row.name for row in drafts if activate_if_deployed(session, row)]


def terminate(session: Session, namespace: str, name: str) -> SlaRow:
    """Terminate an SLA (no longer evaluated; its status, violations and audit stay). ``NotFound`` if unknown;
    terminating twice records nothing more."""
    row = slas.get_sla(session, namespace, name)
    for violation_slo in _open_violation_slos(session, row):
        slas.close_violation(session, row, violation_slo)
    slas.set_sla_state(session, row, SlaState.TERMINATED, "terminated: deleted by a user")
    return row


def _open_violation_slos(session: Session, row: SlaRow) -> list[str]:
    found, _ = slas.list_violations(session, namespace=row.namespace, sla=row.name, open_only=True, limit=64)
    return [v.slo for v in found]
