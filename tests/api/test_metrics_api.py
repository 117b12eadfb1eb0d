"""The query interface over HTTP: /metrics/query, /metrics/top/*, /workloads/{name}/metrics.

A real control plane serves the API on loopback (``tests/served_api.py``); a workload is applied and placed
through the API, and the test writes its replicas' samples, with known rates, into the control plane's embedded
store: every answer is checked against those rates.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from tests.served_api import ServedApi, served_api
from tests.stack import expect_error, wait_for

from nemo_kernel.metrics import MetricsQuery, MetricsUnavailable, QueryResult, Sample

NODE = {"name": "ea-1", "cpu": 4, "memory_mib": 4096}
CLUSTERS = [{"name": "edge-a", "tier": "edge", "region": "eu-south", "country": "ES", "nodes": [NODE]}]
DEMO = {
    "name": "demo",
    "deployment": {"command": ["app"], "replicas": 2, "ports": [], "resources": {"cpu": 0.5, "memory_mib": 256}},
}
MIB = 1 << 20
CPU_RATES = (0.25, 0.5)  # cores each replica burns
MEMORY = (100 * MIB, 200 * MIB)
WATTS = (3.0, 6.0)
REQUESTS_PER_SECOND, ERRORS_PER_SECOND = 10.0, 1.0
BUCKETS = {"0.1": 0.5, "0.25": 0.9, "1": 1.0, "+Inf": 1.0}  # share of requests at or under each bound


def samples_at(replicas: list[str], t: float, since: float) -> list[Sample]:
    """The samples of time ``t`` for counters that started at ``since`` and grow at the rates above."""
    elapsed = t - since
    out: list[Sample] = []
    for replica, cpu, memory, watts in zip(replicas, CPU_RATES, MEMORY, WATTS, strict=True):
        labels = {"namespace": "default", "workload": "demo", "replica": replica, "cluster": "edge-a", "node": "ea-1"}
        out += [
            Sample("nemo_replica_cpu_seconds_total", labels, cpu * elapsed, t),
            Sample("nemo_replica_memory_bytes", labels, memory, t),
            Sample("nemo_replica_power_watts", labels, watts, t),
            Sample("nemo_replica_energy_joules_total", labels, watts * elapsed, t),
        ]
    node = {"cluster": "edge-a", "node": "ea-1"}
    out += [
        Sample("nemo_node_cpu_seconds_total", node, 1.0 * elapsed, t),
        Sample("nemo_node_cpu_cores", node, 4.0, t),
        Sample("nemo_node_memory_bytes", node, 1024.0 * MIB, t),
        Sample("nemo_node_memory_capacity_bytes", node, 4096.0 * MIB, t),
        Sample("nemo_node_power_watts", node, 40.0, t),
        Sample("nemo_cluster_heartbeat_rtt_seconds", {"cluster": "edge-a"}, 0.004, t),
    ]
    route = {"namespace": "default", "workload": "demo", "route": "demo"}
    out += [
        Sample("nemo_workload_requests_total", {**route, "code": "200"}, REQUESTS_PER_SECOND * elapsed, t),
        Sample(
            "nemo_workload_request_errors_total", {**route, "decided_by": "upstream"}, ERRORS_PER_SECOND * elapsed, t
        ),
    ]
    out += [
        Sample("nemo_workload_request_duration_seconds_bucket", {**route, "le": le}, share * 10.0 * elapsed, t)
        for le, share in BUCKETS.items()
    ]
    return out


@contextmanager
def feeding(served: ServedApi, replicas: list[str]) -> Iterator[None]:
    """Write ten minutes of history every 5 s, then a sample of every series each second while the block runs,
    as a collector would (a window ending now always has samples up to now)."""
    since = time.time() - 600
    served.plane.metrics_store.ingest([s for k in range(120) for s in samples_at(replicas, since + 5 * k, since)])
    stop = threading.Event()

    def feed() -> None:
        while not stop.wait(1.0):  # the feeder's own period
            served.plane.metrics_store.ingest(samples_at(replicas, time.time(), since))

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def running_demo(served: ServedApi) -> list[str]:
    """Apply the demo workload through the API and wait until it runs; its replica ids, sorted."""
    assert served.api("POST", "/workloads", json=DEMO).status_code == 201
    wait_for(lambda: served.api("GET", "/workloads/demo").json()["phase"] == "Running", 30, "demo running")
    return sorted(r["id"] for r in served.api("GET", "/workloads/demo").json()["replicas"])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    with served_api(tmp_path_factory.mktemp("metrics-api"), CLUSTERS) as s, feeding(s, running_demo(s)):
        yield s


def _replicas(served: ServedApi) -> list[str]:
    return sorted(r["id"] for r in served.api("GET", "/workloads/demo").json()["replicas"])


def _close(value: Any, expected: float, rel: float = 0.03) -> bool:
    return isinstance(value, float | int) and math.isclose(value, expected, rel_tol=rel)


def test_a_rate_per_replica_from_the_embedded_store(served: ServedApi) -> None:
    selector = 'nemo_replica_cpu_seconds_total{namespace="default",workload="demo"}'
    answer = served.api(
        "GET", "/metrics/query", params={"selector": selector, "window": "5m", "aggregation": "rate", "by": "replica"}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["source"] == "embedded" and body["warnings"] == []
    rates = {s["labels"]["replica"]: s["points"][-1][1] for s in body["series"]}
    assert set(rates) == set(_replicas(served))
    for replica, expected in zip(_replicas(served), CPU_RATES, strict=True):
        assert _close(rates[replica], expected), (replica, rates)


def test_a_range_query_has_one_point_per_step(served: ServedApi) -> None:
    params = {"selector": "nemo_node_memory_bytes", "window": "300", "step": "1m", "aggregation": "max"}
    body = served.api("GET", "/metrics/query", params=params).json()
    [series] = body["series"]
    assert series["labels"] == {"cluster": "edge-a", "node": "ea-1"}  # max_over_time drops the name, as in PromQL
    times = [t for t, _ in series["points"]]
    assert len(times) in (5, 6) and all(b - a == pytest.approx(60) for a, b in itertools.pairwise(times))
    assert {v for _, v in series["points"]} == {1024.0 * MIB}


def test_quantiles_and_a_selector_matching_nothing(served: ServedApi) -> None:
    params = {
        "selector": 'nemo_workload_request_duration_seconds{workload="demo"}',
        "aggregation": "histogram_quantile",
        "quantile": "0.5",
        "by": "",
    }
    [series] = served.api("GET", "/metrics/query", params=params).json()["series"]
    assert _close(series["points"][-1][1], 0.1)  # half the requests are under 0.1 s
    empty = served.api("GET", "/metrics/query", params={"selector": 'nemo_replica_up{workload="nobody"}'}).json()
    assert empty["series"] == [] and empty["warnings"] == ["no series matched the selector in the window"]


def test_a_workload_summary_per_replica_and_summed(served: ServedApi) -> None:
    response = served.api("GET", "/workloads/demo/metrics", params={"window": "5m"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["namespace"], body["workload"], body["source"], body["window_seconds"]) == (
        "default",
        "demo",
        "embedded",
        300,
    )
    rows = {r["replica"]: r for r in body["replica_usage"]}
    for replica, cpu, memory, watts in zip(_replicas(served), CPU_RATES, MEMORY, WATTS, strict=True):
        row = rows[replica]
        assert (row["cluster"], row["node"], row["phase"]) == ("edge-a", "ea-1", "Running")
        assert _close(row["cpu_cores"], cpu) and row["memory_bytes"] == memory and _close(row["power_watts"], watts)
        assert _close(row["energy_joules"], watts * 300)
    assert body["replicas"] == 2 and _close(body["cpu_cores"], sum(CPU_RATES))
    assert body["memory_bytes"] == sum(MEMORY)
    assert _close(body["requests_per_second"], REQUESTS_PER_SECOND)
    assert _close(body["error_ratio"], ERRORS_PER_SECOND / REQUESTS_PER_SECOND)
    assert 0.25 < body["latency_p99_seconds"] <= 1.0  # the 99th percentile is in the (0.25, 1] bucket
    assert body["co2_grams"] is None  # no series of it: unknown, not zero


def test_top_tables(served: ServedApi) -> None:
    # 5 min windows: a sample a few seconds late (a busy machine) moves a rate by about 1 %, not 5 % as in 1 min.
    workloads = served.api("GET", "/metrics/top/workloads", params={"window": "5m"}).json()
    [row] = workloads["rows"]
    assert (row["namespace"], row["workload"], row["replicas"]) == ("default", "demo", 2)
    assert _close(row["cpu_cores"], sum(CPU_RATES))
    [node] = served.api("GET", "/metrics/top/nodes", params={"window": "5m"}).json()["rows"]
    assert (node["cluster"], node["node"]) == ("edge-a", "ea-1")
    assert _close(node["cpu_cores"], 1.0) and _close(node["cpu_ratio"], 0.25) and node["memory_ratio"] == 0.25
    [cluster] = served.api("GET", "/metrics/top/clusters", params={"window": "5m"}).json()["rows"]
    assert cluster["nodes"] == 1 and _close(cluster["cpu_ratio"], 0.25) and cluster["heartbeat_rtt_seconds"] == 0.004
    assert served.api("GET", "/metrics/top/nodes", params={"cluster": "other"}).json()["rows"] == []


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"selector": "rate(nemo_replica_cpu_seconds_total[5m])"}, "query.selector", "unknown function 'rate'"),
        ({"selector": 'nemo_replica_up{"workload"="x"}'}, "query.selector", "label name"),
        ({"selector": 'nemo_replica_up{__meta="x"}'}, "query.selector", "'__meta'"),
        ({"selector": 'nemo_replica_up{workload="demo\x00"}'}, "query.selector", "control character '\\x00'"),
        ({"selector": 'nemo_replica_up{workload="\\x00"}'}, "query.selector", "control character '\\x00'"),
        ({"selector": "nemo_replica_up", "by": "work-load"}, "query.by", "'work-load' is not a label name"),
        ({"selector": "nemo_replica_up", "by": "__name__"}, "query.by", "'__name__'"),
        (
            {"selector": "x", "aggregation": "histogram_quantile", "quantile": "0.9", "by": "route,le"},
            "query.by",
            "groups by le itself",
        ),
        ({"selector": "nemo_replica_up", "aggregation": "median"}, "query.aggregation", "unknown aggregation 'median'"),
        ({"selector": "nemo_replica_up", "window": "32d"}, "query.window", "at most 31d"),
        ({"selector": "nemo_replica_up", "window": "5 minutes"}, "query.window", "not a duration"),
        ({"selector": "nemo_replica_up", "window": "0"}, "query.window", "more than zero"),
        ({"selector": "nemo_replica_up", "window": "31d", "step": "1s"}, "query.step", "11000 points"),
        ({"selector": "nemo_replica_up", "aggregation": "quantile"}, "query.quantile", "required"),
        ({"selector": "nemo_replica_up", "quantile": "0.5"}, "query.quantile", "only with"),
        ({"selector": "nemo_replica_up", "quantile": "NaN", "aggregation": "quantile"}, "query.quantile", ""),
        ({"selector": "nemo_replica_up", "at": "1e300"}, "query.at", ""),
    ],
)
def test_bad_queries_are_refused_naming_the_parameter(
    served: ServedApi, params: dict[str, str], field: str, says: str
) -> None:
    error = expect_error(served.api("GET", "/metrics/query", params=params), 422, "invalid")
    [detail] = [d for d in error["details"] if d["field"] == field]
    assert says in detail["message"], detail


def test_the_window_limit_is_in_the_refusal(served: ServedApi) -> None:
    error = expect_error(served.api("GET", "/workloads/demo/metrics", params={"window": "40d"}), 422, "invalid")
    assert error["details"] == [
        {"field": "query.window", "message": "at most 31d (2678400 s)", "limit_seconds": 2678400.0}
    ]


def test_an_unknown_workload_is_404(served: ServedApi) -> None:
    expect_error(served.api("GET", "/workloads/nope/metrics"), 404, "not_found")
    expect_error(served.api("GET", "/workloads/demo/metrics", params={"namespace": "other"}), 404, "not_found")


def test_a_viewer_reads_metrics_and_a_stranger_does_not(served: ServedApi) -> None:
    viewer = served.client_with_roles("metrics-viewer", ["nemo-viewer"])
    for path in ("/metrics/query?selector=nemo_replica_up", "/metrics/top/clusters", "/workloads/demo/metrics"):
        assert served.api("GET", path, token=viewer).status_code == 200, path
        expect_error(served.api("GET", path, token=None), 401, "invalid_token")
    nobody = served.client_with_roles("metrics-nobody", [])
    expect_error(served.api("GET", "/metrics/top/nodes", token=nobody), 403, "insufficient_scope")


class _Unavailable:
    """A reader whose backend is down, as the Prometheus reader reports it (``MetricsUnavailable`` with why)."""

    async def query(self, query: MetricsQuery) -> QueryResult:
        raise MetricsUnavailable("Prometheus at http://127.0.0.1:9 refused the connection")


def test_backend_down_is_503_with_the_reason(served: ServedApi) -> None:
    embedded = served.plane.metrics
    served.plane.metrics = _Unavailable()
    try:
        for path in ("/metrics/query?selector=nemo_replica_up", "/metrics/top/workloads", "/workloads/demo/metrics"):
            error = expect_error(served.api("GET", path), 503, "metrics_unavailable")
            assert "refused the connection" in error["message"], path
    finally:
        served.plane.metrics = embedded
    assert served.api("GET", "/metrics/top/workloads").status_code == 200
