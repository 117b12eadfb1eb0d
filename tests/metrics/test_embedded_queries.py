"""The embedded store answers a MetricsQuery as its PromQL would (expectations computed by hand from Prometheus'
formulas: extrapolated rate, quantile interpolation, bucket interpolation, closed windows, range alignment)."""

from __future__ import annotations

import math

import pytest

from nemo_kernel.metrics import Aggregation, EmbeddedMetrics, Matcher, MatchOp, MetricsQuery, Sample, Selector

NOW = 1_700_000_000.0  # the stores' clock: samples are a few minutes old


def store_with(*series: tuple[str, dict[str, str], list[tuple[float, float]]]) -> EmbeddedMetrics:
    """A store whose clock stands at NOW + 100 s, holding ``(name, labels, [(offset s, value)])`` series."""
    store = EmbeddedMetrics(clock=lambda: NOW + 100)
    samples = [Sample(name, labels, v, NOW + t) for name, labels, points in series for t, v in points]
    samples.sort(key=lambda s: s.timestamp)
    store.ingest(samples)
    assert store.dropped() == {}
    return store


def answer(store: EmbeddedMetrics, **kwargs: object) -> dict[tuple[tuple[str, str], ...], list[tuple[float, float]]]:
    result = store.evaluate(MetricsQuery(**kwargs))  # type: ignore[arg-type]
    assert result.source == "embedded"
    return {tuple(sorted(s.labels.items())): [(t - NOW, v) for t, v in s.points] for s in result.series}


def only(store: EmbeddedMetrics, **kwargs: object) -> float:
    (points,) = answer(store, **kwargs).values()
    ((_, value),) = points
    return value


C = Selector("c_total")


def test_rate_adds_the_value_before_a_counter_reset() -> None:
    store = store_with(("c_total", {}, [(0, 3), (10, 13), (20, 23), (30, 5), (40, 15), (50, 25), (60, 38)]))
    # increase = 38 - 3 + 23 (the reset at 30 s); samples reach both edges of [0, 60]: no extrapolation
    assert only(store, selector=C, window=60, aggregation=Aggregation.RATE, at=NOW + 60) == pytest.approx(58 / 60)


def test_rate_extrapolates_to_edges_within_an_interval_and_a_half_interval_otherwise() -> None:
    near = store_with(("c_total", {}, [(5, 10), (15, 20), (25, 30), (35, 40), (45, 50), (55, 60)]))
    # 50 over 50 s sampled, 5 s missing at each end (< 1.1 x 10 s): extrapolated over the whole 60 s
    assert only(near, selector=C, window=60, aggregation=Aggregation.RATE, at=NOW + 60) == pytest.approx(1.0)
    far = store_with(("c_total", {}, [(30, 100), (40, 110), (50, 120)]))
    # 30 s before the first sample (>= 11 s): only half an interval (5 s) is added; 10 s after the last: all of it
    assert only(far, selector=C, window=60, aggregation=Aggregation.RATE, at=NOW + 60) == pytest.approx(
        20 * (35 / 20) / 60
    )


def test_rate_never_extrapolates_a_counter_below_zero() -> None:
    store = store_with(("c_total", {}, [(20, 1), (30, 11), (40, 21)]))
    # the counter would have been 0 one second before the first sample: extrapolate 1 s, not 11 s
    assert only(store, selector=C, window=40, aggregation=Aggregation.RATE, at=NOW + 40) == pytest.approx(21 / 40)


def test_rate_needs_two_samples_in_the_window() -> None:
    store = store_with(("c_total", {}, [(0, 1), (50, 2)]))
    assert answer(store, selector=C, window=20, aggregation=Aggregation.RATE, at=NOW + 60) == {}


