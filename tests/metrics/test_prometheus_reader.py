"""The analytics engine answered by a real Prometheus: queries, real energy meters, and Prometheus failing."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nemo_kernel.metrics.model import (
    Aggregation,
    Matcher,
    MatchOp,
    MetricsQuery,
    MetricsUnavailable,
    Selector,
)
from nemo_kernel.metrics.prometheus import PrometheusReader
from tests.metrics.prometheus_server import Exporter, PrometheusServer, free_port, running_prometheus, scrape_job

DEMO = "demo-v1-0-a1b2c3"  # a replica of workload "demo", named as NEMO names replicas
SOLO = "solo-v2-1-ffffff"
SCAPH = "scaph-v1-0-000001"
KEPLER_WATTS, DEMO_MODEL_WATTS, SOLO_MODEL_WATTS = 5.0, 1.0, 2.0


def _exposition(t0: float) -> str:
    """Counters growing at known rates (joules: watts x seconds), and gauges at known levels."""
    s = time.time() - t0
    kepler = "kepler_container_cpu_joules_total"
    scaph = "scaph_process_power_consumption_microwatts"
    pod = f'kubernetes_pod_name="{SCAPH}",kubernetes_pod_namespace="default"'
    return "\n".join(
        [
            f"# TYPE {kepler} counter",
            f'{kepler}{{pod_name="{DEMO}",container_namespace="default",container_name="main"}} {KEPLER_WATTS * s}',
            f'{kepler}{{pod_name="not-nemo",container_namespace="kube-system",container_name="x"}} {9 * s}',
            "# TYPE nemo_replica_energy_joules_total counter",
            f'nemo_replica_energy_joules_total{{replica="{DEMO}",workload="demo",namespace="default"}} '
            f"{DEMO_MODEL_WATTS * s}",
            f'nemo_replica_energy_joules_total{{replica="{SOLO}",workload="solo",namespace="default"}} '
            f"{SOLO_MODEL_WATTS * s}",
            "# TYPE nemo_replica_power_watts gauge",
            f'nemo_replica_power_watts{{replica="{SCAPH}",workload="scaph",namespace="default"}} 0.5',
            f"# TYPE {scaph} gauge",
            f'{scaph}{{{pod},pid="1",exe="a"}} 3000000',
            f'{scaph}{{{pod},pid="2",exe="b"}} 1000000',
            "# TYPE test_level gauge",
            'test_level{a="x"} 42',
            "",
        ]
    )


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus scraping a synthetic exporter (Kepler, Scaphandre and NEMO's model series) every second."""
    t0 = time.time()
    exporter = Exporter(lambda: _exposition(t0))
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [scrape_job("meters", exporter.target)]}
    try:
        with running_prometheus(tmp_path_factory.mktemp("prometheus"), config) as server:
            # 8 s of samples, so that the 5 s windows below are full (a rate over a partly empty window is lower).
            server.wait_for_series('count_over_time(nemo_replica_energy_joules_total{workload="solo"}[8s]) >= 8')
            yield server
    finally:
        exporter.stop()


@pytest.fixture
async def reader(prometheus: PrometheusServer) -> Iterator[PrometheusReader]:
    reader = PrometheusReader(prometheus.url, timeout=5)
    yield reader  # type: ignore[misc]
    await reader.aclose()


def _energy_rate(workload: str, by: tuple[str, ...] | None = ("replica", "workload")) -> MetricsQuery:
    selector = Selector("nemo_replica_energy_joules_total", (Matcher("workload", MatchOp.EQ, workload),))
    return MetricsQuery(selector, 5, Aggregation.RATE, by=by)


async def test_instant_and_range_queries_answer_what_prometheus_holds(reader: PrometheusReader) -> None:
    level = Selector("test_level", (Matcher("a", MatchOp.EQ, "x"),))
    instant = await reader.query(MetricsQuery(level, 10, Aggregation.AVG))
    assert instant.source == "prometheus"
    (series,) = instant.series
    assert (series.labels["a"], series.labels["job"], series.points[0][1]) == ("x", "meters", 42.0)
    at = time.time() - 1
    ranged = await reader.query(MetricsQuery(level, 4, Aggregation.MAX, step=2, by=(), at=at))
    (series,) = ranged.series
    assert series.labels == {}
    assert [ts for ts, _ in series.points] == pytest.approx([at - 4, at - 2, at], abs=1e-3)
    assert {v for _, v in series.points} == {42.0}


