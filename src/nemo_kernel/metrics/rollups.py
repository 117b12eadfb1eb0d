"""Downsampled history: 1-minute and 1-hour buckets of every series, computed from raw samples, kept in a store.

A bucket holds ``count, sum, min, max, last`` of the samples in it and, for counters, their ``increase`` (resets
handled). They answer the parts of a query's windows older than the raw samples held in memory (after the raw
retention, and after a restart). The store is the :class:`RollupStore` protocol, implemented on the database by
``nemo_kernel.store.rollups``; rows are plain tuples (:data:`RollupRow`) since the store does not import this
package.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from nemo_kernel.metrics.functions import Times, Values

MINUTE = 60
HOUR = 3600
RESOLUTIONS: tuple[int, ...] = (MINUTE, HOUR)
"""Bucket widths in seconds, finest first."""

RollupRow = tuple[str, str, int, int, int, float, float, float, float, float]
"""``(metric name, labels as canonical JSON, resolution s, bucket start unix s, count, sum, min, max, last,
increase)``. Saving a row for a bucket already stored merges them: counts, sums and increases add, min and max
combine, ``last`` is the newer row's (rows of a series are saved in time order)."""


class RollupStore(Protocol):
    """Where rollups are kept so that history survives a restart (``store.rollups.DatabaseRollups``)."""

    def save(self, rows: Sequence[RollupRow]) -> None:
        """Merge ``rows`` into the stored buckets, in one transaction."""

    def load(self, name: str, resolution: int, since: int, until: int) -> list[RollupRow]:
        """The buckets of series called ``name`` at ``resolution`` that start in ``[since, until)`` (unix s),
        ordered by series, then start."""

    def prune(self, resolution: int, before: int) -> int:
        """Forget the buckets of ``resolution`` that start before ``before`` (unix s); returns how many."""


def labels_key(labels: Mapping[str, str]) -> str:
    """The canonical text of a label set: the same labels always give the same text."""
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"), ensure_ascii=False)


def rollup_rows(
    name: str,
    labels_text: str,
    times: Times,
    values: Values,
    before: float,
) -> list[RollupRow]:
    """The buckets of both resolutions over the samples ``times``/``values`` (ms, oldest first).

    ``before`` is the series' value just before the first sample (NaN if unknown): the increase of the first
    sample is counted from it. A bucket may be partial (the rest comes in a later call, and the store merges).
    """
    if len(times) == 0:
        return []
    previous = np.concatenate(([before], values[:-1]))
    deltas = values - previous
    # Reset-aware increase per sample: after a reset the counter restarted from zero; unknown before -> 0.
    increase = np.where(deltas >= 0, deltas, values)
    increase[np.isnan(previous)] = 0.0
    rows: list[RollupRow] = []
    for resolution in RESOLUTIONS:
        width = resolution * 1000
        bucket = times // width
        firsts = np.flatnonzero(np.concatenate(([True], bucket[1:] != bucket[:-1])))
        lasts = np.concatenate((firsts[1:], [len(times)])) - 1
        counts = lasts - firsts + 1
        sums = np.add.reduceat(values, firsts)
        mins = np.fmin.reduceat(values, firsts)
        maxs = np.fmax.reduceat(values, firsts)
        incs = np.add.reduceat(increase, firsts)
        columns = zip(bucket[firsts].tolist(), counts.tolist(), sums, mins, maxs, values[lasts], incs, strict=True)
        rows.extend(
            (name, labels_text, resolution, b * resolution, c, float(s), float(lo), float(hi), float(v), float(i))
            for b, c, s, lo, hi, v, i in columns
        )
    return rows


class History:
    """A series' rollup buckets older than its raw samples, as arrays, for the evaluator (finest covering wins:
    hours only before the first minute bucket)."""

    __slots__ = ("counts", "ends", "incs", "lasts", "maxs", "mins", "raw_from", "starts", "sums")

    def __init__(self, rows: Sequence[RollupRow], raw_from: int | None = None) -> None:
        """``rows`` of one series, of both resolutions, in any order; raw samples before ``raw_from`` (ms) are
        already counted in them."""
        self.raw_from = raw_from if raw_from is not None else -(1 << 62)
        minutes = sorted((r for r in rows if r[2] == MINUTE), key=lambda r: r[3])
        first_minute = minutes[0][3] if minutes else math.inf
        hours = sorted((r for r in rows if r[2] == HOUR and r[3] + HOUR <= first_minute), key=lambda r: r[3])
        kept = hours + minutes
        self.starts = np.array([r[3] * 1000 for r in kept], dtype=np.int64)
        self.ends = np.array([(r[3] + r[2]) * 1000 for r in kept], dtype=np.int64)
        self.counts = np.array([r[4] for r in kept], dtype=np.float64)
        self.sums = np.array([r[5] for r in kept], dtype=np.float64)
        self.mins = np.array([r[6] for r in kept], dtype=np.float64)
        self.maxs = np.array([r[7] for r in kept], dtype=np.float64)
        self.lasts = np.array([r[8] for r in kept], dtype=np.float64)
        self.incs = np.array([r[9] for r in kept], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.starts)

    def within(self, start: int, end: int) -> slice:
        """The buckets lying wholly in ``[start, end]`` (ms)."""
        lo = int(np.searchsorted(self.starts, start, side="left"))
        hi = int(np.searchsorted(self.ends, end, side="right"))
        return slice(lo, max(lo, hi))
