"""Carbon: gCO2 per hour one replica causes on a node; the greenest feasible node scores 1.0."""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import numpy as np

from nemo_kernel.orchestrator.decision.candidates import ClusterCandidate, NodeCandidate
from nemo_kernel.orchestrator.decision.criteria.energy import added_watts, added_watts_many
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
        """``raw`` of many rows: kept by the table per allocation, rows and CPU request (read-only)."""
        watts = added_watts_many(table, rows, req)
        every: Floats = table.memo("intensity-of-rows", partial(_intensity_of_rows, table))
        intensity = table.gathered("intensity", every, rows)

        def compute() -> Floats:
            result: Floats = watts * intensity / 1000.0
            result.setflags(write=False)
            return result

        def update(column: Floats, positions: list[int]) -> None:
            for i in positions:
                column[i] = float(watts[i]) * float(intensity[i]) / 1000.0

        return table.by_allocation(("carbon", req.cpu), rows, compute, update)


def _intensity_of_rows(table: NodeTable) -> Floats:
    """Each row's cluster's grid intensity (read-only: kept by the table)."""
    result: Floats = np.take(table.cluster_intensity, table.cluster_of)
    result.setflags(write=False)
    return result
