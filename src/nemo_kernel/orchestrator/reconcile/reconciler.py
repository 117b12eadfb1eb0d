"""The orchestration engine: one reconcile pass, composed of the steps in order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from nemo_kernel.config import Settings
from nemo_kernel.orchestrator.decision import DEFAULT_CRITERIA, AnyCriterion, DecisionEngine
from nemo_kernel.orchestrator.reconcile.observe import Observation
from nemo_kernel.orchestrator.reconcile.reschedule import Rescheduling
from nemo_kernel.orchestrator.reconcile.rollout import Rollout
from nemo_kernel.orchestrator.reconcile.schedule import Scheduling
from nemo_kernel.orchestrator.resources import ResourceManager
from nemo_kernel.store import Database


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
    ) -> None:
        """``criteria`` score the feasible nodes (a criterion that needs data, a latency matrix say, is built with
        it by the caller); the default registry's unless given."""
        self._resources = resources
        self.observe = Observation(db)
        self.reschedule = Rescheduling(db)
        self.schedule = Scheduling(db, DecisionEngine(settings.weights, criteria=tuple(criteria)))
        self.rollout = Rollout(db, resources, settings.driver_timeout)

    async def reconcile_once(self) -> None:
        """One full pass: heartbeats, then observe, reschedule, schedule and rollout."""
        await self._resources.sync_drivers()
        reports = await self._resources.heartbeat()
        await asyncio.to_thread(self.observe, reports)
        await asyncio.to_thread(self.reschedule)
        await asyncio.to_thread(self.schedule)
        await self.rollout(reports)
