"""SLO evaluation: burn rates and budgets by hand, Sloth's pairs, min_events, timeslices, NoData."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nemo_kernel.domain.sla import SloState
from nemo_kernel.ppef.evaluate import (
    N_COLS,
    Col,
    SloBatch,
    StatusBatch,
    burn_pairs,
    evaluate_batch,
    slice_counts,
    state_of,
    windows_for,
)

INF = math.inf


def one(
    counts: dict[Col, tuple[float, float]],
    *,
    target: float = 0.99,
    value: float = 0.0,
    threshold: float = math.nan,
    at_most: bool = True,
    ratio: bool = True,
    min_events: float = 0,
    events: float | None = None,
) -> StatusBatch:
    """Evaluate one SLO whose windows hold ``counts[col] = (bad, total)`` (0/0 elsewhere)."""
    bad = np.zeros((1, N_COLS))
    total = np.zeros((1, N_COLS))
    for col, (b, t) in counts.items():
        bad[0, col], total[0, col] = b, t
    ev = total.copy() if events is None else np.full((1, N_COLS), events)
    return evaluate_batch(
        SloBatch(
            bad=bad,
            total=total,
            events=ev,
            value=np.array([value]),
            threshold=np.array([threshold]),
            at_most=np.array([at_most]),
            is_ratio=np.array([ratio]),
            target=np.array([target]),
            min_events=np.array([float(min_events)]),
        )
    )


def test_pairs_are_slothS_scaled_to_the_period() -> None:
    thirty = burn_pairs(30 * 86400)
    assert [(p.factor, p.long, p.short) for p in thirty] == [
        (14.4, 3600, 300),
        (6.0, 21600, 1800),
        (3.0, 86400, 7200),
        (1.0, 259200, 21600),
    ]
    week = burn_pairs(7 * 86400)
    assert week[0].long == pytest.approx(3600 * 7 / 30) and week[0].short == pytest.approx(70)
    # a one-hour period: the 5m window becomes 0.42 s, so it is raised to the shortest window that holds a sample
    assert burn_pairs(3600, shortest=30)[0].short == 30
    assert windows_for(300, 86400)[:4] == (300, 86400, 120.0, 10.0)


def test_burn_rates_and_budget_are_the_hand_computed_values() -> None:
    status = one(
        {Col.WINDOW: (1, 100), Col.PERIOD: (5, 1000), Col.PAGE_1H_LONG: (2, 100), Col.PAGE_1H_SHORT: (1, 10)},
        target=0.99,
    )
    # error ratio / (1 - target): 0.005 / 0.01, 0.02 / 0.01, 0.1 / 0.01
    assert status.burn[0, Col.PERIOD] == pytest.approx(0.5)
    assert status.burn[0, Col.PAGE_1H_LONG] == pytest.approx(2.0)
    assert status.burn[0, Col.PAGE_1H_SHORT] == pytest.approx(10.0)
    assert status.budget_remaining[0] == pytest.approx(0.5)
    assert math.isnan(status.burn[0, Col.TICKET_3D_LONG])  # no events: no burn rate, not 0
    assert state_of(status.state[0]) is SloState.MET


def test_a_fast_burn_in_both_windows_pages_and_violates() -> None:
    counts = {Col.WINDOW: (3, 10), Col.PERIOD: (20, 10_000), Col.PAGE_1H_LONG: (20, 100), Col.PAGE_1H_SHORT: (3, 10)}
    status = one(counts)  # burn 20 over the long window and 30 over the short one, both above 14.4
    assert status.page[0] and state_of(status.state[0]) is SloState.VIOLATED


def test_a_burn_that_has_stopped_does_not_page() -> None:
    counts = {Col.WINDOW: (0, 10), Col.PERIOD: (20, 10_000), Col.PAGE_1H_LONG: (20, 100), Col.PAGE_1H_SHORT: (0, 10)}
    status = one(counts)  # the long window still burns at 20, the short one at 0: the outage is over
    assert not status.page[0] and state_of(status.state[0]) is SloState.MET


def test_min_events_keeps_low_traffic_from_paging() -> None:
    counts = {Col.WINDOW: (1, 3), Col.PERIOD: (1, 10_000), Col.PAGE_1H_LONG: (1, 3), Col.PAGE_1H_SHORT: (1, 3)}
    assert one(counts, min_events=0).page[0]  # one failure out of three requests burns at 33
    quiet = one(counts, min_events=10)
    assert not quiet.page[0]
    # still shown: the window misses the target, but nothing pages
    assert state_of(quiet.state[0]) is SloState.AT_RISK


def test_a_slow_burn_opens_a_ticket_and_is_at_risk() -> None:
    counts = {
        Col.WINDOW: (0, 100),
        Col.PERIOD: (30, 10_000),
        Col.TICKET_1D_LONG: (40, 1000),  # burn 4 > 3
        Col.TICKET_1D_SHORT: (5, 100),  # burn 5 > 3
    }
    status = one(counts)
    assert status.ticket[0] and not status.page[0]
    assert state_of(status.state[0]) is SloState.AT_RISK


def test_a_spent_budget_is_violated() -> None:
    status = one({Col.WINDOW: (0, 100), Col.PERIOD: (101, 10_000)})
    assert status.budget_remaining[0] == pytest.approx(1 - 1.01)
    assert state_of(status.state[0]) is SloState.VIOLATED


def test_no_events_or_no_value_is_no_data_never_met() -> None:
    assert state_of(one({}).state[0]) is SloState.NO_DATA
    nan_value = one({Col.WINDOW: (0, 10)}, value=math.nan, threshold=0.2, ratio=False)
    assert state_of(nan_value.state[0]) is SloState.NO_DATA
    # even a burning period does not turn a silent window into Met or Violated
    silent = one({Col.PERIOD: (500, 1000)})
    assert state_of(silent.state[0]) is SloState.NO_DATA


@pytest.mark.parametrize(
    ("value", "threshold", "at_most", "state"),
    [
        (0.25, 0.2, True, SloState.VIOLATED),  # latency above its bound
        (0.15, 0.2, True, SloState.MET),
        (50.0, 100.0, False, SloState.VIOLATED),  # throughput below its floor
        (150.0, 100.0, False, SloState.MET),
    ],
)
def test_threshold_kinds_compare_the_window_value(
    value: float, threshold: float, at_most: bool, state: SloState
) -> None:
    status = one(
        {Col.WINDOW: (0, 1), Col.PERIOD: (0, 100)},
        value=value,
        threshold=threshold,
        at_most=at_most,
        ratio=False,
        events=INF,
    )
    assert state_of(status.state[0]) is state


def test_a_threshold_miss_on_too_few_requests_is_at_risk_not_violated() -> None:
    status = one(
        {Col.WINDOW: (0, 1), Col.PERIOD: (0, 100)}, value=0.5, threshold=0.2, ratio=False, min_events=10, events=3
    )
    assert state_of(status.state[0]) is SloState.AT_RISK


def test_timeslices_count_bad_slices_per_window() -> None:
    times = np.arange(1.0, 11.0) * 60  # ten one-minute slices ending at 60..600
    values = np.array([0.1, 0.1, 0.3, np.nan, 0.1, 0.3, 0.3, 0.1, 0.1, 0.25])
    bad, total = slice_counts(times, values, threshold=0.2, at_most=True, now=600, windows=(180, 600))
    assert list(bad) == [1, 4]  # last three: 0.1, 0.1, 0.25; all ten: 0.3, 0.3, 0.3, 0.25
    assert list(total) == [3, 9]  # the slice without data counts in neither


def test_a_batch_evaluates_each_slo_on_its_own() -> None:
    n = 3
    bad = np.zeros((n, N_COLS))
    total = np.zeros((n, N_COLS))
    total[:, Col.WINDOW] = 100
    total[:, Col.PERIOD] = 1000
    bad[1, Col.PERIOD] = 200  # spent
    total[2] = 0  # silent
    batch = SloBatch(
        bad=bad,
        total=total,
        events=total.copy(),
        value=np.zeros(n),
        threshold=np.full(n, np.nan),
        at_most=np.ones(n, bool),
        is_ratio=np.ones(n, bool),
        target=np.full(n, 0.99),
        min_events=np.zeros(n),
    )
    states = [state_of(c) for c in evaluate_batch(batch).state]
    assert states == [SloState.MET, SloState.VIOLATED, SloState.NO_DATA]


def test_shapes_and_targets_are_checked() -> None:
    with pytest.raises(ValueError, match="bad must have shape"):
        SloBatch(
            np.zeros((1, 3)),
            np.zeros((1, N_COLS)),
            np.zeros((1, N_COLS)),
            np.zeros(1),
            np.zeros(1),
            np.ones(1, bool),
            np.ones(1, bool),
            np.full(1, 0.9),
            np.zeros(1),
        )
    with pytest.raises(ValueError, match="target"):
        SloBatch(
            np.zeros((1, N_COLS)),
            np.zeros((1, N_COLS)),
            np.zeros((1, N_COLS)),
            np.zeros(1),
            np.zeros(1),
            np.ones(1, bool),
            np.ones(1, bool),
            np.full(1, 1.5),
            np.zeros(1),
        )
    with pytest.raises(ValueError, match="period"):
        burn_pairs(math.nan)


def test_a_timeslice_budget_is_counted_against_the_whole_period() -> None:
    # a 1-day period of 15 s slices at 99% allows 57.6 bad slices; the period has just begun: 1 bad of 4
    counts = {Col.WINDOW: (0, 4), Col.PERIOD: (1, 4)}
    early = one(counts, value=0.1, threshold=0.2, ratio=False, events=INF)
    assert state_of(early.state[0]) is SloState.VIOLATED  # as a ratio, 25% of the period already burnt
    bad = np.zeros((1, N_COLS))
    total = np.zeros((1, N_COLS))
    bad[0, Col.PERIOD], total[0, Col.WINDOW], total[0, Col.PERIOD] = 1, 4, 4
    counted = evaluate_batch(
        SloBatch(
            bad,
            total,
            np.full((1, N_COLS), INF),
            np.array([0.1]),
            np.array([0.2]),
            np.ones(1, bool),
            np.zeros(1, bool),
            np.array([0.99]),
            np.zeros(1),
            allowed_bad=np.array([0.01 * 86400 / 15]),
        )
    )
    assert counted.budget_remaining[0] == pytest.approx(1 - 1 / 57.6)
    assert state_of(counted.state[0]) is SloState.MET


def test_a_period_with_fewer_than_min_events_cannot_be_spent() -> None:
    status = one({Col.WINDOW: (1, 3), Col.PERIOD: (1, 3)}, min_events=10)
    assert status.budget_remaining[0] < 0
    assert state_of(status.state[0]) is SloState.AT_RISK  # its window misses the target, on too few events
