"""A range query's point at time t is the instant query at t over one step, bit for bit, whatever the values.

The embedded store evaluates the windows of a range query together (``metrics.windows``) and an instant query's
single window on its own; promtool checks both forms on ordinary values (``test_agrees_with_prometheus_engine``).
Here the values are the awkward ones: NaN, both infinities, signed zeros, counter resets, huge magnitudes, gaps.
"""

from __future__ import annotations

import math
import struct

import pytest

from nemo_kernel.metrics import Aggregation, EmbeddedMetrics, MetricsQuery, Sample, Selector

STEP = 30  # seconds per point; samples every 5 s, so 6-7 samples a window
AWKWARD = [
    1.0, math.nan, 3.0, math.inf, 2.0, -math.inf, 5.0, 0.0, -0.0, 1e308, 1e308, -1e308,
    7.0, 7.0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 4.0, -2.5, 1e-300, 8.0,
]  # fmt: skip
COUNTER = [0, 5, 9, 2, 4, 40, 41, 1, 1, 3, 8, 13, 0, 0, 7, 9, 10, 20, 30, 31, 2, 5, 6, 9]  # resets


@pytest.fixture(scope="module")
def store() -> EmbeddedMetrics:
    store = EmbeddedMetrics(clock=lambda: 1000.0)
    samples = []
    for rounds in range(4):  # the same shapes four times, shifted: windows hold every mix
        for i, (g, c) in enumerate(zip(AWKWARD, COUNTER, strict=True)):
            t = 100 + rounds * len(AWKWARD) * 5 + i * 5
            if i % 11 != 10:  # gaps
                samples.append(Sample("g", {"s": "a", "w": "x"}, g, t))
                samples.append(Sample("g", {"s": "b", "w": "x"}, AWKWARD[-1 - i], t + 1))
            samples.append(Sample("c_total", {"s": "a", "w": "x"}, float(c), t))
            samples.append(Sample("c_total", {"s": "b", "w": "y"}, float(c) * 1e6, t + 2))
    store.ingest(sorted(samples, key=lambda s: s.timestamp))
    assert store.dropped() == {}
    return store


def _bits(points: list[tuple[float, float]]) -> list[tuple[float, bytes | str]]:
    # The sign bit of a NaN depends on the order a compiler gave an operation's operands (CPython's and numpy's
    # differ); no answer shows it (JSON and the exposition format write NaN), so any NaN is the same here.
    return [(t, "NaN" if math.isnan(v) else struct.pack("<d", v)) for t, v in points]


@pytest.mark.parametrize(
    ("name", "aggregation", "quantile"),
    [
        ("c_total", Aggregation.RATE, None),
        ("g", Aggregation.AVG, None),
        ("g", Aggregation.SUM, None),
        ("g", Aggregation.MAX, None),
        ("g", Aggregation.MIN, None),
        ("g", Aggregation.LAST, None),
        ("g", Aggregation.QUANTILE, 0.25),
        ("g", Aggregation.QUANTILE, 1.0),
        ("c_total", Aggregation.AVG, None),
    ],
)
@pytest.mark.parametrize("by", [None, (), ("w",)])
def test_each_point_of_a_range_query_is_the_instant_query_at_its_time(
    store: EmbeddedMetrics, name: str, aggregation: Aggregation, quantile: float | None, by: tuple[str, ...] | None
) -> None:
    at = 100 + 4 * len(AWKWARD) * 5
    ranged = store.evaluate(MetricsQuery(Selector(name), at - 100, aggregation, STEP, quantile, by, at))
    assert ranged.series
    for series in ranged.series:
        assert len(series.points) >= (at - 100) // STEP  # a point at (nearly) every step
    for t in range(100, at + 1, STEP):
        instant = store.evaluate(MetricsQuery(Selector(name), STEP, aggregation, None, quantile, by, t))
        expected = {tuple(sorted(s.labels.items())): _bits(s.points) for s in instant.series}
        got = {tuple(sorted(s.labels.items())): _bits([(p, v) for p, v in s.points if p == t]) for s in ranged.series}
        assert {k: v for k, v in got.items() if v} == expected, t
