"""The orchestration engine: one reconcile pass, composed of the steps in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nemo_kernel.config import Settings
from nemo_kernel.domain import LatencyMatrix, load_document
from nemo_kernel.orchestrator.decision import DEFAULT_CRITERIA, AnyCriterion, DecisionEngine
from nemo_kernel.orchestrator.reconcile.evacuate import Evacuation
from nemo_kernel.orchestrator.reconcile.observe import Observation
from nemo_kernel.orchestrator.reconcile.reschedule import Rescheduling
from nemo_kernel.orchestrator.reconcile.rollout import Rollout
from nemo_kernel.orchestrator.reconcile.schedule import Scheduling
from nemo_kernel.orchestrator.resources import ResourceManager
from nemo_kernel.store import Database
from nemo_kernel.store.signals import CommitWatch
from nemo_kernel.store.tables import EventRow


class OrchestrationEngine:
    """Drives the clusters towards the placements stored in the database.

    The steps are attributes, so a test (or a later step such as migration) can run one of them on its own.
    """

    def __init__(
        self,
        db: Database,
        resources: ResourceManager,
        settings: Settings,
        criteria: Sequence[AnyCriterion] = DEFAULT_CRITERIA,
        moves_started: Callable[[], None] = lambda: None,
    ) -> None:
        """``criteria`` score the feasible nodes (a criterion that needs data, a latency matrix say, is built with
        it by the caller); the default registry's unless given. ``moves_started`` is called after a pass started
        migrations (evacuations), to wake whatever carries them out."""
        self._resources = resources
        self.observe = Observation(db)
        self.reschedule = Rescheduling(db)
        engine = DecisionEngine(settings.weights, criteria=tuple(criteria), latency=latency_matrix(settings))
        specs = resources.specs  # validated cluster specs, shared by the resource manager and the inventory loads
        self.evacuate = Evacuation(db, engine, settings.evacuation_concurrency, moves_started, specs)
        self.schedule = Scheduling(db, engine, specs)
        self.rollout = Rollout(db, resources, settings.driver_timeout)
        self._db = db
        self._resync_interval = settings.resync_interval
        self._next_resync: float | None = None  # monotonic; None: the next pass is the first, a full one
        self._store_seen: int | None = None
        # The revision as last read, and SQLite's commit counter then: no commit since, no query (the counter is
        # None on PostgreSQL, which is asked every pass); the watch is made on the first pass, once the store exists
        self._revision_read: int | None = None
        self._commits: CommitWatch | None = None
        self._read_at: int | None = None

    async def reconcile_once(self) -> None:
        """One pass: heartbeats, then observe, reschedule, evacuate, schedule and rollout, each on what changed.

        Observe takes the clusters whose report changed; reschedule, evacuate and schedule run when the store's
        revision (its newest event: every change of desired state records one) moved or a cluster changed; the
        rollout plans the changed clusters, those whose last rollout did not finish and, when the store moved, those
        the store holds a replica to send or remove for. The first pass is full (every cluster's whole report, every
        step, every cluster's rollout planned). The safety net for a change that left no trace: every
        NEMO_RESYNC_INTERVAL seconds each cluster sends its whole report, which counts as a change (observed
        against the store, its rollout planned), the fleet's spread over the interval; and every step runs and the
        cluster rows are read again at least that often.
        """
        now = time.monotonic()
        first = self._next_resync is None
        resync = self._next_resync is None or now >= self._next_resync
        if resync:
            self._next_resync = now + self._resync_interval
        await self._resources.sync_drivers(force=resync)
        beat = await self._resources.heartbeat(full=first, resync=self._resync_interval)
        # read before the steps: what they (or anyone) write from here on moves it, and the next pass looks again
        store = await self._store_revision_now()
        store_moved = resync or store != self._store_seen
        self._store_seen = store
        changed = beat.reports if first else {c: r for c, r in beat.reports.items() if c in beat.changed}
        if changed:
            await asyncio.to_thread(self.observe, changed, beat.full)
        if store_moved or beat.changed:
            await asyncio.to_thread(self.reschedule)
            await asyncio.to_thread(self.evacuate)
            await asyncio.to_thread(self.schedule)
        if store_moved:
            await self.rollout(beat.reports, changed=None if first else beat.changed)
        else:
            again = beat.changed | self.rollout.unfinished
            await self.rollout({c: r for c, r in beat.reports.items() if c in again})

    async def _store_revision_now(self) -> int:
        """The store's revision, read only when something was committed since it was last read (on SQLite)."""
        if self._commits is None:
            self._commits = self._db.commit_watch()
        commits = self._commits.look()  # before the read: a commit after it is seen on the next pass
        if self._revision_read is None or commits is None or commits != self._read_at:
            self._read_at = None  # a read that fails is made again on the next pass
            self._revision_read = await asyncio.to_thread(self._store_revision)
            self._read_at = commits
        return self._revision_read

    def _store_revision(self) -> int:
        with self._db.snapshot() as s:
            return store_revision(s)

    def close(self) -> None:
        """Release the commit watch's connection."""
        if self._commits is not None:
            self._commits.close()
            self._commits = None


def store_revision(s: Session) -> int:
    """The store's revision for the engine: its newest event's id (0 when none)."""
    return s.scalar(select(func.max(EventRow.id))) or 0


def latency_matrix(settings: Settings) -> LatencyMatrix | None:
    """The latency matrix of ``NEMO_LATENCY_FILE``, or None when unset; raises ValueError naming the setting when
    the file cannot be read or is not a valid matrix, so the control plane does not start on a wrong one."""
    path = settings.latency_file
    if path is None:
        return None
    try:
        return LatencyMatrix.model_validate(load_document(path.read_bytes(), yaml_syntax=True))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"NEMO_LATENCY_FILE {path}: {problems}") from exc
    except (OSError, ValueError) as exc:
        raise ValueError(f"NEMO_LATENCY_FILE {path}: {exc}") from exc
