"""SLO evaluation (pure): thresholds over windows, error budgets, multiwindow multi-burn-rate alerts, a state.

Every SLO is reduced to *events*, good or bad, counted over a fixed set of windows (:func:`windows_for`):

- a **ratio** kind (``error_rate``, ``availability``) counts requests or replica-samples: ``bad`` and ``total``;
- a **threshold** kind (latency, throughput, cost, ...) counts *timeslices*: a slice is bad when the SLI over it
  misses the threshold (the slice is the SLO's ``timeslice``, else one evaluation interval).

From the counts: the burn rate of a window is ``(bad / total) / (1 - target)`` (1.0 spends the budget exactly over
the period); the budget remaining is ``1 - burn(period)``. Alerts are Sloth's four multiwindow pairs (page: 14.4
over 1h and 5m, 6 over 6h and 30m; ticket: 3 over 1d and 2h, 1 over 3d and 6h), with windows **scaled by
period / 30d** so that a 7-day or 1-hour period spends the same share of its budget before an alert as a 30-day
one. A pair can fire only when its long window holds at least ``min_events`` events (low traffic: one failed
request out of three must not page).

State, in order: ``NoData`` when the SLO's own window has no events or no value; ``Violated`` when the budget is
spent, a page pair fires, or a threshold kind's window value misses the threshold on at least ``min_events``
requests; ``AtRisk`` when a ticket pair fires, a ratio kind's window misses its target, or a threshold kind misses
on too few requests to page; else ``Met``. Missing data is never ``Met``.

All of it is vectorised over SLOs with numpy (:func:`evaluate_batch`): 10,000 SLOs take milliseconds
(``benchmarks/bench_ppef.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from nemo_kernel.domain.sla import SloState

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

SLOTH_PERIOD = 30 * 86400.0
"""The period Sloth's factors and windows are written for."""


@dataclass(frozen=True, slots=True)
class BurnPair:
    """One multiwindow alert: the burn rate must exceed ``factor`` over both ``long`` and ``short`` (seconds)."""

    name: str
    severity: str  # page | ticket
    factor: float
    long: float
    short: float


_SLOTH_PAIRS = (
    ("page_1h", "page", 14.4, 3600.0, 300.0),
    ("page_6h", "page", 6.0, 6 * 3600.0, 1800.0),
    ("ticket_1d", "ticket", 3.0, 86400.0, 2 * 3600.0),
    ("ticket_3d", "ticket", 1.0, 3 * 86400.0, 6 * 3600.0),
)


def burn_pairs(period: float, shortest: float = 0.0) -> tuple[BurnPair, ...]:
    """Sloth's four pairs with windows scaled to ``period`` (seconds), none shorter than ``shortest`` (say two
    scrape intervals: a window with no sample in it measures nothing)."""
    if not np.isfinite(period) or period <= 0:
        raise ValueError("period must be a positive number of seconds")
    scale = period / SLOTH_PERIOD
    return tuple(
        BurnPair(name, severity, factor, max(long * scale, shortest), max(short * scale, shortest))
        for name, severity, factor, long, short in _SLOTH_PAIRS
    )


class Col(IntEnum):
    """The columns of the count matrices: the SLO's window, its period, then each pair's long and short window."""

    WINDOW = 0
    PERIOD = 1
    PAGE_1H_LONG = 2
    PAGE_1H_SHORT = 3
    PAGE_6H_LONG = 4
    PAGE_6H_SHORT = 5
    TICKET_1D_LONG = 6
    TICKET_1D_SHORT = 7
    TICKET_3D_LONG = 8
    TICKET_3D_SHORT = 9


N_COLS = len(Col)


def windows_for(window: float, period: float, shortest: float = 0.0) -> tuple[float, ...]:
    """The window lengths (seconds) of the columns of :class:`Col`, in order, for one SLO."""
    out = [window, period]
    for pair in burn_pairs(period, shortest):
        out += [pair.long, pair.short]
    return tuple(out)


_STATE_CODES: tuple[SloState, ...] = (SloState.MET, SloState.AT_RISK, SloState.VIOLATED, SloState.NO_DATA)
MET, AT_RISK, VIOLATED, NO_DATA = range(4)


