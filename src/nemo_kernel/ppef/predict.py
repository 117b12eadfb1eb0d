"""Breach prediction (pure): when will an SLI cross its threshold, if its trend goes on?

Two forecasters run on each SLO's recent values (one per evaluation, oldest first), vectorised over SLOs:

- **linear**: least squares over the whole recent window (points without data are left out);
- **Holt**: double exponential smoothing (level and trend), which follows a trend that has just changed.

For each series, the one with the smaller mean absolute one-step error over the last ``error_points`` points is
chosen (linear's one-step forecasts are fitted on the points before each one, so neither sees the answer).

An alarm needs all of: a **significant trend** towards the bad side (the linear slope's t statistic at least
``min_t``; steady noise has a slope indistinguishable from 0), a time to breach within ``horizon`` by the chosen
forecaster, and a **confidence** of at least ``min_confidence``: the probability, under the linear fit's standard
error, that the trend line is past the threshold at the end of the horizon. Steady noise, however wide, raises no alarm
(``tests/ppef/test_predict.py`` runs 24 simulated hours of it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

LINEAR, HOLT = 0, 1
METHODS = ("linear", "holt")

_normal_cdf = np.frompyfunc(lambda z: 0.5 * math.erfc(-z / math.sqrt(2.0)), 1, 1)


@dataclass(frozen=True, slots=True)
class PredictorSettings:
    """The forecasters' knobs; the defaults hold for evaluations every 10 s to 1 min."""

    horizon: float = 900.0  # seconds ahead an alarm may look
    min_points: int = 8  # fewer values with data: no forecast
    min_t: float = 5.0  # the slope's t statistic towards the bad side (steady noise stays below: tests)
    min_confidence: float = 0.9
    alpha: float = 0.5  # Holt's level smoothing
    beta: float = 0.3  # Holt's trend smoothing
    error_points: int = 5  # recent one-step errors that choose the forecaster

    def __post_init__(self) -> None:
        if not (math.isfinite(self.horizon) and self.horizon > 0):
            raise ValueError("horizon must be a positive number of seconds")
        if self.min_points < 4:
            raise ValueError("min_points must be at least 4")
        if not (0 < self.alpha <= 1 and 0 < self.beta <= 1):
            raise ValueError("alpha and beta must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class Forecasts:
    """Per SLO: seconds from now to the breach (NaN: none foreseen; 0: already past), the method chosen
    (:data:`LINEAR` or :data:`HOLT`), the confidence in [0, 1], the slope's t statistic towards the bad side,
    and whether it is an alarm."""

    time_to_breach: FloatArray
    method: npt.NDArray[np.int8]
    confidence: FloatArray
    slope_t: FloatArray
    alarm: BoolArray


def forecast(
    times: FloatArray,
    values: FloatArray,
    threshold: FloatArray,
    at_most: BoolArray,
    now: float,
    settings: PredictorSettings | None = None,
) -> Forecasts:
    """Forecasts for ``n`` SLOs: ``times`` shape ``(m,)`` (seconds, increasing, shared by all: one per evaluation),
    ``values`` shape ``(n, m)`` with NaN where there was no data, ``threshold`` and ``at_most`` shape ``(n,)``."""
    cfg = settings or PredictorSettings()
    n, m = values.shape
    if times.shape != (m,) or threshold.shape != (n,) or at_most.shape != (n,):
        raise ValueError("times must be (m,), values (n, m), threshold and at_most (n,)")
    # Work on the bad side as "up": flip series whose good side is >=, so every test below reads one way.
    sign = np.where(at_most, 1.0, -1.0)
    y = values * sign[:, None]
    thr = threshold * sign
    t = times - now
    w = ~np.isnan(y)
    y0 = np.where(w, y, 0.0)

    slope, level_now, s2, sxx, s0, tbar = _linear(t, y0, w)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope_t = slope / np.sqrt(s2 / sxx)
    lin_err = _linear_one_step_errors(t, y0, w, cfg.error_points)
    holt_level, holt_trend, holt_err = _holt(t, y, cfg)

    use_holt = np.nan_to_num(holt_err, nan=np.inf) < np.nan_to_num(lin_err, nan=np.inf)
    level = np.where(use_holt, holt_level, level_now)
    trend = np.where(use_holt, holt_trend, slope)

    with np.errstate(divide="ignore", invalid="ignore"):
        ttb = np.where(level >= thr, 0.0, np.where(trend > 0, (thr - level) / trend, np.nan))
        # confidence: the trend line's value at the horizon is past the threshold, under the line's own error
        line_at_horizon = level_now + slope * cfg.horizon
        se_line = np.sqrt(s2 * (1.0 / s0 + (cfg.horizon - tbar) ** 2 / sxx))
        z = np.where(se_line > 0, (line_at_horizon - thr) / se_line, np.where(line_at_horizon > thr, np.inf, -np.inf))
    z = np.nan_to_num(z, nan=-np.inf)
    confidence = _normal_cdf(z).astype(np.float64)

    enough = s0 >= cfg.min_points
    significant = np.nan_to_num(slope_t, nan=0.0) >= cfg.min_t
    soon = np.nan_to_num(ttb, nan=np.inf) <= cfg.horizon
    alarm = enough & significant & soon & (trend > 0) & (confidence >= cfg.min_confidence)
    return Forecasts(
        time_to_breach=np.where(enough, ttb, np.nan),
        method=np.where(use_holt, HOLT, LINEAR).astype(np.int8),
        confidence=np.where(enough, confidence, 0.0),
        slope_t=slope_t,
        alarm=alarm,
    )


def _linear(
    t: FloatArray, y0: FloatArray, w: BoolArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Least squares per row over the points with data: slope, fitted value now (t = 0), residual variance,
    the spread of t (Sxx), the count and the mean t."""
    wf = w.astype(np.float64)
    s0 = wf.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        tbar = (wf * t).sum(axis=1) / s0
        ybar = y0.sum(axis=1) / s0
        dt = np.where(w, t - tbar[:, None], 0.0)
        dy = np.where(w, y0 - ybar[:, None], 0.0)
        sxx = (dt * dt).sum(axis=1)
        slope = (dt * dy).sum(axis=1) / sxx
        resid = np.where(w, dy - slope[:, None] * dt, 0.0)
        s2 = (resid * resid).sum(axis=1) / (s0 - 2)
        level_now = ybar - slope * tbar
    return slope, level_now, s2, sxx, s0, tbar


def _linear_one_step_errors(t: FloatArray, y0: FloatArray, w: BoolArray, k: int) -> FloatArray:
    """Mean absolute error of the linear fit on the points before each of the last ``k`` points, predicting it."""
    wf = w.astype(np.float64)
    # running sums over the points before index j: fits from them predict point j
    c0 = np.cumsum(wf, axis=1) - wf
    ct = np.cumsum(wf * t, axis=1) - wf * t
    cy = np.cumsum(y0, axis=1) - y0
    ctt = np.cumsum(wf * t * t, axis=1) - wf * t * t
    cty = np.cumsum(y0 * t, axis=1) - y0 * t
    with np.errstate(divide="ignore", invalid="ignore"):
        sxx = ctt - ct * ct / c0
        slope = (cty - ct * cy / c0) / sxx
        pred = cy / c0 + slope * (t - ct / c0)
        err = np.where(w & (c0 >= 3), np.abs(pred - y0), np.nan)
    tail = err[:, -k:]
    with np.errstate(invalid="ignore"):
        counts = (~np.isnan(tail)).sum(axis=1)
        return np.where(counts > 0, np.nansum(tail, axis=1) / np.maximum(counts, 1), np.nan)


def _holt(t: FloatArray, y: FloatArray, cfg: PredictorSettings) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Holt's level and trend (per second) at now, and its mean absolute one-step error over the last points;
    a point without data only advances the level by the trend."""
    n, m = y.shape
    level = np.full(n, np.nan)
    trend = np.zeros(n)
    last_t = np.full(n, np.nan)
    errors = np.full((n, m), np.nan)
    for j in range(m):
        yj = y[:, j]
        has = ~np.isnan(yj)
        first = has & np.isnan(level)
        gap = np.where(np.isnan(last_t), 0.0, t[j] - last_t)
        forecast_j = level + trend * gap
        update = has & ~first
        errors[update, j] = np.abs(forecast_j[update] - yj[update])
        new_level = cfg.alpha * yj + (1 - cfg.alpha) * forecast_j
        with np.errstate(divide="ignore", invalid="ignore"):
            step_trend = np.where(gap > 0, (new_level - level) / gap, trend)
        new_trend = cfg.beta * step_trend + (1 - cfg.beta) * trend
        level = np.where(first, yj, np.where(update, new_level, level))
        trend = np.where(update, new_trend, trend)
        last_t = np.where(has, t[j], last_t)
    # level and trend as of now (t = 0)
    level_now = level + trend * np.where(np.isnan(last_t), 0.0, -last_t)
    tail = errors[:, -cfg.error_points :]
    counts = (~np.isnan(tail)).sum(axis=1)
    err = np.where(counts > 0, np.nansum(tail, axis=1) / np.maximum(counts, 1), np.nan)
    return level_now, trend, err
