"""Query parameters shared by the routers, each bounded so no value reaches the store it cannot hold."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

#: The largest id or offset the store holds (a signed 64-bit integer on SQLite and PostgreSQL alike); a larger
#: value would fail in the database driver instead of being refused as invalid input.
MAX_INT64 = (1 << 63) - 1

After = Annotated[int, Query(ge=0, le=MAX_INT64, description="only entries with a larger id (paging)")]
Offset = Annotated[int, Query(ge=0, le=MAX_INT64, description="entries to skip (paging)")]
WorkloadPage = Annotated[int, Query(ge=1, le=1000, description="at most this many workloads")]
EventPage = Annotated[int, Query(ge=1, le=5000, description="at most this many events")]
