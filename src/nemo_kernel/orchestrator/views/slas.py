"""SLA views: pages of SLAs, one SLA, the status of its SLOs, violations, the closed loop's audit, history."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from nemo_kernel.domain import Event, Model
from nemo_kernel.domain.sla import SlaAction, SlaSpec, SlaState, SlaStatus, SloKind, SloStatus, Violation
from nemo_kernel.ppef import openslo, rules
from nemo_kernel.store import Database, events, slas


class SlaPage(Model):
    """A page of SLAs and how many match the filters in all."""

    items: list[SlaStatus]
    total: int = Field(description="SLAs matching the filters, over all pages")


class SlaReport(Model):
    """Where an SLA stands: its state and each SLO's last evaluation (NoData until evaluated)."""

    name: str
    namespace: str
    workload: str | None
    version: int
    state: SlaState
    message: str = ""
    slos: list[SloStatus]


class ViolationPage(Model):
    """A page of violations, newest first, and how many match in all."""

    items: list[Violation]
    total: int


class SlaViews:
    """Reads of SLAs and of what PPEF's evaluation recorded about them."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, namespace: str, name: str) -> SlaStatus:
        """One SLA; ``NotFound`` if unknown."""
        with self._db.snapshot() as s:
            return slas.to_sla_status(slas.get_sla(s, namespace, name))

    def page(
        self,
        *,
        namespace: str | None = None,
        workload: str | None = None,
        state: SlaState | None = None,
        kind: SloKind | None = None,
        sort: str = "name",
        limit: int = 100,
        offset: int = 0,
    ) -> SlaPage:
        """A page of SLAs matching the filters, in the order ``sort`` names."""
        with self._db.snapshot() as s:
            rows, total = slas.list_slas(
                s, namespace=namespace, workload=workload, state=state, kind=kind, sort=sort, limit=limit, offset=offset
            )
            return SlaPage(items=[slas.to_sla_status(r) for r in rows], total=total)

    def report(self, namespace: str, name: str) -> SlaReport:
        """The SLA's state and each SLO's status; ``NotFound`` if unknown."""
        with self._db.snapshot() as s:
            row = slas.get_sla(s, namespace, name)
            return SlaReport(
                name=row.name,
                namespace=row.namespace,
                workload=row.workload,
                version=row.version,
                state=SlaState(row.state),
                message=row.message,
                slos=slas.slo_statuses(s, row),
            )

    def violations(
        self,
        *,
        namespace: str | None = None,
        sla: str | None = None,
        slo: str | None = None,
        open_only: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> ViolationPage:
        """A page of violations, newest first."""
        with self._db.snapshot() as s:
            items, total = slas.list_violations(
                s, namespace=namespace, sla=sla, slo=slo, open_only=open_only, limit=limit, offset=offset
            )
            return ViolationPage(items=items, total=total)

    def actions(self, namespace: str, name: str, *, limit: int = 100, offset: int = 0) -> list[SlaAction]:
        """The closed loop's audit of one SLA, newest first; ``NotFound`` if unknown."""
        with self._db.snapshot() as s:
            return slas.list_actions(s, slas.get_sla(s, namespace, name), limit=limit, offset=offset)

    def history(self, namespace: str, name: str, *, after: int = 0, limit: int = 500) -> list[Event]:
        """Events of an SLA after the id ``after``, oldest first."""
        with self._db.snapshot() as s:
            return events.history(s, slas.sla_subject(namespace, name), after_id=after, limit=limit)

    def openslo(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The SLA as OpenSLO v1 objects; ``NotFound`` if unknown."""
        return openslo.from_sla(self._spec(namespace, name))

    def rules(self, namespace: str, name: str) -> str:
        """Prometheus rules (YAML) for the SLA's ratio SLOs; ``NotFound`` if unknown."""
        return rules.rules_yaml(self._spec(namespace, name))

    def _spec(self, namespace: str, name: str) -> SlaSpec:
        """The SLA's spec; ``NotFound`` if unknown, ``Conflict`` if an older NEMO stored one this version refuses."""
        with self._db.snapshot() as s:
            return slas.readable_sla_spec(slas.get_sla(s, namespace, name))
