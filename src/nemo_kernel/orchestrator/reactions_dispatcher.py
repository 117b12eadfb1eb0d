"""Runs the registered reactions on the stored events: exactly once per (reaction, event), with retries.

Source: the store's event log, not the bus. Every state change is recorded there first (the outbox publishes the
same rows), the control plane's own events are not sealed for itself on the bus, and the log survives crashes and
works on the embedded defaults.

Exactly once: a run is the reaction's writes plus its marker row in ``reaction_runs``, in one transaction. The
marker is inserted first (primary key: reaction, event id), so a second dispatcher's claim on the same pair waits
for ours and then fails, and a crash before the commit leaves neither the work nor the marker: the run happens
again, whole.

Retries: an exception rolls the run back, and the pair is tried again on a later pass after a backoff that doubles
(1 s, 2 s, 4 s by default), so one failing event delays nobody else. After ``retries`` retries the marker is stored
with status ``failed`` and the error, and a ``reaction.failed`` event is recorded on the event's subject (except for
a failure on a ``reaction.failed`` event, so that failures cannot chain). Attempts are counted in memory: after a
restart a failing run gets its retries again, which is harmless since a failed attempt left nothing behind.

Why a watermark and a window instead of a "last id" cursor: an event's id is taken when it is inserted but becomes
visible when its transaction commits, and on PostgreSQL the transaction that took id 10 may commit after the one
that took id 11. A cursor moved to 11 would skip 10 forever. Instead each reaction has a low-watermark
(``reaction_watermarks.settled_through``): every event of its kinds up to it has a run. Each pass takes the events
above it that have no run yet (an anti-join on the markers, so re-reading handled events costs only the scan), and
the watermark moves only past events that are settled *and* were recorded more than ``window`` seconds ago (300 by
default). The one assumption: no transaction keeps a recorded event uncommitted for longer than the window (the
control plane's last milliseconds to seconds). The watermark is stored, so a restart resumes where it was; a
reaction seen for the first time starts with the events of the last window, not the whole history (a new reaction
to security events must not act on last year's).

Idle cost: the control plane runs a pass when a commit of its own recorded an event (``full``: every reaction
looks), when a retry is due, and otherwise every ``NEMO_STORE_POLL_INTERVAL`` seconds for other processes' events.
Such a poll first reads the newest event id (one indexed lookup) and does nothing more when it is the one the last
complete pass saw and no retry is due. A pass of every reaction still runs at least every ``full_pass`` seconds
(5 by default) of polling: it picks up an event whose transaction committed after a newer one (the PostgreSQL case
above) and moves the watermarks on. A watermark is looked at only once it can move: when the oldest event above it
is out of the window (until then it takes no write lock and writes nothing).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nemo_kernel.domain import Event, EventKind, utcnow
from nemo_kernel.orchestrator.reactions import Reaction, Reactions
from nemo_kernel.store import Database
from nemo_kernel.store.events import record_event, to_event
from nemo_kernel.store.tables import EventRow, ReactionRunRow, ReactionWatermarkRow

log = logging.getLogger(__name__)

DONE = "done"
FAILED = "failed"
_MAX_ERROR = 2000  # characters of an error kept on the run and its event


@dataclass
class _Retry:
    """A run that failed and will be tried again (kept in memory; see the module docstring)."""

    attempts: int
    started_at: datetime
    due: float  # monotonic time of the next attempt
    error: str


class _AlreadyRun(Exception):
    """Another run of the same (reaction, event) committed first."""


class ReactionDispatcher:
    """Runs the reactions of a registry on the events in a store; call :meth:`run_once` in a loop (not concurrently)."""

    def __init__(
        self,
        db: Database,
        registry: Reactions,
        *,
        window: float = 300.0,
        backoff: float = 1.0,
        batch: int = 200,
        full_pass: float = 5.0,
    ) -> None:
        self._db = db
        self._registry = registry
        self._window = timedelta(seconds=window)
        self._backoff = backoff
        self._batch = batch
        self._full_pass = full_pass
        self._watermarks: dict[str, int] = {}
        self._advance_due: dict[str, float] = {}  # monotonic time before which a watermark cannot move
        self._retries: dict[tuple[str, int], _Retry] = {}
        self._seen_newest: int | None = None  # the newest event id when the last pass handled everything it found
        self._next_full = 0.0  # monotonic time of the next pass that runs whatever the newest id

    async def run_once(self, *, full: bool = False) -> int:
        """One pass: run every due (reaction, event) pair, in event id order; returns how many runs committed their
        work (the caller then wakes the reconcile loop). ``full`` looks for every reaction's events even when the
        newest event id is the one seen last (the caller knows an event was just committed)."""
        if not len(self._registry):
            return 0
        return await asyncio.to_thread(self._pass, full)

    def seconds_to_next_retry(self) -> float:
        """Seconds until a failed run is due again (infinity when none waits): the caller's longest sleep."""
        if not self._retries:
            return float("inf")
        return max(0.0, min(retry.due for retry in self._retries.values()) - time.monotonic())

    def _pass(self, full: bool = False) -> int:
        now = time.monotonic()
        with self._db.snapshot() as s:
            newest = s.scalar(select(func.max(EventRow.id)))
        retry_due = any(retry.due <= now for retry in self._retries.values())
        if newest == self._seen_newest and not retry_due and not full and now < self._next_full:
            return 0  # nothing recorded since the last pass handled everything (module docstring: idle cost)
        if now >= self._next_full:
            self._next_full = now + self._full_pass
        reactions = list(self._registry)
        work: list[tuple[int, int, Reaction, Event]] = []
        complete = True
        for order, reaction in enumerate(reactions):
            found = self._unhandled(reaction)
            complete = complete and len(found) < self._batch  # a full batch: more are waiting for the next pass
            for event in found:
                work.append((event.id, order, reaction, event))
        work.sort(key=lambda item: item[:2])
        done = 0
        for _, _, reaction, event in work:
            try:
                done += self._attempt(reaction, event)
            except Exception:
                # Only recording a failure can get here (the store is down): it is retried on the next pass.
                log.exception(
                    "reaction %s on event %d: recording its failure failed; retrying", reaction.name, event.id
                )
        for reaction in reactions:
            self._advance(reaction)
        self._seen_newest = newest if complete else None
        return done

    def _unhandled(self, reaction: Reaction) -> list[Event]:
        now = time.monotonic()
        waiting = [eid for (name, eid), retry in self._retries.items() if name == reaction.name and retry.due > now]
        watermark = self._watermark(reaction)
        with self._db.snapshot() as s:  # only reads: a run claims its event in its own transaction
            query = (
                select(EventRow).where(*self._open_events(reaction, watermark)).order_by(EventRow.id).limit(self._batch)
            )
            if waiting:
                query = query.where(EventRow.id.not_in(waiting))
            return [to_event(row) for row in s.scalars(query)]

    @staticmethod
    def _open_events(reaction: Reaction, watermark: int) -> Sequence[ColumnElement[bool]]:
        """Conditions of the events of ``reaction``'s kinds above ``watermark`` that have no run."""
        run = exists().where(ReactionRunRow.reaction == reaction.name, ReactionRunRow.event_id == EventRow.id)
        return (
            EventRow.id > watermark,
            EventRow.kind.in_([kind.value for kind in reaction.kinds]),
            ~run,
        )

    def _watermark(self, reaction: Reaction) -> int:
        if reaction.name in self._watermarks:
            return self._watermarks[reaction.name]
        try:
            with self._db.transaction() as s:
                row = s.get(ReactionWatermarkRow, reaction.name)
                if row is None:
                    # First sight of this reaction: it reacts to the events of the last window, not the whole history.
                    cutoff = utcnow() - self._window
                    start = s.scalar(select(func.max(EventRow.id)).where(EventRow.created_at < cutoff))
                    row = ReactionWatermarkRow(reaction=reaction.name, settled_through=start or 0)
                    s.add(row)
                through = row.settled_through
        except IntegrityError:  # another dispatcher stored it first: use theirs
            with self._db.transaction() as s:
                through = s.scalars(
                    select(ReactionWatermarkRow.settled_through).where(ReactionWatermarkRow.reaction == reaction.name)
                ).one()
        self._watermarks[reaction.name] = through
        return through

    def _attempt(self, reaction: Reaction, event: Event) -> int:
        """Run ``reaction`` on ``event`` once; 1 when its work committed, else 0."""
        key = (reaction.name, event.id)
        retry = self._retries.get(key)
        if retry is not None and retry.attempts > reaction.retries:
            self._give_up(reaction, event, retry)  # an earlier pass could not record it
            return 0
        attempts = retry.attempts + 1 if retry else 1
        started_at = retry.started_at if retry else utcnow()
        try:
            with self._db.transaction() as s:
                run = _run_row(reaction, event, DONE, attempts, "", started_at)
                _claim(s, run)
                reaction.fn(s, event)
                run.finished_at = utcnow()
        except _AlreadyRun:
            self._retries.pop(key, None)
            return 0
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR]
            log.warning(
                "reaction %s on event %d (%s) failed, attempt %d of %d",
                reaction.name,
                event.id,
                event.kind,
                attempts,
                reaction.retries + 1,
                exc_info=True,
            )
            retry = _Retry(attempts, started_at, time.monotonic() + self._backoff * 2 ** (attempts - 1), error)
            self._retries[key] = retry
            if attempts > reaction.retries:
                self._give_up(reaction, event, retry)
            return 0
        self._retries.pop(key, None)
        return 1

    def _give_up(self, reaction: Reaction, event: Event, retry: _Retry) -> None:
        """Store the failed run and a ``reaction.failed`` event, so the pair is not tried again."""
        try:
            with self._db.transaction() as s:
                _claim(s, _run_row(reaction, event, FAILED, retry.attempts, retry.error, retry.started_at))
                if event.kind != EventKind.REACTION_FAILED:
                    record_event(
                        s,
                        EventKind.REACTION_FAILED,
                        event.subject,
                        f"reaction {reaction.name} gave up on event {event.id} ({event.kind}) after "
                        f"{retry.attempts} attempts: {retry.error}",
                        reaction=reaction.name,
                        event_id=event.id,
                        event_kind=event.kind,
                        attempts=retry.attempts,
                        error=retry.error,
                    )
        except _AlreadyRun:
            self._retries.pop((reaction.name, event.id), None)
            return
        self._retries.pop((reaction.name, event.id), None)
        log.error("reaction %s gave up on event %d after %d attempts", reaction.name, event.id, retry.attempts)

    def _advance(self, reaction: Reaction) -> None:
        """Move the watermark past the events that are settled and older than the window (module docstring); not
        before the oldest event above it is out of the window, the earliest it can move."""
        now = time.monotonic()
        if now < self._advance_due.get(reaction.name, 0.0):
            return
        watermark = self._watermark(reaction)
        with self._db.transaction() as s:
            first_open = s.scalar(select(func.min(EventRow.id)).where(*self._open_events(reaction, watermark)))
            # Events of every kind count: the watermark passes the others too, so that the range each pass scans
            # stays about one window long even for a reaction to a rare kind.
            cutoff = utcnow() - self._window
            settled = select(func.max(EventRow.id)).where(EventRow.id > watermark, EventRow.created_at < cutoff)
            if first_open is not None:
                settled = settled.where(EventRow.id < first_open)
            through = s.scalar(settled)
            if through is not None:
                s.execute(
                    update(ReactionWatermarkRow)
                    .where(
                        ReactionWatermarkRow.reaction == reaction.name, ReactionWatermarkRow.settled_through < through
                    )
                    .values(settled_through=through, updated_at=utcnow())
                )
            # An event committed later with an older time (PostgreSQL) only makes this later than it could be.
            oldest = s.scalar(select(func.min(EventRow.created_at)).where(EventRow.id > (through or watermark)))
        if through is not None:
            self._watermarks[reaction.name] = through
        wait = self._window.total_seconds() if oldest is None else (oldest - cutoff).total_seconds()
        self._advance_due[reaction.name] = now + max(0.0, wait)


def _run_row(
    reaction: Reaction, event: Event, status: str, attempts: int, error: str, started_at: datetime
) -> ReactionRunRow:
    """The audit record of one run of ``reaction`` on ``event`` (also its "seen" marker), finished now."""
    return ReactionRunRow(
        reaction=reaction.name,
        event_id=event.id,
        status=status,
        attempts=attempts,
        error=error,
        started_at=started_at,
        finished_at=utcnow(),
    )


def _claim(s: Session, run: ReactionRunRow) -> None:
    """Insert the run's marker now, before the work: a concurrent claim of the same pair fails on the primary key."""
    s.add(run)
    try:
        s.flush()
    except IntegrityError:
        raise _AlreadyRun from None