@pytest.mark.parametrize(
    ("aggregation", "quantile", "expected"),
    [
        (Aggregation.AVG, None, 4.0),
        (Aggregation.MAX, None, 10.0),
        (Aggregation.MIN, None, 1.0),
        (Aggregation.SUM, None, 20.0),
        (Aggregation.LAST, None, 10.0),
        (Aggregation.QUANTILE, 0.5, 3.0),
        (Aggregation.QUANTILE, 0.9, 4 * 0.4 + 10 * 0.6),  # rank 3.6 between the 4th and 5th value
        (Aggregation.QUANTILE, 0.0, 1.0),
    ],
)
def test_over_time_functions(aggregation: Aggregation, quantile: float | None, expected: float) -> None:
    # the window [10, 50] is closed at both ends: the samples at 10 s and 50 s count, those at 0 s and 60 s do not
    store = store_with(("g", {}, [(0, 100), (10, 3), (20, 1), (30, 2), (40, 4), (50, 10), (60, 100)]))
    value = only(store, selector=Selector("g"), window=40, aggregation=aggregation, quantile=quantile, at=NOW + 50)
    assert value == pytest.approx(expected)


def test_last_keeps_the_metric_name_and_other_functions_drop_it() -> None:
    store = store_with(("g", {"node": "n1"}, [(0, 1.0)]))
    assert list(answer(store, selector=Selector("g"), window=60, aggregation=Aggregation.LAST, at=NOW + 1)) == [
        (("__name__", "g"), ("node", "n1"))
    ]
    assert list(answer(store, selector=Selector("g"), window=60, at=NOW + 1)) == [(("node", "n1"),)]


def _buckets(replica: str, counts: list[float]) -> list[tuple[str, dict[str, str], list[tuple[float, float]]]]:
    bounds = ["0.1", "0.5", "1", "+Inf"]
    labels = {"workload": "web", "replica": replica}
    return [("lat_bucket", {**labels, "le": le}, [(0, 0.0), (60, c)]) for le, c in zip(bounds, counts, strict=True)]


def test_histogram_quantile_interpolates_within_the_bucket_of_the_rank() -> None:
    store = store_with(*_buckets("r1", [30, 60, 90, 120]))
    # bucket rates 0.5, 1, 1.5, 2 per second; q=0.6 -> rank 1.2 falls in (0.5, 1] holding 0.5: 0.5 + 0.5 * 0.2/0.5
    q = {"selector": Selector("lat"), "window": 60, "aggregation": Aggregation.HISTOGRAM_QUANTILE, "at": NOW + 60}
    assert answer(store, **q, quantile=0.6) == {(("replica", "r1"), ("workload", "web")): [(60.0, pytest.approx(0.7))]}
    # a rank in the +Inf bucket answers the highest finite bound
    assert only(store, **q, quantile=1.0) == pytest.approx(1.0)


def test_histogram_quantile_sums_buckets_by_the_grouping_labels() -> None:
    store = store_with(*_buckets("r1", [30, 60, 90, 120]), *_buckets("r2", [90, 120, 150, 120]))
    # summed rates: 2, 3, 4, 4 (+Inf below le=1 in r2 is made monotonic) -> q=0.25: rank 1 in (0, 0.1]
    value = only(
        store,
        selector=Selector("lat"),
        window=60,
        aggregation=Aggregation.HISTOGRAM_QUANTILE,
        quantile=0.25,
        by=("workload",),
        at=NOW + 60,
    )
    assert value == pytest.approx(0.1 * 1 / 2)


def test_histogram_quantile_without_an_inf_bucket_is_nan() -> None:
    store = store_with(("lat_bucket", {"le": "1"}, [(0, 0.0), (60, 5.0)]))
    q = MetricsQuery(Selector("lat"), 60, Aggregation.HISTOGRAM_QUANTILE, quantile=0.5, at=NOW + 60)
    ((_, value),) = store.evaluate(q).series[0].points
    assert math.isnan(value)


def _two_replicas() -> EmbeddedMetrics:
    return store_with(
        ("cpu_total", {"workload": "web", "replica": "a"}, [(0, 0), (60, 60)]),
        ("cpu_total", {"workload": "web", "replica": "b"}, [(0, 0), (60, 120)]),
        ("cpu_total", {"workload": "db", "replica": "c"}, [(0, 0), (60, 30)]),
        ("cpu_total", {"replica": "d"}, [(0, 0), (60, 6)]),
    )


