"""Clusters: one ClusterDriver protocol; drivers ``local`` (processes) now, ``sim`` and ``kubernetes`` later."""

from nemo_kernel.clusters.base import (
    ClusterDriver,
    ClusterReport,
    ClusterUnreachable,
    NodeReport,
    ReplicaReport,
    ReplicaSpec,
)
from nemo_kernel.clusters.errors import ReplicaRejected
from nemo_kernel.clusters.local import LocalAgentLauncher, LocalClusterDriver

__all__ = [
    "ClusterDriver",
    "ClusterReport",
    "ClusterUnreachable",
    "LocalAgentLauncher",
    "LocalClusterDriver",
    "NodeReport",
    "ReplicaRejected",
    "ReplicaReport",
    "ReplicaSpec",
]
