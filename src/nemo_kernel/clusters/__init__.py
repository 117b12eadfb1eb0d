"""Clusters: the ClusterDriver protocol, the providers that open drivers per kind, and optional capabilities.

Drivers live in subpackages (``local``, ``sim``; ``kubernetes`` later) and are reached only through
:class:`DriverProviders` (``clusters.registry``), which imports a driver's module when a cluster of its kind
first needs it; nothing outside this package imports a driver.
"""

from nemo_kernel.clusters.base import (
    ClusterDriver,
    ClusterReport,
    ClusterUnreachable,
    DriverProvider,
    NodeReport,
    ReplicaReport,
    ReplicaSpec,
    SupportsAgentPid,
)
from nemo_kernel.clusters.capabilities import (
    MAX_STATE_BYTES,
    Link,
    ProbeEndpoints,
    StateSnapshot,
    SupportsCheckpoint,
    SupportsFaultInjection,
    SupportsLinkEmulation,
    SupportsLinkProbes,
    SupportsMetrics,
    SupportsStateHandoff,
)
from nemo_kernel.clusters.errors import DriverUnavailable, ReplicaRejected
from nemo_kernel.clusters.registry import DriverProviders

__all__ = [
    "MAX_STATE_BYTES",
    "ClusterDriver",
    "ClusterReport",
    "ClusterUnreachable",
    "DriverProvider",
    "DriverProviders",
    "DriverUnavailable",
    "Link",
    "NodeReport",
    "ProbeEndpoints",
    "ReplicaRejected",
    "ReplicaReport",
    "ReplicaSpec",
    "StateSnapshot",
    "SupportsAgentPid",
    "SupportsCheckpoint",
    "SupportsFaultInjection",
    "SupportsLinkEmulation",
    "SupportsLinkProbes",
    "SupportsMetrics",
    "SupportsStateHandoff",
]
