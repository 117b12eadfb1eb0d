"""One series' recent raw samples: two compact arrays (times in ms, values), oldest first, bounded.

The samples live in ``array.array`` buffers (8 bytes a sample each, appended in ~30 ns, over-allocated by an
eighth as they grow) and are read as zero-copy numpy views, so a window is two ``searchsorted`` calls and a slice.
Bounds: at most ``max_samples`` per series (the oldest 1/32 go when it is reached, so dropping stays amortised
O(1)), and :meth:`trim` drops what is past the raw retention (the store's housekeeping calls it).

Views pin the buffers (an exported buffer cannot be resized), so they are only made and used under the store's
lock and never kept.
"""

from __future__ import annotations

from array import array

import numpy as np

from nemo_kernel.metrics.functions import Times, Values


class RawSeries:
    """The recent samples of one series (``name`` + ``labels``) and how far they were rolled up."""

    __slots__ = ("labels", "last", "name", "rolled_until", "rolled_value", "t", "v")

    def __init__(self, name: str, labels: dict[str, str]) -> None:
        self.name = name
        self.labels = labels
        self.t = array("q")  # ms; the store's ingest appends to both directly (its hot path)
        self.v = array("d")
        self.last = -(1 << 62)  # ms of the newest sample ever appended (a plain int: read on every append)
        self.rolled_until = -(1 << 62)  # ms: samples before this were written to the rollups
        self.rolled_value = float("nan")  # the last sample rolled up (a counter's increase continues from it)

    @property
    def n(self) -> int:
        """How many samples are held."""
        return len(self.t)

    @property
    def times(self) -> Times:
        """Timestamps (ms) of the samples held, oldest first (a view: use under the store's lock)."""
        return np.frombuffer(self.t, dtype=np.int64) if self.t else _NO_TIMES

    @property
    def values(self) -> Values:
        """Values of the samples held (a view: use under the store's lock)."""
        return np.frombuffer(self.v, dtype=np.float64) if self.v else _NO_VALUES

    def append(self, t: int, v: float, max_samples: int) -> bool:
        """Add a sample newer than every held one; False (not added) if it is not newer."""
        if t <= self.last:
            return False
        self.t.append(t)
        self.v.append(v)
        self.last = t
        if len(self.t) > max_samples:
            self.bound(max_samples)
        return True

    def bound(self, max_samples: int) -> None:
        """Drop the oldest samples beyond ``max_samples``, and a 32nd more, so that this runs rarely."""
        excess = len(self.t) - max_samples
        if excess > 0:
            excess += max_samples // 32
            del self.t[:excess]
            del self.v[:excess]

    def update_last(self, v: float) -> None:
        """Change the newest sample's value (a counter of this process counted again in the same millisecond)."""
        self.v[-1] = v

    def trim(self, keep_from: int) -> None:
        """Drop the samples older than ``keep_from`` (ms)."""
        if self.t and self.t[0] < keep_from:
            old = int(np.searchsorted(self.times, keep_from, side="left"))
            del self.t[:old]
            del self.v[:old]
            if len(self.t) < 64:  # give back what a burst made the arrays grow to
                self.t = array("q", self.t)
                self.v = array("d", self.v)

    def since(self, start: int, end: int) -> tuple[Times, Values]:
        """The samples with ``start <= t < end`` (ms)."""
        times = self.times
        lo = int(np.searchsorted(times, start, side="left"))
        hi = int(np.searchsorted(times, end, side="left"))
        return times[lo:hi], self.values[lo:hi]

    def window(self, start: int, end: int) -> tuple[Times, Values]:
        """The samples with ``start <= t <= end`` (ms): Prometheus 2.x range selectors are closed at both ends."""
        times = self.times
        lo = int(np.searchsorted(times, start, side="left"))
        hi = int(np.searchsorted(times, end, side="right"))
        return times[lo:hi], self.values[lo:hi]


_NO_TIMES: Times = np.empty(0, dtype=np.int64)
_NO_VALUES: Values = np.empty(0, dtype=np.float64)
