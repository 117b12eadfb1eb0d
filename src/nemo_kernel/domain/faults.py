"""Faults an operator injects into a cluster to see how the continuum copes (chaos testing, demos)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, model_validator

from nemo_kernel.domain.common import Lax, Model, Name, Spec

MIN_FAULT_SECONDS = 0.1
"""Shorter faults end before any heartbeat or reconcile pass could see them: they would only look like a no-op."""
MAX_FAULT_SECONDS = 86_400.0
"""Longest fault (a day): a fault always ends by itself."""

MAX_SLOW_MS = 600_000
"""Longest delay a ``slow`` fault adds to each call (ten minutes: far beyond any heartbeat timeout)."""


class FaultKind(StrEnum):
    """What goes wrong."""

    DOWN = "down"  # the cluster is gone: it answers nothing and its replicas are lost
    NODE_DOWN = "node_down"  # one node is NotReady and its replicas fail
    PARTITION = "partition"  # the cluster does not answer, but its replicas keep running
    SLOW = "slow"  # every call to the cluster (heartbeats included) is delayed


class FaultSpec(Spec):
    """A fault to inject: its kind, the node (``node_down``), the delay (``slow``) and how long it lasts."""

    kind: Annotated[FaultKind, Lax]
    node: Name | None = Field(default=None, description="the node that goes down (node_down only)")
    slow_ms: int | None = Field(default=None, ge=1, le=MAX_SLOW_MS, description="delay per call (slow only)")
    for_s: float = Field(
        ge=MIN_FAULT_SECONDS, le=MAX_FAULT_SECONDS, description="seconds until the fault ends by itself"
    )

    @model_validator(mode="after")
    def _fields_of_its_kind(self) -> FaultSpec:
        if (self.kind is FaultKind.NODE_DOWN) != (self.node is not None):
            raise ValueError("node is required for a node_down fault, and only for it")
        if (self.kind is FaultKind.SLOW) != (self.slow_ms is not None):
            raise ValueError("slow_ms is required for a slow fault, and only for it")
        return self


class Fault(Model):
    """A fault injected into a cluster; ``id`` is that of its ``cluster.fault_started`` event."""

    id: int
    cluster: str
    spec: FaultSpec
    started_at: datetime
    ends_at: datetime
