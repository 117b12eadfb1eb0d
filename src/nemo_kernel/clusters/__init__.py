"""Clusters: one ClusterDriver protocol; drivers ``local`` (processes) now, ``sim`` and ``kubernetes`` later."""

from nemo_kernel.clusters.base import (
    ClusterDriver,
    ClusterReport,
    ClusterUnreachable,
    NodeReport,
    ReplicaReport,
    ReplicaSpec,
)

__all__ = ["ClusterDriver", "ClusterReport", "ClusterUnreachable", "NodeReport", "ReplicaReport", "ReplicaSpec"]
