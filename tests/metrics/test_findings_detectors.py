"""The pure detectors of findings: a saturation ramp triggers once, a day of steady noise triggers nothing."""

from __future__ import annotations

import random

from nemo_kernel.metrics.findings import AnomalyRule, Episodes, anomaly, saturated

STEP = 15.0  # seconds between points, the findings loop's default interval
WINDOW = 240  # points of the trailing band: one hour at that step
DAY = int(24 * 3600 / STEP)


def _walk(
    values: list[float], rule: AnomalyRule, capacity: float | None = 1.0, hold: float = 60.0
) -> tuple[list[int], list[int]]:
    """Feed ``values`` point by point as the loop does (a trailing window each cycle; saturation of the share of
    ``capacity``): the indexes where a bottleneck episode and an anomaly episode started."""
    points = [(i * STEP, v) for i, v in enumerate(values)]
    bottlenecks: Episodes[str] = Episodes()
    anomalies: Episodes[str] = Episodes()
    started_b, started_a = [], []
    for i in range(1, len(points) + 1):
        window = points[max(0, i - WINDOW) : i]
        if bottlenecks.update("s", capacity is not None and saturated(window, 0.9, hold, capacity)) is True:
            started_b.append(i - 1)
        if anomalies.update("s", anomaly(window, rule) is not None) is True:
            started_a.append(i - 1)
    return started_b, started_a


def test_a_ramp_to_saturation_is_one_bottleneck_after_the_hold() -> None:
    # CPU share ramps from 20% to 100% over 10 minutes, then stays there for 10 minutes.
    ramp = [0.2 + 0.8 * min(1.0, i / 40) for i in range(80)]
    started, _ = _walk(ramp, AnomalyRule(min_deviation=0.05))
    first_over = next(i for i, v in enumerate(ramp) if v >= 0.9)
    assert started == [first_over + int(60 / STEP)]  # once, exactly when it had been over for 60 s


def test_a_bottleneck_ends_and_a_new_one_is_a_new_episode() -> None:
    values = [0.95] * 10 + [0.3] * 10 + [0.97] * 10
    started, _ = _walk(values, AnomalyRule(min_deviation=0.05))
    assert started == [4, 24]


def test_a_series_younger_than_the_hold_is_not_saturated() -> None:
    assert not saturated([(0.0, 1.0), (15.0, 1.0), (30.0, 1.0)], 0.9, 60.0)
    assert saturated([(0.0, 1.0), (15.0, 1.0), (30.0, 1.0), (45.0, 1.0), (60.0, 1.0)], 0.9, 60.0)
    # one point under the threshold within the hold breaks it
    assert not saturated([(0.0, 1.0), (15.0, 1.0), (30.0, 0.5), (45.0, 1.0), (60.0, 1.0)], 0.9, 60.0)


def test_a_day_of_steady_noise_triggers_nothing() -> None:
    rng = random.Random(20261201)
    series = {
        # CPU share of a busy replica: 50% +- 3%
        "cpu": ([min(1.0, max(0.0, rng.gauss(0.5, 0.03))) for _ in range(DAY)], AnomalyRule(min_deviation=0.05), 1.0),
        # memory: 300 MiB of a 512 MiB request, with allocator jitter of 2 MiB
        "memory": (
            [rng.gauss(300 * 2**20, 2 * 2**20) for _ in range(DAY)],
            AnomalyRule(min_deviation=32 * 2**20),
            512 * 2**20,
        ),
        # requests/s: Poisson-like counts at 20/s averaged over the step
        "requests": ([rng.gauss(20.0, (20.0 / STEP) ** 0.5) for _ in range(DAY)], AnomalyRule(min_deviation=1.0), None),
        # a nearly flat series: its MAD is about zero, and it must still not alarm on a tiny wobble
        "flat": ([0.1 + (rng.random() < 0.01) * 0.001 for _ in range(DAY)], AnomalyRule(min_deviation=0.05), 1.0),
    }
    for name, (values, rule, capacity) in series.items():
        bottlenecks, anomalies = _walk(values, rule, capacity)
        assert (bottlenecks, anomalies) == ([], []), name


def test_a_jump_out_of_the_band_is_one_anomaly() -> None:
    rng = random.Random(7)
    values = [rng.gauss(20.0, 1.0) for _ in range(300)] + [60.0] * 5 + [rng.gauss(20.0, 1.0) for _ in range(50)]
    _, anomalies = _walk(values, AnomalyRule(min_deviation=1.0))
    assert anomalies == [300]
    found = anomaly([(i * STEP, v) for i, v in enumerate(values[60:301])], AnomalyRule(min_deviation=1.0))
    assert found is not None and found.value == 60.0 and abs(found.median - 20.0) < 1.0 and found.score > 6


def test_too_few_points_give_no_verdict() -> None:
    assert anomaly([(float(i), 1.0) for i in range(10)] + [(10.0, 100.0)], AnomalyRule(min_points=30)) is None


def test_episodes_are_bounded() -> None:
    episodes: Episodes[int] = Episodes(max_open=2)
    assert [episodes.update(k, True) for k in range(3)] == [True, True, None]
    assert episodes.overflowed == 1 and len(episodes) == 2
    assert episodes.end_missing({0}) == [1] and 1 not in episodes
    assert episodes.update(2, True) is True
