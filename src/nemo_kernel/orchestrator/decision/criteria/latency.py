"""Latency: the workload's users' weighted mean round-trip time to a cluster's region; the nearest scores 1.0.

The users are ``placement.users`` (region and share); the times come from the latency matrix the engine was given
(``LatencyMatrix``: a setting). A workload without users scores every cluster the same, so latency changes nothing
for it. ``placement.max_latency_ms`` is the matching filter (``filters.latency``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from nemo_kernel.orchestrator.decision.candidates import ClusterCandidate, NodeCandidate
from nemo_kernel.orchestrator.decision.filters import Requirements
from nemo_kernel.orchestrator.decision.table import Floats, Ints, NodeTable


def latency_by_region(table: NodeTable, req: Requirements) -> Floats:
    """The users' mean latency to each region of ``table``, indexed by region code."""
    return np.array([req.latency_ms(region) for region in table.regions.names], dtype=np.float64)


class LatencyMs:
    """Milliseconds from the workload's users to the cluster, their shares weighing each region."""

    name: ClassVar[str] = "latency"
    lower_is_better: ClassVar[bool] = True

    def raw(self, cluster: ClusterCandidate, node: NodeCandidate, req: Requirements) -> float:
        """The users' weighted mean round-trip time to ``cluster``'s region, in ms (0 without users)."""
        return req.latency_ms(cluster.region)

    def raw_many(self, table: NodeTable, rows: Ints, req: Requirements) -> Floats:
        """``raw`` of many rows; kept by the table for the next decision with the same users and matrix."""

        def compute() -> Floats:
            if not req.users:
                result: Floats = np.zeros(len(rows), dtype=np.float64)
            else:
                result = latency_by_region(table, req)[table.cluster_region[table.cluster_of[rows]]]
            result.setflags(write=False)
            return result

        # The users are in the key, the matrix and the rows are compared by identity.
        kept: Floats = table.derived(("latency", req.users), (rows, req.latency if req.users else None), compute)
        return kept
