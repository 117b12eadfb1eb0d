"""One series' recent raw samples: two growing numpy arrays (times in ms, values), oldest first, bounded.

The arrays are contiguous and sorted, so a window is two ``searchsorted`` calls and a slice (no copy). They start
small and double up to ``max_samples``; when full, samples older than the retention are dropped by shifting the
rest left (amortised O(1) per sample, like a ring, but a window never wraps).
"""

from __future__ import annotations

import numpy as np

from nemo_kernel.metrics.functions import Times, Values

_INITIAL = 16  # samples a new series has room for: most series are scraped every 10-60 s


class RawSeries:
    """The recent samples of one series (``name`` + ``labels``) and how far they were rolled up."""

    __slots__ = ("_times", "_values", "labels", "last", "n", "name", "rolled_until")

    def __init__(self, name: str, labels: dict[str, str]) -> None:
        self.name = name
        self.labels = labels
        self._times: Times = np.empty(_INITIAL, dtype=np.int64)
        self._values: Values = np.empty(_INITIAL, dtype=np.float64)
        self.n = 0
        self.last = -(1 << 62)  # ms of the newest sample (a plain int: read on every append)
        self.rolled_until = -(1 << 62)  # ms: samples before this were written to the rollups

    @property
    def times(self) -> Times:
        """Timestamps (ms) of the samples held, oldest first (a view)."""
        return self._times[: self.n]

    @property
    def values(self) -> Values:
        """Values of the samples held (a view)."""
        return self._values[: self.n]

    @property
    def last_time(self) -> int | None:
        """The newest sample's time (ms), if any is held."""
        return self.last if self.n else None

    def append(self, t: int, v: float, keep_from: int, max_samples: int) -> bool:
        """Add a sample newer than every held one; False (not added) if it is not newer.

        When the arrays are full, samples older than ``keep_from`` (ms) are dropped first, then the arrays grow
        up to ``max_samples``, and at that bound the oldest sample goes.
        """
        if t <= self.last:
            return False
        n = self.n
        if n == len(self._times):
            self._make_room(keep_from, max_samples)
            n = self.n
        self._times[n] = t
        self._values[n] = v
        self.n = n + 1
        self.last = t
        return True

    def _make_room(self, keep_from: int, max_samples: int) -> None:
        n = self.n
        old = int(np.searchsorted(self._times[:n], keep_from, side="left"))
        if n >= max_samples:
            # At the per-series bound the oldest go, a 32nd at a time so that shifting stays amortised O(1).
            old = max(old, n - max_samples + max(1, max_samples // 32))
        self._shift(old)
        size = len(self._times)
        if size - self.n <= size // 32 and size < max_samples:
            # Little was old: grow (doubling) rather than shift on almost every append.
            size = min(size * 2, max_samples)
            self._times = np.resize(self._times, size)
            self._values = np.resize(self._values, size)

    def _shift(self, old: int) -> None:
        if old <= 0:
            return
        keep = self.n - old
        self._times[:keep] = self._times[old : self.n]
        self._values[:keep] = self._values[old : self.n]
        self.n = keep

    def trim(self, keep_from: int) -> None:
        """Drop the samples older than ``keep_from`` (ms); the arrays shrink when mostly empty."""
        old = int(np.searchsorted(self._times[: self.n], keep_from, side="left"))
        self._shift(old)
        size = len(self._times)
        if size > _INITIAL and self.n < size // 4:
            self._times = self._times[: max(self.n * 2, _INITIAL)].copy()
            self._values = self._values[: max(self.n * 2, _INITIAL)].copy()

    def window(self, start: int, end: int) -> tuple[Times, Values]:
        """The samples with ``start <= t <= end`` (ms): Prometheus 2.x range selectors are closed at both ends."""
        times = self._times[: self.n]
        lo = int(np.searchsorted(times, start, side="left"))
        hi = int(np.searchsorted(times, end, side="right"))
        return times[lo:hi], self._values[lo:hi]

    def nbytes(self) -> int:
        """Bytes of the arrays (for memory accounting)."""
        return int(self._times.nbytes + self._values.nbytes)
