"""The ``local`` driver's provider: one agent process per cluster, under ``<data dir>/clusters/``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nemo_kernel.clusters.base import DriverProvider, SupportsAgentPid
from nemo_kernel.clusters.local.driver import LocalClusterDriver
from nemo_kernel.clusters.local.launcher import LocalAgentLauncher
from nemo_kernel.domain import ClusterSpec

if TYPE_CHECKING:  # the agent process imports this package; it need not load the settings
    from nemo_kernel.config import Settings


class LocalProvider:
    """Opens local clusters through their agents (a :class:`~nemo_kernel.clusters.base.DriverProvider`).

    Agents outlive the control plane: :meth:`open` adopts a live one, :meth:`close` stops them and leaves their
    replicas running, and only :meth:`forget` (cluster removal) stops the replicas too.
    """

    def __init__(self, settings: Settings) -> None:
        self.launcher = LocalAgentLauncher(
            settings.data_dir / "clusters", request_timeout=settings.driver_timeout, replica_user=settings.replica_user
        )

    async def open(self, spec: ClusterSpec) -> LocalClusterDriver:
        """A driver for the cluster's agent, started if none runs; raises ``ClusterUnreachable``."""
        return await self.launcher.ensure(spec)

    async def revive(self, spec: ClusterSpec) -> LocalClusterDriver | None:
        """An agent that died is started again (it adopts the replicas still running); one that is alive but silent
        (hung, stopped) raises ``ClusterUnreachable``: it still holds the replicas, so it is not replaced."""
        return await self.launcher.ensure(spec)

    async def forget(self, name: str) -> None:
        """Stop every replica and the agent of cluster ``name``, and delete its state."""
        await self.launcher.destroy(name)

    async def close(self) -> None:
        """Stop every agent (their replicas keep running and are adopted on the next start)."""
        await self.launcher.stop_all()

    def pid_of(self, name: str) -> int | None:
        """Pid of the running agent of cluster ``name``, or None."""
        return self.launcher.pid_of(name)


# mypy checks here that the class keeps the protocols' shape (as Go's `var _ Iface = (*T)(nil)`)
_provider: type[DriverProvider] = LocalProvider
_agent_pid: type[SupportsAgentPid] = LocalProvider
