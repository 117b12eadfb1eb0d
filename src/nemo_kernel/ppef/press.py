"""PRESS clauses as placement constraints: ``press.data_residency`` of a workload's live SLAs narrows the countries
its replicas may be placed in (the decision engine enforces it like the workload's own ``placement.countries``)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from nemo_kernel.domain import DeploymentSpec
from nemo_kernel.store import slas


def residency_constrained(
    session: Session, namespace: str, workload: str, spec: DeploymentSpec
) -> DeploymentSpec | None:
    """``spec`` with ``placement.countries`` narrowed by the data residency of the workload's Active or Violated
    SLAs (its own and the namespace-wide ones): the intersection of all. ``spec`` itself when no SLA restricts it;
    None when no country satisfies all of them (nothing may be placed)."""
    return narrowed(spec, slas.residency_of_workload(session, namespace, workload))


def narrowed(spec: DeploymentSpec, allowed: list[str] | None) -> DeploymentSpec | None:
    """:func:`residency_constrained` with the countries the SLAs allow already read (``allowed``, as
    ``store.slas.residency_of_workloads`` gives them; None: no SLA restricts the workload)."""
    if allowed is None:
        return spec
    own = spec.placement.countries
    countries = [c for c in allowed if c in own] if own else allowed
    if not countries:
        return None
    return spec.model_copy(update={"placement": spec.placement.model_copy(update={"countries": countries})})
