"""Carbon: gCO2 per hour one replica causes on a node; the greenest feasible node scores 1.0."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from nemo_kernel.orchestrator.decision.candidates import ClusterCandidate, NodeCandidate
from nemo_kernel.orchestrator.decision.criteria.base import clusters_of_rows
from nemo_kernel.orchestrator.decision.criteria.energy import added_watts, added_watts_many, added_watts_of_all
from nemo_kernel.orchestrator.decision.filters import Requirements
from nemo_kernel.orchestrator.decision.table import Floats, Ints, NodeTable


class CarbonPerHour:
    """The emissions of one replica per hour: the watts it adds (``energy``) times the cluster's grid intensity.

    The intensity is the cluster's configured one (gCO2/kWh), a pure input; a time series from the analytics engine
    can replace it by giving the candidates the current value.
    """

    name: ClassVar[str] = "carbon"
    lower_is_better: ClassVar[bool] = True

    def raw(self, cluster: ClusterCandidate, node: NodeCandidate, req: Requirements) -> float:
        """gCO2 per hour one replica causes on ``node``."""
        return added_watts(node, req.cpu) * cluster.carbon_intensity / 1000.0

    def raw_many(self, table: NodeTable, rows: Ints, req: Requirements) -> Floats:
        """``raw`` of many rows."""
        if 2 * len(rows) >= len(table):  # most rows (a decision's feasible nodes): every row's, kept, then gathered
            return table.gathered(("carbon", req.cpu), _carbon_of_all(table, req), rows)
        intensity = np.take(table.cluster_intensity, clusters_of_rows(table, rows, req))
        result: Floats = added_watts_many(table, rows, req) * intensity / 1000.0
        return result


def _carbon_of_all(table: NodeTable, req: Requirements) -> Floats:
    """``raw`` of every row of ``table``, kept per allocation and CPU request."""

    def compute() -> Floats:
        intensity = table.memo("intensity-of-rows", lambda: np.take(table.cluster_intensity, table.cluster_of))
        result: Floats = added_watts_of_all(table, req) * intensity / 1000.0
        result.setflags(write=False)
        return result

    found: Floats = table.by_allocation(("carbon", req.cpu), compute)
    return found
