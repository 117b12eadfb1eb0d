"""What every step of the reconcile pass records: replica events, workload subjects, failures kept to one workload.

The lowest module of the package: the steps and the phase rules import it, it imports none of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from nemo_kernel.domain import EventKind
from nemo_kernel.store import in_chunks
from nemo_kernel.store.events import record_event, workload_subject
from nemo_kernel.store.tables import ReplicaRow, WorkloadRow

log = logging.getLogger(__name__)
T = TypeVar("T")


class Located(Protocol):
    """Where a replica is: a stored row, or the plain tuple a step read of it."""

    @property
    def id(self) -> str: ...
    @property
    def cluster(self) -> str: ...
    @property
    def node(self) -> str: ...


def replica_event(s: Session, kind: EventKind, subject: str, row: Located, message: str, **data: object) -> None:
    """Record an event about one replica, naming it and where it runs."""
    record_event(s, kind, subject, message, replica=row.id, cluster=row.cluster, node=row.node, **data)


def replica_rows(s: Session, ids: Iterable[str]) -> list[ReplicaRow]:
    """The replica rows of ``ids`` as objects (those that exist), in :func:`~nemo_kernel.store.in_chunks` queries: a
    pass may load tens of thousands (a rollout sending every replica again)."""
    query = select(ReplicaRow)
    return [r for chunk in in_chunks(sorted(set(ids))) for r in s.scalars(query.where(ReplicaRow.id.in_(chunk)))]


def subjects(s: Session, workload_ids: Iterable[int]) -> dict[int, str]:
    """The event subject of each workload (one query)."""
    ids = list(workload_ids)
    if not ids:
        return {}
    query = select(WorkloadRow.id, WorkloadRow.namespace, WorkloadRow.name).where(WorkloadRow.id.in_(ids))
    return {wid: workload_subject(ns, name) for wid, ns, name in s.execute(query)}


def isolated(s: Session, w: WorkloadRow, step: str, work: Callable[[], T]) -> T | None:
    """Run one workload's part of a pass in a savepoint; an error is recorded on the workload, not raised.

    One unreadable row (a descriptor stored before validation was tightened, a name no replica id accepts)
    must not stop the reconcile loop for every other workload.
    """
    try:
        with s.begin_nested():
            return work()
    except Exception as exc:
        record_failure(s, w, step, exc)
        return None


def isolated_together(
    s: Session,
    works: Sequence[tuple[WorkloadRow, Callable[[], T]]],
    step: str,
    undo: Callable[[], None] = lambda: None,
) -> list[T | None]:
    """Run many workloads' parts of a pass as :func:`isolated` runs one, but in one savepoint while none fails.

    A hundred workloads' writes then cost one savepoint and one flush, not a hundred. When one raises, that savepoint
    is rolled back, ``undo`` puts back what the parts changed outside the session (the pass's inventory), and each
    part runs again in its own savepoint (:func:`isolated`), so the error is recorded on its workload alone and the
    others' writes stand.
    """
    if len(works) > 1:
        try:
            with s.begin_nested():
                return [work() for _, work in works]
        except Exception:
            log.debug("%s: a workload of %d failed; each runs again in its own savepoint", step, len(works))
            undo()
    return [isolated(s, w, step, work) for w, work in works]


def record_failure(s: Session, w: WorkloadRow, step: str, exc: Exception) -> None:
    """Record on a workload why a step failed for it: once per distinct failure, not once per pass."""
    detail = " ".join(str(exc).split())[:400] or type(exc).__name__
    message = f"not reconciled ({step} failed): {detail}"
    if w.message == message:
        return  # already recorded: one event and one log line per distinct failure, not one per pass
    log.warning("workload %s/%s: %s", w.namespace, w.name, message, exc_info=exc)
    w.message = message
    record_event(s, EventKind.WORKLOAD_FAILED, workload_subject(w.namespace, w.name), message, step=step)
