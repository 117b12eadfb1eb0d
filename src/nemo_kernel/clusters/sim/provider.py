"""The ``sim`` driver's provider: one in-process simulation holds every sim cluster of the control plane."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from nemo_kernel.clusters.base import DriverProvider
from nemo_kernel.clusters.sim.driver import SimDriver
from nemo_kernel.clusters.sim.world import Clock, Simulation
from nemo_kernel.domain import ClusterSpec

if TYPE_CHECKING:
    from nemo_kernel.config import Settings


class SimProvider:
    """Opens simulated clusters (a :class:`~nemo_kernel.clusters.base.DriverProvider`).

    The simulation is part of this process: a new driver for a cluster (a restarted engine given the same
    provider) finds what the cluster runs, but a restarted process starts every sim cluster empty, as a
    fleet whose nodes all rebooted. The engine re-derives it: the replicas stored as desired are not
    reported, go back to Scheduled and are sent again.
    """

    def __init__(self, settings: Settings | None = None, *, clock: Clock = time.time) -> None:
        """``clock`` gives unix seconds (a test may give its own to play time forward); ``settings`` are unused:
        each cluster's behaviour is in its spec's ``sim:`` section."""
        self.simulation = Simulation(clock)

    async def open(self, spec: ClusterSpec) -> SimDriver:
        """A driver for the simulated cluster ``spec``, created on first open."""
        return SimDriver(self.simulation.open(spec))

    async def revive(self, spec: ClusterSpec) -> SimDriver | None:
        """Nothing to restart: a simulated cluster answers again when its fault ends."""
        return None

    async def forget(self, name: str) -> None:
        """The cluster is removed, and its replicas with it."""
        self.simulation.forget(name)

    async def close(self) -> None:
        """Nothing to release; the simulation ends with the process."""


_provider: type[DriverProvider] = SimProvider
