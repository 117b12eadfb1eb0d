"""Energy: the watts one more replica adds to a node at its projected utilisation; the most frugal node scores 1.0.

The node's power model gives its draw at a utilisation (:func:`nemo_kernel.metrics.energy.power_at`, the same
function the meters use); the replica's cost is the draw with it minus the draw without it, utilisation being
allocated CPU over capacity, capped at 1. With the linear model this is the node's dynamic range per core times
the cores requested (until the node saturates); a node with a piecewise table is interpolated in it (a node near
the steep part of its curve costs more per core). Idle draw is paid whether or not the replica lands there, so it
is not counted. Carbon is this times the grid's intensity (``carbon``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from nemo_kernel.metrics.energy import power_at
from nemo_kernel.orchestrator.decision.candidates import ClusterCandidate, NodeCandidate
from nemo_kernel.orchestrator.decision.filters import Requirements
from nemo_kernel.orchestrator.decision.table import Floats, Ints, NodeTable


def added_watts(node: NodeCandidate, cpu: float) -> float:
    """The watts ``cpu`` more cores add to ``node`` on top of what is allocated there."""
    before = min(node.allocated_cpu / node.cpu, 1.0)
    after = min((node.allocated_cpu + cpu) / node.cpu, 1.0)
    return power_at(node.power, after) - power_at(node.power, before)


def added_watts_many(table: NodeTable, rows: Ints, req: Requirements) -> Floats:
    """``added_watts`` of many rows for one replica of ``req``: the same operations, in the same order, on arrays.

    Kept by the table per allocation, rows and CPU request (``NodeTable.by_allocation``); read-only.
    """

    def compute() -> Floats:
        result = _watts(
            np.take(table.cpu, rows),
            np.take(table.allocated_cpu, rows),
            np.take(table.idle_watts, rows),
            np.take(table.dynamic_watts, rows),
            req.cpu,
        )
        if _any_tabled(table):
            _interpolate(table, rows, result, req.cpu)
        result.setflags(write=False)
        return result

    def update(column: Floats, positions: list[int]) -> None:
        tabled = _any_tabled(table)
        for i in positions:
            row = int(rows[i])
            column[i] = (
                added_watts(table.node(row), req.cpu)
                if tabled and table.power_tabled[row]
                else _watts_at(table, row, req.cpu)
            )

    return table.by_allocation(("added-watts", req.cpu), rows, compute, update)


def _watts_at(table: NodeTable, row: int, cpu: float) -> float:
    """``_watts`` at one row, in Python floats (IEEE doubles too: the same operations, the same result)."""
    capacity, allocated = float(table.cpu[row]), float(table.allocated_cpu[row])
    idle, dynamic = float(table.idle_watts[row]), float(table.dynamic_watts[row])
    before = min(allocated / capacity, 1.0)
    after = min((allocated + cpu) / capacity, 1.0)
    return (dynamic * after + idle) - (dynamic * before + idle)


def _watts(capacity: Floats, allocated: Floats, idle: Floats, dynamic: Floats, cpu: float) -> Floats:
    """(idle + dynamic * after) - (idle + dynamic * before), computed in place in ``allocated`` (the same operations
    as ``added_watts`` on the linear model)."""
    before = np.divide(allocated, capacity)
    np.minimum(before, 1.0, out=before)
    after = np.add(allocated, cpu, out=allocated)
    np.divide(after, capacity, out=after)
    np.minimum(after, 1.0, out=after)
    result: Floats = np.add(np.multiply(dynamic, after, out=after), idle, out=after)
    result -= np.add(np.multiply(dynamic, before, out=before), idle, out=before)
    return result


def _any_tabled(table: NodeTable) -> bool:
    tabled: bool = table.memo("any-power-tabled", lambda: bool(table.power_tabled.any()))
    return tabled


def _interpolate(table: NodeTable, rows: Ints, result: Floats, cpu: float) -> None:
    """Nodes with a power table (few, usually) are interpolated one by one, as ``added_watts`` does."""
    for i in np.flatnonzero(np.take(table.power_tabled, rows)).tolist():
        result[i] = added_watts(table.node(int(rows[i])), cpu)


class EnergyWatts:
    """Watts one replica adds to the node, at the node's projected utilisation."""

    name: ClassVar[str] = "energy"
    lower_is_better: ClassVar[bool] = True

    def raw(self, cluster: ClusterCandidate, node: NodeCandidate, req: Requirements) -> float:
        """Watts one replica of ``req`` adds to ``node``."""
        return added_watts(node, req.cpu)

    def raw_many(self, table: NodeTable, rows: Ints, req: Requirements) -> Floats:
        """``raw`` of many rows."""
        return added_watts_many(table, rows, req)
