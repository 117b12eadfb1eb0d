"""Breach prediction on a simulated clock: a ramp is foreseen minutes ahead, steady noise raises no alarm."""

from __future__ import annotations

import numpy as np
import pytest

from nemo_kernel.ppef.predict import HOLT, LINEAR, PredictorSettings, forecast

STEP = 15.0  # seconds between evaluations
POINTS = 40  # ten minutes of history


def ramp(t: float) -> float:
    """p99 latency flat at 100 ms, then rising 100 ms in 20 minutes from t = 600 s: it crosses 200 ms at 1800 s."""
    return 0.1 + max(0.0, t - 600.0) * 0.1 / 1200.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_ramp_is_predicted_at_least_five_minutes_before_it_crosses(seed: int) -> None:
    rng = np.random.default_rng(seed)
    alarm_at = None
    for k in range(POINTS, 200):
        times = np.arange(k - POINTS + 1, k + 1) * STEP
        values = np.array([ramp(t) for t in times]) + rng.normal(0, 0.01, POINTS)
        f = forecast(times, values[None, :], np.array([0.2]), np.array([True]), now=times[-1])
        if f.alarm[0]:
            alarm_at = times[-1]
            assert 0 < f.time_to_breach[0] <= PredictorSettings().horizon
            assert 0.9 <= f.confidence[0] <= 1
            break
    assert alarm_at is not None, "the ramp was never predicted"
    assert 1800 - alarm_at >= 300


def test_twenty_four_hours_of_steady_noise_raise_no_alarm() -> None:
    rng = np.random.default_rng(20261201)
    steps = int(86400 / STEP)
    # three services: quiet, noisy, and noisy enough that single points cross the threshold now and then
    noise = [0.1 + rng.normal(0, sd, steps) for sd in (0.01, 0.03, 0.05)]
    windows = np.concatenate([np.lib.stride_tricks.sliding_window_view(y, POINTS) for y in noise])
    times = np.arange(POINTS) * STEP
    n = len(windows)
    f = forecast(times, windows, np.full(n, 0.2), np.ones(n, bool), now=times[-1])
    assert n == 3 * (steps - POINTS + 1)
    assert int(f.alarm.sum()) == 0


def test_the_good_side_at_least_is_predicted_falling() -> None:
    times = np.arange(POINTS) * STEP
    throughput = 200.0 - times * 0.2  # requests per second, falling towards a floor of 50
    f = forecast(times, throughput[None, :], np.array([50.0]), np.array([False]), now=times[-1])
    assert f.alarm[0]
    # 200 - 0.2 * 585 = 83 now, 33 above the floor at 0.2 per second: 165 s
    assert f.time_to_breach[0] == pytest.approx(165.0, rel=0.01)


def test_the_forecaster_with_the_smaller_recent_error_is_chosen() -> None:
    times = np.arange(POINTS) * STEP
    straight = 0.1 + times * 1e-4
    bent = np.where(times < 450, 0.1, 0.1 + (times - 450) * 5e-4)  # flat, then a sudden trend
    f = forecast(times, np.stack([straight, bent]), np.full(2, 1.0), np.ones(2, bool), now=times[-1])
    assert f.method[0] == LINEAR  # a line fits a line exactly
    assert f.method[1] == HOLT  # the fit over the whole window lags the new trend; Holt follows it


def test_too_few_points_or_missing_data_give_no_forecast() -> None:
    times = np.arange(POINTS) * STEP
    values = np.full((2, POINTS), np.nan)
    values[1, -5:] = [0.1, 0.2, 0.3, 0.4, 0.5]  # a steep rise, but only five points
    f = forecast(times, values, np.full(2, 0.6), np.ones(2, bool), now=times[-1])
    assert not f.alarm.any()
    assert np.isnan(f.time_to_breach).all()


def test_gaps_are_left_out_of_the_fit() -> None:
    times = np.arange(POINTS) * STEP
    values = 0.1 + times * 2e-4
    values[::3] = np.nan  # every third evaluation had no data
    f = forecast(times, values[None, :], np.array([0.3]), np.array([True]), now=times[-1])
    # 0.1 + 585 * 2e-4 = 0.217 now: 0.083 to go at 2e-4 per second
    assert f.alarm[0] and f.time_to_breach[0] == pytest.approx(415.0, rel=0.01)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="horizon"):
        PredictorSettings(horizon=float("inf"))
    with pytest.raises(ValueError, match=r"must be \(m,\)"):
        forecast(np.arange(3.0), np.zeros((1, 4)), np.zeros(1), np.ones(1, bool), now=0)
