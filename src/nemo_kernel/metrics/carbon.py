"""The carbon intensity of a cluster's grid: its constant, or the reading in force of a CSV time series.

A CSV source is a file on the control plane's machine, named in a cluster spec that an operator may write: it is
read only under a directory an admin allowed (``NEMO_CARBON_DATA_ROOTS``, symlinks resolved), as petitions' local
paths are under ``NEMO_PETITION_ROOTS``. Anything else about the file (unreadable, malformed) leaves the cluster on its
constant, with the reason logged once.
"""

from __future__ import annotations

import bisect
import csv
import io
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from stat import S_ISREG

from nemo_kernel.domain import ClusterSpec
from nemo_kernel.domain.cluster import MAX_CARBON_INTENSITY

log = logging.getLogger(__name__)

ROOTS_SETTING = "NEMO_CARBON_DATA_ROOTS"
MAX_FILE_BYTES = 16 << 20
"""A year of 5-minute readings is about 2 MiB; a bigger file is refused, not read into memory."""
MAX_READINGS = 1_000_000


class CarbonSourceRefused(ValueError):
    """The source may not or cannot be read; the message says why (never the file's contents)."""


def allowed(path: str, roots: Sequence[Path]) -> Path:
    """``path`` resolved (symlinks followed), if it lies under one of ``roots``; raises :class:`CarbonSourceRefused`."""
    if not roots:
        raise CarbonSourceRefused(f"carbon intensity files are not allowed: {ROOTS_SETTING} is empty")
    resolved = Path(os.path.realpath(path))
    for root in roots:
        if resolved.is_relative_to(Path(os.path.realpath(root))):
            return resolved
    raise CarbonSourceRefused(f"{path} is not under a directory of {ROOTS_SETTING}")


@dataclass(frozen=True)
class CarbonSeries:
    """Readings of a grid's intensity, oldest first: ``times`` in unix seconds, ``grams_per_kwh`` their values."""

    times: Sequence[float]
    grams_per_kwh: Sequence[float]

    def at(self, when: float) -> float | None:
        """The reading in force at ``when`` (the latest not after it); None before the first reading."""
        i = bisect.bisect_right(self.times, when)
        return None if i == 0 else self.grams_per_kwh[i - 1]


def parse_csv(text: str) -> CarbonSeries:
    """``timestamp,grams_per_kwh`` rows (an optional header; ISO 8601 with an offset, or unix seconds), in any
    order; raises :class:`CarbonSourceRefused` naming the first bad row."""
    rows: list[tuple[float, float]] = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise CarbonSourceRefused(f"row {number}: expected timestamp,grams_per_kwh")
        stamp, value = (cell.strip() for cell in row)
        if number == 1 and not _is_number(value):
            continue  # a header
        try:
            when = float(stamp) if _is_number(stamp) else _iso(stamp)
            grams = float(value)
        except ValueError as exc:
            raise CarbonSourceRefused(f"row {number}: {exc}") from None
        if not math.isfinite(when) or not math.isfinite(grams) or not 0 <= grams <= MAX_CARBON_INTENSITY:
            raise CarbonSourceRefused(f"row {number}: intensity must be 0 to {MAX_CARBON_INTENSITY:g} gCO2/kWh")
        rows.append((when, grams))
        if len(rows) > MAX_READINGS:
            raise CarbonSourceRefused(f"more than {MAX_READINGS} readings")
    if not rows:
        raise CarbonSourceRefused("no readings")
    rows.sort()
    return CarbonSeries([t for t, _ in rows], [g for _, g in rows])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _iso(text: str) -> float:
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return when.timestamp()


class CarbonIntensity:
    """Answers "how clean is cluster X's grid now" for the collector, re-reading a CSV only when it changes."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self._roots = list(roots)
        self._files: dict[Path, tuple[tuple[int, int], CarbonSeries]] = {}  # path -> ((mtime_ns, size), series)
        self._reported: dict[str, str] = {}  # cluster -> last error logged

    def at(self, spec: ClusterSpec, when: float) -> float:
        """The cluster's intensity at ``when``: its series' reading, else its constant ``carbon_intensity``."""
        source = spec.carbon_intensity_source
        if source is None:
            return spec.carbon_intensity
        try:
            reading = self._series(source.csv).at(when)
        except (CarbonSourceRefused, OSError) as exc:
            why = str(exc) if isinstance(exc, CarbonSourceRefused) else f"cannot read {source.csv}: {exc.strerror}"
            if self._reported.get(spec.name) != why:
                log.warning("cluster %s: carbon intensity source refused (%s); using its constant", spec.name, why)
                self._reported[spec.name] = why
            return spec.carbon_intensity
        self._reported.pop(spec.name, None)
        return spec.carbon_intensity if reading is None else reading

    def _series(self, path: str) -> CarbonSeries:
        resolved = allowed(path, self._roots)
        stat = resolved.stat()
        if not S_ISREG(stat.st_mode):  # a FIFO would block the collector's open() on the event loop for ever
            raise CarbonSourceRefused(f"{path} is not a regular file")
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._files.get(resolved)
        if cached is not None and cached[0] == key:
            return cached[1]
        if stat.st_size > MAX_FILE_BYTES:
            raise CarbonSourceRefused(f"{path} is larger than {MAX_FILE_BYTES} bytes")
        with resolved.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise CarbonSourceRefused(f"{path} is larger than {MAX_FILE_BYTES} bytes")
        try:
            series = parse_csv(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise CarbonSourceRefused(f"{path} is not UTF-8 text") from None
        self._files[resolved] = (key, series)
        return series
