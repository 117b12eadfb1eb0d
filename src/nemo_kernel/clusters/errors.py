"""Errors a cluster driver raises besides :class:`~nemo_kernel.clusters.base.ClusterUnreachable`."""

from __future__ import annotations

from typing import Any


class ReplicaRejected(ValueError):
    """The cluster answered, but refuses the replica as specified (unknown node, nothing it can run, ...).

    Retrying the same spec cannot succeed, unlike :class:`ClusterUnreachable`: the engine should
    reschedule or report the workload as failed instead.
    """

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