async def test_replica_energy_comes_from_kepler_where_it_measures(reader: PrometheusReader) -> None:
    (demo,) = (await reader.query(_energy_rate("demo"))).series
    assert demo.labels == {"replica": DEMO, "workload": "demo"}
    assert demo.points[0][1] == pytest.approx(KEPLER_WATTS, rel=0.05)
    result = await reader.query(_energy_rate("demo", by=None))
    assert result.warnings[-1] == (
        "nemo_replica_energy_joules_total measured by Kepler (kepler_container_cpu_joules_total)"
    )
    (series,) = result.series
    assert {k: series.labels[k] for k in ("replica", "namespace", "workload")} == {
        "replica": DEMO,
        "namespace": "default",
        "workload": "demo",
    }


async def test_nemo_s_power_model_answers_where_no_meter_measures(reader: PrometheusReader) -> None:
    (solo,) = (await reader.query(_energy_rate("solo"))).series
    assert solo.labels == {"replica": SOLO, "workload": "solo"}
    assert solo.points[0][1] == pytest.approx(SOLO_MODEL_WATTS, rel=0.05)
    modelled = PrometheusReader(reader.url, timeout=5, meters=False)
    try:
        (demo,) = (await modelled.query(_energy_rate("demo"))).series
    finally:
        await modelled.aclose()
    assert demo.points[0][1] == pytest.approx(DEMO_MODEL_WATTS, rel=0.05)


async def test_replica_power_comes_from_scaphandre_summed_over_its_processes(reader: PrometheusReader) -> None:
    selector = Selector("nemo_replica_power_watts", (Matcher("workload", MatchOp.RE, "sca.*"),))
    result = await reader.query(MetricsQuery(selector, 5, Aggregation.AVG, by=("workload",)))
    assert [(s.labels, s.points[0][1]) for s in result.series] == [({"workload": "scaph"}, 4.0)]
    assert "Scaphandre" in result.warnings[-1]


async def test_a_query_prometheus_refuses_is_a_value_error_with_its_reason(reader: PrometheusReader) -> None:
    # Python accepts a lookahead; Prometheus' RE2 does not.
    selector = Selector("test_level", (Matcher("a", MatchOp.RE, "(?=x)x"),))
    with pytest.raises(ValueError, match=r"Prometheus refused the query: .*invalid or unsupported Perl syntax"):
        await reader.query(MetricsQuery(selector, 10))


async def test_prometheus_down_is_unavailable_with_the_reason() -> None:
    reader = PrometheusReader(f"http://127.0.0.1:{free_port()}", timeout=2)
    try:
        with pytest.raises(MetricsUnavailable, match=r"Prometheus at http://127\.0\.0\.1:\d+ is unreachable: "):
            await reader.query(MetricsQuery(Selector("up"), 60))
    finally:
        await reader.aclose()


async def test_prometheus_too_slow_is_unavailable_after_the_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        reader = PrometheusReader(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
        try:
            with pytest.raises(MetricsUnavailable, match=r"did not answer within 0\.5 s"):
                await reader.query(MetricsQuery(Selector("up"), 60))
        finally:
            await reader.aclose()


async def test_something_else_than_prometheus_is_unavailable(tmp_path: Path) -> None:
    exporter = Exporter(lambda: "not json")
    reader = PrometheusReader(f"http://{exporter.target}", timeout=2)
    try:
        with pytest.raises(MetricsUnavailable, match="answered HTTP 404 that is not its API's JSON"):
            await reader.query(MetricsQuery(Selector("up"), 60))
    finally:
        await reader.aclose()
        exporter.stop()


def test_a_meter_never_answers_what_it_cannot_measure() -> None:
    from nemo_kernel.metrics.meters import METERS, metered_promql

    cpu = MetricsQuery(Selector("nemo_replica_cpu_seconds_total"), 60, Aggregation.RATE)
    last_power = MetricsQuery(Selector("nemo_replica_power_watts"), 60, Aggregation.LAST)
    assert [metered_promql(cpu, m) for m in METERS] == [None, None, None]
    assert [metered_promql(last_power, m) is None for m in METERS] == [True, True, False]


def test_a_meter_checks_the_grouping_labels_too() -> None:
    from nemo_kernel.metrics.meters import KEPLER, metered_promql

    energy = Selector("nemo_replica_energy_joules_total")
    with pytest.raises(ValueError, match="is not a label name"):
        metered_promql(MetricsQuery(energy, 60, Aggregation.RATE, by=("a) or vector(1",)), KEPLER)
