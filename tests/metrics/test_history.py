"""Rollups: 1-minute and 1-hour buckets written to the database answer windows older than the raw samples, and
the history survives a restart of a real control plane (SQLite and PostgreSQL)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from nemo_kernel.config import Settings
from nemo_kernel.metrics import Aggregation, EmbeddedMetrics, MetricsQuery, Sample, Selector
from nemo_kernel.metrics.rollups import labels_key, rollup_rows
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.store import Database
from nemo_kernel.store.rollups import DatabaseRollups

T0 = 1_700_002_800  # a whole hour (unix seconds)


def test_buckets_hold_count_sum_min_max_last_and_a_reset_aware_increase() -> None:
    times = np.array([0, 20_000, 40_000, 60_000, 80_000], dtype=np.int64) + T0 * 1000
    values = np.array([5.0, 7.0, 2.0, 4.0, 10.0])  # a reset between 7 and 2
    rows = rollup_rows("c_total", "{}", times, values, before=4.0)
    minutes = [r[3:] for r in rows if r[2] == 60]
    # minute 0: 5, 7, 2 -> increase from 4: 1 + 2 + 2 (after the reset the whole value counts); minute 1: 4, 10
    assert minutes == [(T0, 3, 14.0, 2.0, 7.0, 2.0, 5.0), (T0 + 60, 2, 14.0, 4.0, 10.0, 10.0, 8.0)]
    hours = [r[3:] for r in rows if r[2] == 3600]
    assert hours == [(T0, 5, 28.0, 2.0, 10.0, 10.0, 13.0)]
    # unknown value before: the first sample adds nothing
    assert rollup_rows("c_total", "{}", times[:1], values[:1], before=math.nan)[0][9] == 0.0


def test_saved_buckets_merge_and_load_back_by_name_resolution_and_time(database: Database) -> None:
    rollups = DatabaseRollups(database)
    a, b = labels_key({"node": "n1"}), labels_key({"node": "n2"})
    rollups.save([("m", a, 60, T0, 2, 3.0, 1.0, 2.0, 2.0, 1.0), ("m", b, 60, T0, 1, 9.0, 9.0, 9.0, 9.0, 0.0)])
    # the rest of the same bucket, written by a later flush (or after a restart): merged into it
    rollups.save([("m", a, 60, T0, 1, 0.5, 0.5, 0.5, 0.5, 0.5), ("m", a, 60, T0 + 60, 1, math.nan, 1, 1, 1, 0)])
    rows = rollups.load("m", 60, T0, T0 + 3600)
    assert len(rows) == 3
    by_bucket = {(r[1], r[3]): r[4:] for r in rows}
    assert by_bucket[(a, T0)] == (3, 3.5, 0.5, 2.0, 0.5, 1.5)
    assert by_bucket[(b, T0)] == (1, 9.0, 9.0, 9.0, 9.0, 0.0)
    assert math.isnan(by_bucket[(a, T0 + 60)][1])  # NaN survives the round trip (SQLite stores it as NULL)
    assert rollups.load("m", 3600, T0, T0 + 3600) == []
    assert [r[3] for r in rollups.load("m", 60, T0 + 60, T0 + 120)] == [T0 + 60]  # [since, until)
    assert rollups.prune(60, T0 + 60) == 2
    assert [(r[1], r[3]) for r in rollups.load("m", 60, 0, T0 + 3600)] == [(a, T0 + 60)]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_windows_older_than_the_raw_retention_are_answered_from_rollups(database: Database) -> None:
    clock = Clock(T0)
    store = EmbeddedMetrics(raw_retention=1800, rollups=DatabaseRollups(database), clock=clock)
    labels = {"workload": "web"}
    # three hours of a counter rising 1/s and a gauge cycling 0..9, one sample every 10 s, flushed every minute
    for step in range(3 * 360):
        t = T0 + step * 10
        clock.now = t
        store.ingest([Sample("c_total", labels, float(t - T0), t), Sample("g", labels, float(step % 10), t)])
        if step % 6 == 5:
            store.flush()
            store.prune()
    end = T0 + 3 * 3600  # the window [T0, end] is whole buckets; raw samples cover only its last 30 minutes
    clock.now = end

    def ask(metric: str, aggregation: Aggregation) -> float:
        result = store.evaluate(MetricsQuery(Selector(metric), 3 * 3600, aggregation, at=end))
        ((_, value),) = result.series[0].points
        return value

    assert ask("g", Aggregation.AVG) == pytest.approx(4.5)
    assert ask("g", Aggregation.SUM) == pytest.approx(4.5 * 3 * 360)
    assert ask("g", Aggregation.MAX) == 9.0
    assert ask("g", Aggregation.MIN) == 0.0
    assert ask("c_total", Aggregation.LAST) == 3 * 3600 - 10
    # increase over the window: 10 per sample after the first, over 3 h (no extrapolation across rollups)
    assert ask("c_total", Aggregation.RATE) == pytest.approx((3 * 3600 - 10) / (3 * 3600))
    # without rollups the same store only knows its last 30 minutes
    only_raw = EmbeddedMetrics(raw_retention=1800, clock=clock)
    only_raw.ingest([Sample("g", labels, float(s % 10), T0 + s * 10) for s in range(3 * 360)])
    assert only_raw.dropped() == {"too_old": 900}  # all but the 180 samples of the last 30 minutes


async def test_history_survives_a_restart_of_the_control_plane(tmp_path: Path, database_url: str) -> None:
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    settings = Settings(data_dir=tmp_path / "data", clusters_file=clusters, database_url=database_url)
    end = int(time.time()) // 60 * 60
    start = end - 5400  # 90 minutes, whole minutes
    samples = [
        Sample("nemo_node_power_watts", {"node": "n1", "cluster": "edge"}, float(i % 7), start + 10 * i)
        for i in range(530)  # up to 100 s before the end
    ]
    query = MetricsQuery(Selector("nemo_node_power_watts"), 5400, Aggregation.AVG, by=("cluster",), at=end)
    expected = sum(s.value for s in samples) / len(samples)

    plane = ControlPlane(settings)
    await plane.start()
    try:
        plane.metrics_store.ingest(samples)
        before = await plane.metrics.query(query)
        assert before.series[0].points == [(end, pytest.approx(expected))]
    finally:
        await plane.stop()  # a clean stop writes every bucket, finished or not

    again = ControlPlane(settings)
    await again.start()
    try:
        assert again.metrics_store.series_count() == 0  # nothing raw: the answer comes from the database
        after = await again.metrics.query(query)
        assert [dict(s.labels) for s in after.series] == [{"cluster": "edge"}]
        assert after.series[0].points == [(end, pytest.approx(expected))]
    finally:
        await again.stop()


def test_rows_the_database_refused_are_written_by_the_next_flush(tmp_path: Path) -> None:
    from nemo_kernel.store.tables import MetricRollupRow
    from tests.conftest import migrated_database

    clock = Clock(T0 + 600)
    with migrated_database(f"sqlite:///{tmp_path / 'nemo.db'}") as db:
        store = EmbeddedMetrics(rollups=DatabaseRollups(db), clock=clock)
        store.ingest([Sample("g", {}, float(i), T0 + i * 10) for i in range(30)])  # 5 minutes
        MetricRollupRow.__table__.drop(db.engine)  # the database refuses the writes
        with pytest.raises(Exception, match="metric_rollups"):
            store.flush()
        MetricRollupRow.__table__.create(db.engine)  # it is back
        store.ingest([Sample("g", {}, 100.0, T0 + 400)])  # late: its minute is older than the last flush's cutoff
        assert store.flush() == 6 + 2  # the 5 refused minutes and their hour, then the late sample's minute and hour
        rows = DatabaseRollups(db).load("g", 60, T0, T0 + 3600)
        assert [(r[3] - T0, r[4], r[5]) for r in rows] == [
            (0, 6, 15.0),
            (60, 6, 51.0),
            (120, 6, 87.0),
            (180, 6, 123.0),
            (240, 6, 159.0),
            (360, 1, 100.0),
        ]
        (hour,) = DatabaseRollups(db).load("g", 3600, T0, T0 + 3600)
        assert hour[4:6] == (31, 535.0)  # the hour's two parts merged


def test_hour_buckets_answer_before_the_first_minute_bucket(database: Database) -> None:
    rollups = DatabaseRollups(database)
    key = labels_key({"node": "n1"})
    day = T0 + 24 * 3600
    # hours of the day before (1-minute buckets pruned), then minutes of the last hour; the hour of those minutes
    # is stored too, and must not count twice
    hours = [("g", key, 3600, T0 + h * 3600, 60, 60.0 * h, h, h, h, 0.0) for h in range(24)]
    minutes = [("g", key, 60, day - 3600 + m * 60, 1, 100.0, 100, 100, 100, 0.0) for m in range(60)]
    rollups.save([*hours, ("g", key, 3600, day - 3600, 60, 6000.0, 100, 100, 100, 0.0), *minutes])
    store = EmbeddedMetrics(rollups=rollups, clock=lambda: day + 1)

    def ask(aggregation: Aggregation, window: float) -> float:
        (series,) = store.evaluate(MetricsQuery(Selector("g"), window, aggregation, at=day)).series
        assert series.labels["node"] == "n1"
        ((_, value),) = series.points
        return value

    # 23 whole hours (0..22) from the hour buckets, then the last hour from its minutes
    assert ask(Aggregation.SUM, 24 * 3600) == pytest.approx(60 * sum(range(23)) + 6000)
    assert ask(Aggregation.AVG, 24 * 3600) == pytest.approx((60 * sum(range(23)) + 6000) / (24 * 60))
    assert ask(Aggregation.MIN, 24 * 3600) == 0.0
    assert ask(Aggregation.MAX, 3 * 3600) == 100.0
    assert ask(Aggregation.LAST, 24 * 3600) == 100.0
    assert ask(Aggregation.AVG, 1800) == 100.0  # only minutes
