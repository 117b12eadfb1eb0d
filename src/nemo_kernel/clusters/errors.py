"""Errors a cluster driver or provider raises besides :class:`~nemo_kernel.clusters.base.ClusterUnreachable`."""

from __future__ import annotations

from typing import Any

from nemo_kernel.domain import DriverKind


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


class DriverUnavailable(LookupError):
    """No provider can open clusters of this driver kind (none is registered, or its module does not load).

    The clusters of that kind stay without a driver, and say why; the others are unaffected.
    """

    def __init__(self, kind: DriverKind, reason: str) -> None:
        super().__init__(f"driver {kind.value} is not available: {reason}")
        self.kind = kind
        self.reason = reason
