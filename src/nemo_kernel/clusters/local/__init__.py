"""The ``local`` cluster driver: replicas are real OS processes on virtual nodes, run by one agent per cluster.

The control plane opens clusters through :class:`LocalProvider`, which starts agents with
:class:`LocalAgentLauncher` and drives each through a :class:`LocalClusterDriver`. The agent itself
(``python -m nemo_kernel.clusters.local.agent``) is not imported here, so that running it as a module does not
import it twice.
"""

from nemo_kernel.clusters.local.driver import LocalClusterDriver
from nemo_kernel.clusters.local.launcher import LocalAgentLauncher
from nemo_kernel.clusters.local.provider import LocalProvider
from nemo_kernel.clusters.local.supervisor import ProcessSupervisor, SupervisorTimings

__all__ = ["LocalAgentLauncher", "LocalClusterDriver", "LocalProvider", "ProcessSupervisor", "SupervisorTimings"]
