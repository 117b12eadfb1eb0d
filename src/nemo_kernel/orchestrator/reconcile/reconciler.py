"""The orchestration engine: one reconcile pass, composed of the steps in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from pydantic import ValidationError

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
        self.evacuate = Evacuation(db, engine, settings.evacuation_concurrency, moves_started)
        self.schedule = Scheduling(db, engine)
        self.rollout = Rollout(db, resources, settings.driver_timeout)

    async def reconcile_once(self) -> None:
        """One full pass: heartbeats, then observe, reschedule, evacuate, schedule and rollout."""
        await self._resources.sync_drivers()
        reports = await self._resources.heartbeat()
        await asyncio.to_thread(self.observe, reports)
        await asyncio.to_thread(self.reschedule)
        await asyncio.to_thread(self.evacuate)
        await asyncio.to_thread(self.schedule)
        await self.rollout(reports)


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
