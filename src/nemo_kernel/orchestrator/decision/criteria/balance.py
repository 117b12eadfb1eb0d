"""Balance: the fraction of a node left free after it takes one more replica; load-dependent, not normalised."""

from __future__ import annotations

from typing import ClassVar

from nemo_kernel.orchestrator.decision.candidates import ClusterCandidate, NodeCandidate
from nemo_kernel.orchestrator.decision.criteria.base import NodeLoad
from nemo_kernel.orchestrator.decision.filters import Requirements


class Balance:
    """Prefers the node that keeps the most free after taking the replica, so load spreads by capacity.

    Already a fraction, so it is not min-max normalised: stretching 0.50 vs 0.51 free to 0.0 vs 1.0 would make a
    sliver of capacity outweigh a real price or carbon difference (see ``base``).
    """

    name: ClassVar[str] = "balance"

    def score(self, cluster: ClusterCandidate, node: NodeCandidate, load: NodeLoad, req: Requirements) -> float:
        """The lower of the CPU and memory fractions ``node`` keeps free with one more replica on ``load``."""
        free = min(
            1.0 - (load.used_cpu + req.cpu) / node.cpu, 1.0 - (load.used_memory_mib + req.memory_mib) / node.memory_mib
        )
        return min(max(free, 0.0), 1.0)
