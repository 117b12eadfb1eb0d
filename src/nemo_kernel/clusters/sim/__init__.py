"""The ``sim`` cluster driver: clusters that behave like real ones without processes (as kwok for Kubernetes).

Every sim cluster of a control plane lives in one in-process :class:`Simulation` owned by the
:class:`SimProvider`; replicas start after a delay, may fail, use CPU and memory shaped by their requests and draw
power by their nodes' power models. Faults (down, node down, partition, slow) are injected through the driver.
"""

from nemo_kernel.clusters.sim.driver import SimDriver
from nemo_kernel.clusters.sim.provider import SimProvider
from nemo_kernel.clusters.sim.world import Simulation

__all__ = ["SimDriver", "SimProvider", "Simulation"]
