"""What the orchestrator's tests over simulated (``sim``) clusters share: a generated fleet in a store, and passes
of the engine on a clock the test moves.

The modules that drive the engine over a simulation (``test_sim_fleet.py``, ``test_change_driven.py``,
``test_move_back_after_recovery.py``) import these (``from tests.orchestrator.conftest import SimEngine``) and add
what they look at; hand-driven clusters are ``fakes.MemoryProvider``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from tests.clock import Clock

from nemo_kernel.clusters import DriverProviders
from nemo_kernel.clusters.fleet import generate_fleet
from nemo_kernel.clusters.sim import SimProvider
from nemo_kernel.config import Settings
from nemo_kernel.domain import DriverKind, WorkloadDescriptor
from nemo_kernel.orchestrator.reconcile import OrchestrationEngine
from nemo_kernel.orchestrator.resources import ResourceManager
from nemo_kernel.store import Database, clusters, workloads
from nemo_kernel.store.tables import WorkloadRow

STEP_S = 5.0  # simulated seconds between passes: more than any generated start delay


def sim_workload(name: str, replicas: int, cpu: float = 0.1, **placement: Any) -> WorkloadDescriptor:
    """A workload of ``replicas`` replicas of ``cpu`` cores and 64 MiB (a sim cluster runs any command)."""
    deployment = {"command": ["serve"], "replicas": replicas, "resources": {"cpu": cpu, "memory_mib": 64}}
    return WorkloadDescriptor.model_validate({"name": name, "deployment": {**deployment, "placement": placement}})


def generated_fleet_store(root: Path, count: int, *, seed: int) -> Database:
    """A migrated SQLite store in ``root`` holding ``count`` generated sim clusters of two nodes each."""
    db = Database(f"sqlite:///{root / 'nemo.db'}")
    db.migrate()
    with db.transaction() as s:
        for spec in generate_fleet(count, 2, seed=seed):
            clusters.add_cluster(s, spec)
    return db


class SimPasses:
    """Passes over a simulation on a clock the test moves ``STEP_S`` after each pass, so replicas get through their
    start delay (and faults reach their end) without the test waiting."""

    max_passes = 12

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db, self.clock = db, clock

    async def drive(self) -> None:
        """One pass of what the test drives (the engine's, and whatever loop the test runs beside it)."""
        raise NotImplementedError

    async def one_pass(self) -> None:
        """One pass, then the clock moves on."""
        await self.drive()
        self.clock.now += STEP_S

    async def settle(self, done: Callable[[], bool], check: Callable[[], None] | None = None) -> int:
        """Passes until ``done()``; how many it took. ``check()`` after each asserts what must hold throughout."""
        for passes in range(1, self.max_passes + 1):
            await self.one_pass()
            if check is not None:
                check()
            if done():
                return passes
        raise AssertionError(f"not settled after {self.max_passes} passes{self.unsettled()}")

    def unsettled(self) -> str:
        """What the test shows when a settle gives up (after the count of passes)."""
        return ""

    def phase(self, name: str) -> str:
        """The workload's stored phase."""
        with self.db.snapshot() as s:
            return str(s.scalar(select(WorkloadRow.phase).where(WorkloadRow.name == name)))


class SimEngine(SimPasses):
    """The engine and its resource manager over one simulation, passes driven by the test."""

    def __init__(self, db: Database, settings: Settings, clock: Clock, sim: SimProvider | None = None) -> None:
        """``sim``: the simulation to drive (a control plane restarted over running clusters); a new one if None."""
        super().__init__(db, clock)
        self.settings = settings
        self.sim = sim if sim is not None else SimProvider(settings, clock=clock)
        self.resources = ResourceManager(db, settings, DriverProviders(settings, {DriverKind.SIM: self.sim}))
        self.engine = OrchestrationEngine(db, self.resources, settings)

    async def drive(self) -> None:
        await self.engine.reconcile_once()

    def apply(self, name: str, replicas: int) -> None:
        """Store a workload as the API's apply does (the next pass places it)."""
        with self.db.transaction() as s:
            workloads.apply_workload(s, sim_workload(name, replicas))