@dataclass(frozen=True, slots=True)
class SloBatch:
    """Inputs for ``n`` SLOs; every array's first axis is the SLO.

    ``bad``, ``total``: events per window, shape ``(n, N_COLS)`` (columns :class:`Col`). ``events``: what
    ``min_events`` is compared with, same shape (requests in the window; ``inf`` for kinds without requests).
    ``value``: the SLI over the SLO's window (NaN: no data). ``threshold``: NaN for ratio kinds. ``at_most``: the
    good side is ``value <= threshold``. ``is_ratio``: a ratio kind (its window is judged by ``target``).
    """

    bad: FloatArray
    total: FloatArray
    events: FloatArray
    value: FloatArray
    threshold: FloatArray
    at_most: BoolArray
    is_ratio: BoolArray
    target: FloatArray
    min_events: FloatArray
    allowed_bad: FloatArray | None = None

    def __post_init__(self) -> None:
        n = self.value.shape[0]
        for name in ("bad", "total", "events"):
            if getattr(self, name).shape != (n, N_COLS):
                raise ValueError(f"{name} must have shape ({n}, {N_COLS})")
        for name in ("threshold", "at_most", "is_ratio", "target", "min_events", "allowed_bad"):
            if getattr(self, name) is not None and getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},)")
        if np.any((self.target <= 0) | (self.target > 1)):
            raise ValueError("target must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class StatusBatch:
    """Outputs for ``n`` SLOs: ``state`` codes (:func:`state_of`), the window value, the budget remaining
    (share of the period's budget, may go below 0), the burn rate of every window (shape ``(n, N_COLS)``, NaN
    without events) and which severity fired."""

    state: npt.NDArray[np.int8]
    value: FloatArray
    budget_remaining: FloatArray
    burn: FloatArray
    page: BoolArray
    ticket: BoolArray


def state_of(code: int) -> SloState:
    """The :class:`SloState` of a code in :attr:`StatusBatch.state`."""
    return _STATE_CODES[code]


_FACTORS = np.array([factor for _, _, factor, _, _ in _SLOTH_PAIRS])
_IS_PAGE = np.array([severity == "page" for _, severity, _, _, _ in _SLOTH_PAIRS])


def evaluate_batch(batch: SloBatch) -> StatusBatch:
    """Status of every SLO of ``batch`` (see the module's docstring for the rules)."""
    budget = 1.0 - batch.target  # target 1.0: no budget, any bad event burns infinitely
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(batch.total > 0, batch.bad / batch.total, np.nan)
        burn = np.where(budget[:, None] > 0, ratio / budget[:, None], np.where(ratio > 0, np.inf, 0.0))
    burn = np.where(np.isnan(ratio), np.nan, burn)
    budget_remaining = 1.0 - burn[:, Col.PERIOD]
    if batch.allowed_bad is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            by_count = 1.0 - batch.bad[:, Col.PERIOD] / batch.allowed_bad
        budget_remaining = np.where(np.isnan(batch.allowed_bad), budget_remaining, by_count)

    longs = burn[:, Col.PAGE_1H_LONG :: 2]
    shorts = burn[:, Col.PAGE_1H_SHORT :: 2]
    enough = batch.events[:, Col.PAGE_1H_LONG :: 2] >= batch.min_events[:, None]
    # NaN compares False: a window without events never fires
    fired = (longs > _FACTORS) & (shorts > _FACTORS) & enough
    page = np.any(fired & _IS_PAGE, axis=1)
    ticket = np.any(fired & ~_IS_PAGE, axis=1)

    value = batch.value
    window_total = batch.total[:, Col.WINDOW]
    no_data = np.isnan(value) | ~(window_total > 0)
    enough_now = batch.events[:, Col.WINDOW] >= batch.min_events
    misses_threshold = np.where(batch.at_most, value > batch.threshold, value < batch.threshold)
    threshold_miss = ~batch.is_ratio & misses_threshold
    ratio_miss = batch.is_ratio & (ratio[:, Col.WINDOW] > budget)
    # a period's ratio on a handful of events says nothing: spent only once the period holds min_events
    spent = (budget_remaining <= 0) & (batch.events[:, Col.PERIOD] >= batch.min_events)

    state = np.full(value.shape[0], MET, dtype=np.int8)
    state[page | spent | (threshold_miss & enough_now)] = VIOLATED
    # a miss on too few events is shown, but cannot page
    state[(state == MET) & (ticket | ratio_miss | threshold_miss)] = AT_RISK
    state[no_data] = NO_DATA
    return StatusBatch(state=state, value=value, budget_remaining=budget_remaining, burn=burn, page=page, ticket=ticket)


def slice_counts(
    times: FloatArray, values: FloatArray, threshold: float, at_most: bool, now: float, windows: tuple[float, ...]
) -> tuple[FloatArray, FloatArray]:
    """Bad and total timeslices of a threshold kind over each of ``windows``: ``values[i]`` is the SLI over the
    slice ending at ``times[i]``; NaN values (no data in the slice) count in neither."""
    has = ~np.isnan(values)
    bad_slice = has & np.where(at_most, values > threshold, values < threshold)
    bad = np.empty(len(windows))
    total = np.empty(len(windows))
    for i, w in enumerate(windows):
        inside = (times > now - w) & (times <= now)
        bad[i] = np.count_nonzero(bad_slice & inside)
        total[i] = np.count_nonzero(has & inside)
    return bad, total
