"""What the store refuses, and that it stays bounded: bad samples are dropped one by one and counted by reason in
``nemo_samples_dropped_total`` (a series of the store itself), the rest of their batch is kept."""

from __future__ import annotations

import math

import pytest

from nemo_kernel.metrics import Aggregation, EmbeddedMetrics, MetricsQuery, Sample, Selector

NOW = 1_700_000_000.0
OK = {"node": "n1"}


def drops_series(store: EmbeddedMetrics) -> dict[str, float]:
    q = MetricsQuery(Selector("nemo_samples_dropped_total"), 60, Aggregation.LAST, at=NOW)
    return {s.labels["reason"]: s.points[-1][1] for s in store.evaluate(q).series}


def held(store: EmbeddedMetrics, name: str) -> list[float]:
    q = MetricsQuery(Selector(name), 7200, Aggregation.SUM, by=(), at=NOW)
    return [v for s in store.evaluate(q).series for _, v in s.points]


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        (Sample("1bad", OK, 1.0, NOW), "bad_name"),
        (Sample("bad-name", OK, 1.0, NOW), "bad_name"),
        (Sample("m", {"bad-label": "x"}, 1.0, NOW), "bad_label"),
        (Sample("m", {"__reserved": "x"}, 1.0, NOW), "bad_label"),
        (Sample("m", {"node": "\udc80"}, 1.0, NOW), "bad_label"),  # not valid Unicode
        (Sample("m", {"node": "x" * 5000}, 1.0, NOW), "bad_label"),
        (Sample("m", {f"l{i}": "x" for i in range(65)}, 1.0, NOW), "bad_label"),
        (Sample("m", {"node": 3}, 1.0, NOW), "bad_label"),  # type: ignore[dict-item]
        (Sample("m", {"node": ["x"]}, 1.0, NOW), "bad_label"),  # type: ignore[dict-item]
        (Sample("m", OK, 1.0, math.nan), "bad_timestamp"),
        (Sample("m", OK, 1.0, math.inf), "bad_timestamp"),
        (Sample("m", OK, 1.0, "now"), "bad_timestamp"),  # type: ignore[arg-type]
        (Sample("m", OK, "1", NOW), "bad_value"),  # type: ignore[arg-type]
        (Sample("m", OK, True, NOW), "bad_value"),
        (Sample("m", OK, 1.0, NOW - 3 * 3600), "too_old"),
        (Sample("m", OK, 1.0, NOW + 3600), "too_new"),
    ],
)
def test_a_bad_sample_is_dropped_counted_and_the_batch_goes_on(sample: Sample, reason: str) -> None:
    store = EmbeddedMetrics(clock=lambda: NOW)
    store.ingest([Sample("good", OK, 1.0, NOW - 2), sample, Sample("good", OK, 2.0, NOW - 1)])
    assert store.dropped() == {reason: 1}
    assert drops_series(store) == {reason: 1.0}
    assert held(store, "good") == [3.0]


def test_samples_not_newer_than_their_series_newest_are_out_of_order() -> None:
    store = EmbeddedMetrics(clock=lambda: NOW)
    store.ingest([Sample("m", OK, 1.0, NOW - 10), Sample("m", OK, 2.0, NOW - 10), Sample("m", OK, 3.0, NOW - 20)])
    # labels in another order are the same series
    store.ingest([Sample("m", {"b": "2", "a": "1"}, 1.0, NOW - 5), Sample("m", {"a": "1", "b": "2"}, 1.0, NOW - 6)])
    assert store.dropped() == {"out_of_order": 3}
    assert drops_series(store) == {"out_of_order": 3.0}  # cumulative, a counter


def test_new_series_beyond_the_bound_are_dropped_and_known_ones_still_ingest() -> None:
    store = EmbeddedMetrics(max_series=100, clock=lambda: NOW)  # NEMO's series may fill it (workloads' half)
    store.ingest([Sample("nemo_m", {"i": str(i)}, 1.0, NOW - 10) for i in range(150)])
    assert store.dropped() == {"series_limit": 50}
    store.ingest([Sample("nemo_m", {"i": str(i)}, 1.0, NOW - 5) for i in range(150)])
    assert store.dropped() == {"series_limit": 100}
    assert held(store, "nemo_m") == [200.0]  # the 100 admitted series, twice each
    assert store.series_count() == 101  # and the drop counter (never itself refused)


def test_a_series_keeps_a_bounded_number_of_recent_samples() -> None:
    store = EmbeddedMetrics(max_samples_per_series=100, clock=lambda: NOW)
    store.ingest([Sample("m", OK, float(i), NOW - 1000 + i) for i in range(1000)])
    q = MetricsQuery(Selector("m"), 1000, Aggregation.MIN, at=NOW)
    ((_, oldest),) = store.evaluate(q).series[0].points
    assert 900 <= oldest < 1000 - 90  # between the bound and 1/32 under it: the oldest went first
    assert store.evaluate(MetricsQuery(Selector("m"), 10, Aggregation.LAST, at=NOW)).series[0].points[0][1] == 999


def test_prune_forgets_samples_past_the_retention_and_silent_series() -> None:
    clock = [NOW]
    store = EmbeddedMetrics(raw_retention=600, clock=lambda: clock[0])
    store.ingest([Sample("m", {"i": "quiet"}, 1.0, NOW - 500), Sample("m", {"i": "busy"}, 1.0, NOW - 500)])
    clock[0] = NOW + 200
    store.ingest([Sample("m", {"i": "busy"}, 2.0, NOW + 199)])
    assert store.prune() == 1  # "quiet" had nothing in the last 600 s
    assert store.series_count() == 1
    q = MetricsQuery(Selector("m"), 3600, Aggregation.SUM, at=NOW + 200)
    assert [(dict(s.labels), s.points[0][1]) for s in store.evaluate(q).series] == [({"i": "busy"}, 2.0)]


def test_a_query_too_large_to_compute_is_refused_with_the_limit() -> None:
    store = EmbeddedMetrics(clock=lambda: NOW)
    store.ingest([Sample("m", {"i": str(i)}, 1.0, NOW - 1) for i in range(1000)])
    huge = MetricsQuery(Selector("m"), 11_000, Aggregation.AVG, step=1, at=NOW)  # 1,000 series x 11,001 points
    with pytest.raises(ValueError, match="5,000,000 points"):
        store.evaluate(huge)
    assert len(store.evaluate(MetricsQuery(Selector("m"), 60, Aggregation.AVG, at=NOW)).series) == 1000
