"""Carbon: gCO2 per hour one replica causes on a node; the greenest feasible node scores 1.0."""

from __future__ import annotations

from typing import ClassVar

from nemo_kernel.orchestrator.decision.candidates import ClusterCandidate, NodeCandidate
from nemo_kernel.orchestrator.decision.filters import Requirements


class CarbonPerHour:
    """The emissions of one replica per hour, from the node's power model and the cluster's grid intensity."""

    name: ClassVar[str] = "carbon"
    lower_is_better: ClassVar[bool] = True

    def raw(self, cluster: ClusterCandidate, node: NodeCandidate, req: Requirements) -> float:
        """gCO2 per hour one replica causes on ``node``: the marginal watts of its CPU times the grid intensity.

        The power model is linear in CPU use, so the marginal draw of ``req.cpu`` cores is the node's dynamic
        range per core times the cores requested; idle draw is paid whether or not the replica lands here.
        """
        power = node.power
        marginal_watts = (power.max_watts - power.idle_watts) / node.cpu * req.cpu
        return marginal_watts * cluster.carbon_intensity / 1000.0
