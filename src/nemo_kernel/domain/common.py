"""Shared building blocks of the domain models."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _check_name(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(
            "must be a DNS label: lower-case letters, digits and '-', 1-63 characters, "
            "starting and ending with a letter or digit"
        )
    return value


Name = Annotated[str, AfterValidator(_check_name)]
"""A resource name (cluster, node, workload, namespace): a DNS label, as in Kubernetes."""

Labels = dict[str, str]


class Model(BaseModel):
    """Base for domain models: unknown fields are an error, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)
