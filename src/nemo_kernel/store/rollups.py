"""The embedded metrics store's history in the database: 1-minute and 1-hour buckets per series.

Implements ``nemo_kernel.metrics.rollups.RollupStore`` with plain tuples (the store does not import ``metrics``):
``(name, labels text, resolution s, start unix s, count, sum, min, max, last, increase)``. Saving a bucket that
exists merges it (an upsert on SQLite and PostgreSQL), so a bucket may be written in parts: by successive flushes,
and across a restart.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, case, delete, exists, select
from sqlalchemy.dialects import postgresql, sqlite

from nemo_kernel.store.db import Database
from nemo_kernel.store.tables import MetricRollupRow, MetricSeriesRow

Row = tuple[str, str, int, int, int, float, float, float, float, float]

_BATCH = 5_000  # rows per statement: bounded memory per round trip, few round trips


def series_id(name: str, labels: str) -> str:
    """The stored id of a series: a digest of its name and canonical label text."""
    return hashlib.sha256(f"{name}\x00{labels}".encode()).hexdigest()


def _stored(value: float) -> float | None:
    return None if math.isnan(value) else value  # SQLite stores NaN as NULL anyway; say so on both


def _loaded(value: float | None) -> float:
    return math.nan if value is None else value


class DatabaseRollups:
    """Rollups in the ``metric_series`` and ``metric_rollups`` tables of ``db``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert

    def save(self, rows: Sequence[Row]) -> None:
        """Merge ``rows`` into the stored buckets in one transaction (counts, sums, increases add; min and max
        combine; ``last`` is the new row's)."""
        if not rows:
            return
        series: dict[str, dict[str, Any]] = {}
        buckets: dict[tuple[str, int, int], dict[str, Any]] = {}
        for name, labels, resolution, start, count, total, low, high, last, increase in rows:
            sid = series_id(name, labels)
            series.setdefault(sid, {"id": sid, "name": name, "labels": labels})
            key = (sid, resolution, start)
            row = buckets.get(key)
            if row is None:
                buckets[key] = {
                    "series_id": sid,
                    "resolution": resolution,
                    "start": start,
                    "count": count,
                    "sum": total,
                    "min": low,
                    "max": high,
                    "last": last,
                    "increase": increase,
                }
            else:  # one statement may not touch a row twice (PostgreSQL): merge duplicates here
                row["count"] += count
                row["sum"] += total
                row["min"] = min(row["min"], low)
                row["max"] = max(row["max"], high)
                row["last"] = last
                row["increase"] += increase
        for row in buckets.values():
            for column in ("sum", "min", "max", "last", "increase"):
                row[column] = _stored(row[column])
        new_series = self._insert(MetricSeriesRow).on_conflict_do_nothing(index_elements=["id"])
        upsert = self._insert(MetricRollupRow)
        new, old = upsert.excluded, MetricRollupRow
        upsert = upsert.on_conflict_do_update(
            index_elements=["series_id", "resolution", "start"],
            set_={
                "count": old.count + new["count"],
                "sum": old.sum + new["sum"],
                "min": _least(old.min, new["min"]),
                "max": _greatest(old.max, new["max"]),
                "last": new["last"],
                "increase": old.increase + new["increase"],
            },
        )
        with self.db.transaction() as s:
            values = list(series.values())
            for i in range(0, len(values), _BATCH):
                s.execute(new_series, values[i : i + _BATCH])
            bucket_rows = list(buckets.values())
            for i in range(0, len(bucket_rows), _BATCH):
                s.execute(upsert, bucket_rows[i : i + _BATCH])

    def load(self, name: str, resolution: int, since: int, until: int) -> list[Row]:
        """The buckets of the series called ``name`` at ``resolution`` starting in ``[since, until)``."""
        query = (
            select(
                MetricSeriesRow.labels,
                MetricRollupRow.start,
                MetricRollupRow.count,
                MetricRollupRow.sum,
                MetricRollupRow.min,
                MetricRollupRow.max,
                MetricRollupRow.last,
                MetricRollupRow.increase,
            )
            .join(MetricSeriesRow, MetricSeriesRow.id == MetricRollupRow.series_id)
            .where(
                MetricSeriesRow.name == name,
                MetricRollupRow.resolution == resolution,
                MetricRollupRow.start >= since,
                MetricRollupRow.start < until,
            )
            .order_by(MetricRollupRow.series_id, MetricRollupRow.start)
        )
        with self.db.transaction() as s:
            return [
                (
                    name,
                    labels,
                    resolution,
                    start,
                    count,
                    _loaded(total),
                    _loaded(low),
                    _loaded(high),
                    _loaded(last),
                    _loaded(increase),
                )
                for labels, start, count, total, low, high, last, increase in s.execute(query)
            ]

    def prune(self, resolution: int, before: int) -> int:
        """Delete the buckets of ``resolution`` starting before ``before``, then series left without buckets."""
        with self.db.transaction() as s:
            result = s.execute(
                delete(MetricRollupRow).where(MetricRollupRow.resolution == resolution, MetricRollupRow.start < before)
            )
            gone = int(getattr(result, "rowcount", 0) or 0)  # a CursorResult: DML results carry the row count
            if gone:
                s.execute(
                    delete(MetricSeriesRow).where(~exists().where(MetricRollupRow.series_id == MetricSeriesRow.id))
                )
            return gone


def _least(old: Any, new: Any) -> ColumnElement[Any]:
    # Portable LEAST/GREATEST (SQLite has neither under those names); NULL (NaN) loses to a number.
    return case((old.is_(None), new), (new < old, new), else_=old)


def _greatest(old: Any, new: Any) -> ColumnElement[Any]:
    return case((old.is_(None), new), (new > old, new), else_=old)
