"""The event log: history per subject, and the outbox from which the bus publisher sends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nemo_kernel.domain import Event, EventKind
from nemo_kernel.store.tables import EventRow


def cluster_subject(name: str) -> str:
    """Event subject of a cluster."""
    return f"cluster/{name}"


def workload_subject(namespace: str, name: str) -> str:
    """Event subject of a workload."""
    return f"workload/{namespace}/{name}"


def record_event(session: Session, kind: EventKind, subject: str, message: str = "", **data: Any) -> EventRow:
    """Store an event in the caller's transaction; the outbox publisher sends it after commit."""
    row = EventRow(kind=kind, subject=subject, message=message, data=data, published=False)
    session.add(row)
    return row


def to_event(row: EventRow) -> Event:
    """Domain view of a stored event."""
    return Event(
        id=row.id, kind=row.kind, subject=row.subject, message=row.message, data=row.data, created_at=row.created_at
    )


def history(session: Session, subject: str, *, after_id: int = 0, limit: int = 500) -> list[Event]:
    """Events of one subject, oldest first (index on subject, id)."""
    rows = session.scalars(
        select(EventRow).where(EventRow.subject == subject, EventRow.id > after_id).order_by(EventRow.id).limit(limit)
    )
    return [to_event(r) for r in rows]


def latest_of_kinds(session: Session, kinds: Sequence[EventKind], limit: int = 1000) -> list[Event]:
    """The newest events of ``kinds``, newest first (index on kind, id)."""
    rows = session.scalars(
        select(EventRow).where(EventRow.kind.in_([k.value for k in kinds])).order_by(EventRow.id.desc()).limit(limit)
    )
    return [to_event(r) for r in rows]


def unpublished(session: Session, limit: int = 500) -> list[Event]:
    """The oldest events not yet sent on the bus."""
    rows = session.scalars(select(EventRow).where(EventRow.published.is_(False)).order_by(EventRow.id).limit(limit))
    return [to_event(r) for r in rows]


def mark_published(session: Session, ids: Sequence[int]) -> None:
    """Record that these events reached the bus."""
    if ids:
        session.execute(update(EventRow).where(EventRow.id.in_(ids)).values(published=True))
