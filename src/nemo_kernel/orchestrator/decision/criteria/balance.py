"""Balance: the fraction of a node left free after it takes one more replica; load-dependent, not normalised."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from nemo_kernel.orchestrator.decision.candidates import ClusterCandidate, NodeCandidate
from nemo_kernel.orchestrator.decision.criteria.base import LoadColumns, NodeLoad, capacity_at
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
        cpu = np.add(loads.used_cpu, req.cpu)
        np.divide(cpu, capacity_at(table, rows, req), out=cpu)
        memory = np.add(loads.used_memory_mib, req.memory_mib)
        np.divide(memory, np.take(table.memory_mib, rows), out=memory)
        # min(1 - a, 1 - b) is 1 - max(a, b) bit for bit (rounding is monotonic).
        free = np.subtract(1.0, np.maximum(cpu, memory, out=cpu), out=cpu)
        result: Floats = np.minimum(np.maximum(free, 0.0, out=free), 1.0, out=free)
        return result
