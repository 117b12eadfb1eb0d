"""The store's answers checked by Prometheus' own PromQL engine: ``promtool test rules`` loads the same series,
evaluates each query's PromQL and compares it with the value the embedded store gave (promtool of Prometheus 2.42,
installed here; the Prometheus helper's tests compare against a running server too)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from nemo_kernel.metrics import Aggregation, EmbeddedMetrics, MetricsQuery, Sample, Selector

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus package) is not installed")

INTERVAL = 10  # seconds between the samples of promtool's input series, which start at unix time 0

# promtool creates the series in a random order, and Prometheus adds series up in the order it created them: the
# series aggregated across (c_total by workload and in all, g) have values whose sums and means round the same in
# any order. late_total starts later (extrapolation towards the window's start).
SERIES: list[tuple[str, dict[str, str], list[float | None]]] = [
    ("c_total", {"workload": "web", "replica": "a"}, [3, 13, 23, 5, 15, 25, 38, 40, 55]),  # a reset
    ("c_total", {"workload": "web", "replica": "b"}, [100, 110, 120, 131, 150, 151, 160, 170, 180]),
    ("c_total", {"workload": "db", "replica": "c"}, [1, 1.5, 4, 4, 9, 9.25, 12, 13, 21]),
    ("late_total", {}, [None, None, None, 100, 110, 120, 131, 150, 151]),
    ("g", {"node": "n1"}, [100, 3, 1, 2, 4, 10, 100, 7, 7]),
    ("g", {"node": "n2"}, [0.5, None, 2, None, 8, None, 1, None, 1]),
    *[
        ("lat_bucket", {"workload": "web", "le": le}, [0, k * 3, k * 7, k * 10, k * 12, k * 20, k * 21, k * 30, k * 31])
        for le, k in (("0.1", 1.0), ("0.5", 2.5), ("1", 3.0), ("+Inf", 3.5))
    ],
]

# (the query, its PromQL as metrics.promql writes it)
QUERIES: list[tuple[MetricsQuery, str]] = [
    (MetricsQuery(Selector("c_total"), 60, Aggregation.RATE, at=60), "rate(c_total[60s])"),
    (MetricsQuery(Selector("c_total"), 45, Aggregation.RATE, at=80), "rate(c_total[45s])"),
    (MetricsQuery(Selector("late_total"), 60, Aggregation.RATE, at=60), "rate(late_total[60s])"),
    (
        MetricsQuery(Selector("c_total"), 60, Aggregation.RATE, by=("workload",), at=75),
        "sum by (workload) (rate(c_total[60s]))",
    ),
    (MetricsQuery(Selector("c_total"), 80, Aggregation.RATE, by=(), at=80), "sum(rate(c_total[80s]))"),
    (MetricsQuery(Selector("g"), 40, Aggregation.AVG, at=50), "avg_over_time(g[40s])"),
    (MetricsQuery(Selector("g"), 80, Aggregation.MAX, at=80), "max_over_time(g[80s])"),
    (MetricsQuery(Selector("g"), 35, Aggregation.MIN, at=65), "min_over_time(g[35s])"),
    (MetricsQuery(Selector("g"), 60, Aggregation.SUM, at=70), "sum_over_time(g[60s])"),
    (MetricsQuery(Selector("g"), 30, Aggregation.LAST, at=75), "last_over_time(g[30s])"),
    (MetricsQuery(Selector("g"), 80, Aggregation.QUANTILE, quantile=0.9, at=80), "quantile_over_time(0.9, g[80s])"),
    (MetricsQuery(Selector("g"), 80, Aggregation.AVG, by=(), at=80), "avg(avg_over_time(g[80s]))"),
    (
        MetricsQuery(Selector("lat"), 60, Aggregation.HISTOGRAM_QUANTILE, quantile=0.9, by=("workload",), at=80),
        "histogram_quantile(0.9, sum by (le, workload) (rate(lat_bucket[60s])))",
    ),
    (
        MetricsQuery(Selector("lat"), 50, Aggregation.HISTOGRAM_QUANTILE, quantile=0.3, at=70),
        "histogram_quantile(0.3, rate(lat_bucket[50s]))",
    ),
]


# Range queries: every point is checked as the instant query of the same PromQL at its time (a range query's
# point at t is its expression over [t - step, t]). Steps of 20 s hold 2-3 samples a window, so the store
# evaluates the windows together (metrics.windows), each row of sums, means and extremes advanced at once.
RANGE_QUERIES: list[tuple[MetricsQuery, str]] = [
    (MetricsQuery(Selector("c_total"), 80, Aggregation.RATE, step=20, at=80), "rate(c_total[20s])"),
    (
        MetricsQuery(Selector("c_total"), 60, Aggregation.RATE, step=20, by=("workload",), at=80),
        "sum by (workload) (rate(c_total[20s]))",
    ),
    (MetricsQuery(Selector("g"), 80, Aggregation.AVG, step=20, at=80), "avg_over_time(g[20s])"),
    (MetricsQuery(Selector("g"), 80, Aggregation.AVG, step=20, by=(), at=80), "avg(avg_over_time(g[20s]))"),
    (MetricsQuery(Selector("g"), 80, Aggregation.MAX, step=20, at=80), "max_over_time(g[20s])"),
    (MetricsQuery(Selector("g"), 80, Aggregation.MIN, step=20, by=(), at=80), "min(min_over_time(g[20s]))"),
    (MetricsQuery(Selector("g"), 80, Aggregation.SUM, step=20, at=80), "sum_over_time(g[20s])"),
    (MetricsQuery(Selector("c_total"), 80, Aggregation.SUM, step=20, by=(), at=80), "sum(sum_over_time(c_total[20s]))"),
    (MetricsQuery(Selector("g"), 60, Aggregation.LAST, step=20, at=80), "last_over_time(g[20s])"),
    (
        MetricsQuery(Selector("g"), 80, Aggregation.QUANTILE, quantile=0.3, step=20, at=80),
        "quantile_over_time(0.3, g[20s])",
    ),
    (
        MetricsQuery(Selector("lat"), 60, Aggregation.HISTOGRAM_QUANTILE, quantile=0.9, step=20, by=(), at=80),
        "histogram_quantile(0.9, sum by (le) (rate(lat_bucket[20s])))",
    ),
]


def _promql_labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())) + "}"


def test_every_query_equals_what_prometheus_computes_from_the_same_series(tmp_path: Path) -> None:
    store = EmbeddedMetrics(clock=lambda: 100.0)
    samples = [
        Sample(name, labels, float(v), i * INTERVAL)
        for name, labels, values in SERIES
        for i, v in enumerate(values)
        if v is not None
    ]
    store.ingest(sorted(samples, key=lambda s: s.timestamp))
    assert store.dropped() == {}

    tests = []
    for query, promql in QUERIES:
        result = store.evaluate(query)
        assert result.series, promql
        expected = []
        for series in result.series:
            ((t, value),) = series.points
            assert t == query.at
            expected.append({"labels": _promql_labels(dict(series.labels)), "value": value})
        tests.append({"expr": promql, "eval_time": f"{int(query.at or 0)}s", "exp_samples": expected})
    for query, promql in RANGE_QUERIES:
        by_time: dict[float, list[dict[str, object]]] = {}
        for series in store.evaluate(query).series:
            for t, value in series.points:
                by_time.setdefault(t, []).append({"labels": _promql_labels(dict(series.labels)), "value": value})
        assert query.step is not None and query.at is not None
        assert len(by_time) >= query.window // query.step, promql  # a point at (nearly) every step
        for t, samples in sorted(by_time.items()):
            tests.append({"expr": promql, "eval_time": f"{int(t)}s", "exp_samples": samples})
    spec = {
        "rule_files": [],
        "evaluation_interval": "1s",  # promtool loads samples only up to the last rule evaluation
        "tests": [
            {
                "interval": f"{INTERVAL}s",
                "input_series": [
                    {
                        "series": name + _promql_labels(labels),
                        "values": " ".join("_" if v is None else repr(float(v)) for v in values),
                    }
                    for name, labels, values in SERIES
                ],
                "promql_expr_test": tests,
            }
        ],
    }
    path = tmp_path / "agreement.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert PROMTOOL is not None
    checked = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
