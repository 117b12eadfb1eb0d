"""Cost: EUR per hour of one replica at the cluster's prices; the cheapest feasible node scores 1.0."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from nemo_kernel.orchestrator.decision.candidates import ClusterCandidate, NodeCandidate
from nemo_kernel.orchestrator.decision.filters import Requirements
from nemo_kernel.orchestrator.decision.table import Floats, Ints, NodeTable

_MIB_PER_GIB = 1024.0


class CostPerHour:
    """The price of one replica per hour; prices are per cluster, so every node of a cluster costs the same."""

    name: ClassVar[str] = "cost"
    lower_is_better: ClassVar[bool] = True

    def raw(self, cluster: ClusterCandidate, node: NodeCandidate, req: Requirements) -> float:
        """EUR per hour of one replica on ``cluster``."""
        prices = cluster.prices
        return req.cpu * prices.cpu_hour_eur + req.memory_mib / _MIB_PER_GIB * prices.gib_hour_eur

    def raw_many(self, table: NodeTable, rows: Ints, req: Requirements) -> Floats:
        """``raw`` of many rows."""

        # Per cluster (a tenth of the nodes), then spread over every row: prices are static, so kept per request size.
        def every_row() -> Floats:
            per_cluster = req.cpu * table.cluster_cpu_price + req.memory_mib / _MIB_PER_GIB * table.cluster_gib_price
            spread: Floats = np.take(per_cluster, table.cluster_of)
            spread.setflags(write=False)
            return spread

        size = (req.cpu, req.memory_mib)
        return table.gathered(("cost", size), table.sized(("cost", size), every_row), rows)