def test_by_sums_rates_per_group_and_drops_absent_labels() -> None:
    q = {"selector": Selector("cpu_total"), "window": 60, "aggregation": Aggregation.RATE, "at": NOW + 60}
    assert answer(_two_replicas(), **q, by=("workload",)) == {
        (("workload", "db"),): [(60.0, pytest.approx(0.5))],
        (("workload", "web"),): [(60.0, pytest.approx(3.0))],
        (): [(60.0, pytest.approx(0.1))],  # the series without the label is a group of its own, with no labels
    }
    assert answer(_two_replicas(), **q, by=()) == {(): [(60.0, pytest.approx(3.6))]}


@pytest.mark.parametrize(("aggregation", "expected"), [(Aggregation.AVG, 90.0), (Aggregation.MAX, 120.0)])
def test_by_combines_with_the_aggregation_of_its_kind(aggregation: Aggregation, expected: float) -> None:
    # avg_over_time of each web replica over the one sample at 60 s (60 and 120), then avg by / max by
    value = only(
        _two_replicas(),
        selector=Selector("cpu_total", (Matcher("workload", MatchOp.EQ, "web"),)),
        window=30,
        aggregation=aggregation,
        by=("workload",),
        at=NOW + 60,
    )
    assert value == pytest.approx(expected)


def test_range_query_evaluates_every_step_from_at_minus_window_over_closed_step_windows() -> None:
    store = store_with(("g", {}, [(t, float(t)) for t in range(0, 101, 5)]))
    result = answer(store, selector=Selector("g"), window=60, step=15, at=NOW + 100)
    # points at 40, 55, 70, 85, 100; each the mean of the samples in [t - 15, t] (four of them)
    assert result == {(): [(t, pytest.approx(t - 7.5)) for t in (40.0, 55.0, 70.0, 85.0, 100.0)]}


def test_range_query_leaves_out_points_without_samples() -> None:
    store = store_with(("g", {}, [(0, 1.0), (10, 2.0), (70, 3.0)]))
    result = answer(store, selector=Selector("g"), window=60, step=20, aggregation=Aggregation.MAX, at=NOW + 80)
    assert result == {(): [(20.0, 2.0), (80.0, 3.0)]}  # the points at 40 and 60 have nothing in their windows


def test_matchers_select_with_promql_semantics() -> None:
    store = store_with(
        ("m", {"node": "edge-1", "tier": "edge"}, [(0, 1.0)]),
        ("m", {"node": "edge-10"}, [(0, 2.0)]),
        ("m", {"node": "cloud-1", "tier": "cloud"}, [(0, 4.0)]),
    )

    def total(*matchers: Matcher) -> float:
        q = {"window": 60, "aggregation": Aggregation.SUM, "by": (), "at": NOW + 1}
        return only(store, selector=Selector("m", matchers), **q)

    assert total(Matcher("node", MatchOp.RE, "edge-1")) == 1.0  # anchored: edge-10 does not match
    assert total(Matcher("node", MatchOp.NRE, "edge-.*")) == 4.0
    assert total(Matcher("tier", MatchOp.EQ, "")) == 2.0  # a missing label matches the empty string
    assert total(Matcher("tier", MatchOp.NE, "edge")) == 6.0
    with pytest.raises(ValueError, match="regular expression"):
        total(Matcher("node", MatchOp.RE, "("))


def test_a_rate_range_past_the_last_sample_of_a_reset_counter_has_no_points_there() -> None:
    # A range whose last windows hold no sample, over a counter that reset: the reset bookkeeping indexed one past
    # the last sample (IndexError), so the findings loop skipped the signal and the API answered 500.
    store = store_with(("c_total", {}, [(0, 3), (10, 13), (20, 2), (30, 12)]))
    [points] = answer(store, selector=C, window=90, step=10, aggregation=Aggregation.RATE, at=NOW + 90).values()
    times = [t for t, _ in points]
    assert times and max(times) <= 40  # windows of 10 s: none after the last sample has two samples
    assert all(math.isfinite(v) and v > 0 for _, v in points), points
