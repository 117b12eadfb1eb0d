"""Events: every state change is stored, then published on the bus under its routing key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from nemo_kernel.domain.common import Model


class Event(Model):
    """A stored state change. ``kind`` is the bus routing key, ``<domain>.<event>``."""

    id: int
    kind: str = Field(pattern=r"^[a-z_]+(\.[a-z_]+)+$")
    subject: str = Field(description="what it is about: 'cluster/<name>' or 'workload/<ns>/<name>'")
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
