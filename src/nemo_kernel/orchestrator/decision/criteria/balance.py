"""Balance: the fraction of a node left free after it takes one more replica; load-dependent, not normalised."""

from __future__ import annotations

from functools import partial
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
        if loads.as_table:
            # The table's allocation (a decision's feasible nodes before it places anything): kept by the table per
            # allocation, rows and request size.
            return table.by_allocation(
                ("balance", req.cpu, req.memory_mib),
                rows,
                partial(_scores, table, rows, req),
                partial(_update, table, rows, req),
            )
        memory = np.take(table.memory_mib, rows)
        return _free_share(loads.used_cpu, capacity_at(table, rows, req), loads.used_memory_mib, memory, req)


def _scores(table: NodeTable, rows: Ints, req: Requirements) -> Floats:
    result = _free_share(
        np.take(table.allocated_cpu, rows),
        np.take(table.cpu, rows),
        np.take(table.allocated_memory_mib, rows),
        np.take(table.memory_mib, rows),
        req,
    )
    result.setflags(write=False)
    return result


def _update(table: NodeTable, rows: Ints, req: Requirements, column: Floats, positions: list[int]) -> None:
    """``_scores`` again at ``positions``, in Python floats (IEEE doubles too: the same operations, the same result)."""
    for i in positions:
        row = int(rows[i])
        cpu_share = (float(table.allocated_cpu[row]) + req.cpu) / float(table.cpu[row])
        memory_share = (float(table.allocated_memory_mib[row]) + req.memory_mib) / float(table.memory_mib[row])
        column[i] = min(max(1.0 - max(cpu_share, memory_share), 0.0), 1.0)


def _free_share(used_cpu: Floats, cpu: Floats, used_memory: Floats, memory: Floats, req: Requirements) -> Floats:
    """``Balance.score`` on arrays, the same operations."""
    cpu_share = np.add(used_cpu, req.cpu)
    np.divide(cpu_share, cpu, out=cpu_share)
    memory_share = np.add(used_memory, req.memory_mib)
    np.divide(memory_share, memory, out=memory_share)
    # min(1 - a, 1 - b) is 1 - max(a, b) bit for bit (rounding is monotonic).
    free = np.subtract(1.0, np.maximum(cpu_share, memory_share, out=cpu_share), out=cpu_share)
    result: Floats = np.minimum(np.maximum(free, 0.0, out=free), 1.0, out=free)
    return result
