"""Findings: pure detectors of saturation and anomalies in series, and the episodes that report each once.

No I/O here: the control plane's findings loop (``orchestrator/findings.py``) asks the reader for the series, runs
these detectors on their points, and records ``analytics.bottleneck`` and ``analytics.anomaly`` events.

- **Saturation** (:func:`saturated`): a ratio of used to available (CPU cores over a node's cores or a replica's
  request, memory over capacity) at or above a threshold at every point of the last ``hold`` seconds, with points
  reaching back that far: a series that began ten seconds ago is not "saturated for a minute".
- **Anomaly** (:func:`anomaly`): the latest value far outside the band of the trailing window before it, by the
  median and the median absolute deviation (MAD), which a few outliers in the window do not move (unlike a mean and
  a standard deviation). Far means more than ``k`` robust standard deviations (``1.4826 * MAD``) *and* more than a
  minimum deviation (absolute, and relative to the median): a flat series has a MAD of zero, and steady noise must
  never alarm. Fewer than ``min_points`` points in the window: no verdict.
- **Episodes** (:class:`Episodes`): a condition that holds over many cycles is one episode, reported when it starts
  and when it ends; memory is bounded by the number of episodes open at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

MAD_TO_SIGMA = 1.4826
"""The MAD of normally distributed values times this is their standard deviation."""

Points = Sequence[tuple[float, float]]
K = TypeVar("K", bound=Hashable)


def saturated(points: Points, threshold: float, hold: float, capacity: float = 1.0) -> bool:
    """Whether every point of the last ``hold`` seconds of ``points`` (oldest first), as a share of ``capacity``,
    is ``>= threshold``, and the points reach back at least ``hold`` seconds before the last one. Points that are
    not finite numbers (no data) are left out."""
    since: float | None = None
    for t, v in reversed(points):  # only the last `hold` seconds are read: cheap on a long window
        if not math.isfinite(v):
            continue
        if since is None:
            since = t - hold
        if t < since:
            return True  # every point since `since` passed, and the series reaches back beyond it
        if v / capacity < threshold:
            return False
        if t == since:
            return True
    return False  # not watched long enough to say (or no data)


@dataclass(frozen=True, slots=True)
class AnomalyRule:
    """When a value is far outside its recent band (see the module docstring)."""

    k: float = 6.0
    """Robust standard deviations from the median that a value must pass."""
    min_points: int = 30
    """Fewer points in the trailing window than this: no verdict."""
    min_deviation: float = 0.0
    """Absolute deviation a value must also pass, in the series' unit."""
    min_relative: float = 0.2
    """Deviation a value must also pass, relative to the median's magnitude."""


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A value outside its band: the band's centre and half-width, and how far out it is in robust sigmas."""

    value: float
    median: float
    band: float
    score: float


def anomaly(points: Points, rule: AnomalyRule) -> Anomaly | None:
    """Whether the last of ``points`` is an anomaly against the points before it (``None``: not, or no verdict)."""
    if len(points) < rule.min_points + 1:
        return None
    values = np.asarray(points, dtype=float)[:, 1]
    values = values[np.isfinite(values)]
    if len(values) < rule.min_points + 1:
        return None
    history, latest = values[:-1], float(values[-1])
    median = float(np.median(history))
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(history - median)))
    band = max(rule.k * sigma, rule.min_deviation, rule.min_relative * abs(median))
    deviation = abs(latest - median)
    if deviation <= band:
        return None
    return Anomaly(value=latest, median=median, band=band, score=deviation / sigma if sigma > 0 else math.inf)


class Episodes(Generic[K]):
    """Which conditions hold now; says when one starts and when it ends, so each episode is reported once.

    Bounded: at most ``max_open`` episodes are open at once; a condition beyond them is not tracked (and so not
    reported) until others end, and :attr:`overflowed` counts those refusals.
    """

    def __init__(self, max_open: int = 100_000) -> None:
        self._open: set[K] = set()
        self._max_open = max_open
        self.overflowed = 0

    def __contains__(self, key: K) -> bool:
        return key in self._open

    def __len__(self) -> int:
        return len(self._open)

    def update(self, key: K, holds: bool) -> bool | None:
        """Record whether ``key``'s condition holds now: ``True`` when an episode starts, ``False`` when it ends,
        ``None`` when nothing changed."""
        if holds and key not in self._open:
            if len(self._open) >= self._max_open:
                self.overflowed += 1
                return None
            self._open.add(key)
            return True
        if not holds and key in self._open:
            self._open.discard(key)
            return False
        return None

    def end_missing(self, seen: set[K], among: Callable[[K], bool] = lambda _: True) -> list[K]:
        """End the open episodes (those ``among`` says, default all) whose key was not ``seen`` this cycle (the
        series went away: a removed replica, a node gone); returns them."""
        gone = [key for key in self._open if key not in seen and among(key)]
        self._open.difference_update(gone)
        return gone
