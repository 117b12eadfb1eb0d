"""Balance: the fraction of a node left free after it takes one more replica; load-dependent, not normalised."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from nemo_kernel.orchestrator.decision.candidates import ClusterCandidate, NodeCandidate
from nemo_kernel.orchestrator.decision.criteria.base import LoadColumns, NodeLoad
from nemo_kernel.orchestrator.decision.filters import Requirements
from nemo_kernel.orchestrator.decision.table import Floats, Ints, NodeTable


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

    def score_many(self, table: NodeTable, rows: Ints, loads: LoadColumns, req: Requirements) -> Floats:
        """``score`` of many rows."""
        free = np.minimum(
            1.0 - (loads.used_cpu + req.cpu) / np.take(table.cpu, rows),
            1.0 - (loads.used_memory_mib + req.memory_mib) / np.take(table.memory_mib, rows),
        )
        result: Floats = np.minimum(np.maximum(free, 0.0), 1.0)
        return result
