"""The SLIs of the 15 kinds: each is defined; the metrics kinds read the embedded store; missing data is NoData."""

from __future__ import annotations

import math

import pytest

from nemo_kernel.domain.sla import Comparison, SloKind, SloSpec
from nemo_kernel.metrics import EmbeddedMetrics, Sample
from nemo_kernel.metrics import names as n
from nemo_kernel.ppef.sli import (
    KINDS,
    Incident,
    ReplicaCost,
    SliTarget,
    Source,
    backup_sli,
    comparison_of,
    cost_sli,
    incident_sli,
    press_sli,
    queries_for,
    read_metric_sli,
    scalability_sli,
    security_sli,
    threshold_of,
)

NOW = 1_700_000_000.0
DEMO = {"namespace": "default", "workload": "demo", "replica": "demo-0", "cluster": "edge-1"}
OTHER = {"namespace": "default", "workload": "other", "replica": "other-0", "cluster": "edge-1"}
TARGET = SliTarget("default", "demo", clusters=("edge-1",), cpu_request_cores=0.5)


def slo(kind: SloKind, **kw: object) -> SloSpec:
    return SloSpec.model_validate({"name": "s", "kind": kind.value, **kw})


@pytest.fixture(scope="module")
def store() -> EmbeddedMetrics:
    """Ten minutes of the demo workload every 10 s: 10 req/s, 1 in 10 failing, 90% under 0.1 s and all under 0.5 s;
    its replica up 3 samples in 4, using 0.25 cores and 20 W; its cluster's link losing 2% with 5 ms jitter.
    Another workload's series are there too, with different values, and must not leak in."""
    s = EmbeddedMetrics(clock=lambda: NOW + 1)
    samples: list[Sample] = []
    for i in range(61):
        t = NOW - 600 + 10 * i
        for labels, factor in ((DEMO, 1), (OTHER, 7)):
            samples += [
                Sample(n.WORKLOAD_REQUESTS.name, labels, 100.0 * i * factor, t),
                Sample(n.WORKLOAD_ERRORS.name, labels, 10.0 * i * factor, t),
                Sample(n.WORKLOAD_LATENCY.name + "_bucket", {**labels, "le": "0.1"}, 90.0 * i * factor, t),
                Sample(n.WORKLOAD_LATENCY.name + "_bucket", {**labels, "le": "0.5"}, 100.0 * i * factor, t),
                Sample(n.WORKLOAD_LATENCY.name + "_bucket", {**labels, "le": "+Inf"}, 100.0 * i * factor, t),
                Sample(n.REPLICA_UP.name, labels, 0.0 if i % 4 == 0 and factor == 1 else 1.0, t),
                Sample(n.REPLICA_CPU.name, labels, 2.5 * i * factor, t),
                Sample(n.REPLICA_ENERGY.name, labels, 200.0 * i * factor, t),
            ]
        samples += [
            Sample(n.LINK_LOSS.name, {"cluster": "edge-1", "peer": "cloud-1"}, 0.02, t),
            Sample(n.LINK_JITTER.name, {"cluster": "edge-1", "peer": "cloud-1"}, 0.005, t),
            Sample(n.LINK_LOSS.name, {"cluster": "edge-2", "peer": "cloud-1"}, 0.5, t),
        ]
    s.ingest(samples)
    assert s.dropped() == {}
    return s


def test_every_kind_has_an_sli() -> None:
    assert set(KINDS) == set(SloKind)
    assert len(KINDS) == 15
    assert comparison_of(slo(SloKind.THROUGHPUT)) is Comparison.AT_LEAST
    assert comparison_of(slo(SloKind.LATENCY, comparison=">=")) is Comparison.AT_LEAST
    assert threshold_of(slo(SloKind.ERROR_RATE, threshold=0.5)) is None  # judged by its target
    assert threshold_of(slo(SloKind.PRESS_COMPLIANCE)) == 1.0


async def test_latency_is_the_histogram_percentile(store: EmbeddedMetrics) -> None:
    r = await read_metric_sli(store, slo(SloKind.LATENCY, percentile=95), TARGET, 300, at=NOW)
    # 95th of 100 per window: 90 below 0.1, then 10 spread over (0.1, 0.5]: 0.1 + 0.4 * 5/10
    assert r.value == pytest.approx(0.3)
    assert r.events == pytest.approx(10 * 300)  # requests in the window, for min_events


async def test_error_rate_counts_bad_and_total_requests(store: EmbeddedMetrics) -> None:
    r = await read_metric_sli(store, slo(SloKind.ERROR_RATE), TARGET, 300, at=NOW)
    assert r.value == pytest.approx(0.1)
    assert r.bad == pytest.approx(300) and r.total == pytest.approx(3000)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (SloKind.THROUGHPUT, 10.0),  # req/s
        (SloKind.CAPACITY, 0.5),  # 0.25 cores of 0.5 asked
        (SloKind.ENERGY, 20.0),  # 20 J/s = 20 Wh per hour
        (SloKind.PACKET_LOSS, 0.02),  # its cluster's link, not edge-2's
        (SloKind.JITTER, 0.005),
    ],
)
async def test_metric_kinds_read_their_series(store: EmbeddedMetrics, kind: SloKind, expected: float) -> None:
    r = await read_metric_sli(store, slo(kind), TARGET, 300, at=NOW)
    assert r.value == pytest.approx(expected)


async def test_availability_is_the_share_of_replica_time_up(store: EmbeddedMetrics) -> None:
    r = await read_metric_sli(store, slo(SloKind.AVAILABILITY), TARGET, 600, at=NOW)
    # 61 samples in [NOW-600, NOW], down at i = 0, 4, ..., 60: 16 of them
    assert r.value == pytest.approx(45 / 61)
    assert r.bad is not None and r.total == 600


@pytest.mark.parametrize("kind", [k for k, t in KINDS.items() if t.source is not Source.METRICS])
async def test_kinds_without_series_are_no_data_from_the_engine(store: EmbeddedMetrics, kind: SloKind) -> None:
    assert (await read_metric_sli(store, slo(kind), TARGET, 300, at=NOW)).no_data


@pytest.mark.parametrize("kind", [k for k, t in KINDS.items() if t.source is Source.METRICS])
async def test_a_workload_without_series_is_no_data_never_met(store: EmbeddedMetrics, kind: SloKind) -> None:
    nobody = SliTarget("default", "absent", clusters=("nowhere",), cpu_request_cores=1)
    r = await read_metric_sli(store, slo(kind), nobody, 300, at=NOW)
    assert r.no_data, kind


def test_queries_name_only_the_workload_and_its_clusters() -> None:
    target = SliTarget("ns", "a.b", clusters=("c|d",))
    (q,) = queries_for(slo(SloKind.PACKET_LOSS), target, 60).values()
    assert [(m.label, m.value) for m in q.selector.matchers] == [("cluster", r"c\|d")]
    assert queries_for(slo(SloKind.JITTER), SliTarget("ns", "w"), 60) == {}  # no cluster known: nothing to ask


def test_store_kinds_from_their_facts() -> None:
    assert security_sli(2).value == 2
    incidents = [Incident(0, 30, 300), Incident(1000, 1060, None)]
    assert incident_sli(incidents, measure="mttd").value == 45
    assert incident_sli(incidents, measure="mttr").value == 300
    assert incident_sli([Incident(0, None, None)]).no_data
    assert backup_sli(1000, 400, None, rto=False).value == 600
    assert backup_sli(1000, None, None, rto=False).no_data and backup_sli(1000, 400, None, rto=True).no_data
    assert scalability_sli([12.0, 40.0]).value == 40 and scalability_sli([]).no_data
    assert press_sli(["DE", "FR", "US", "DE"], ["DE", "FR"]).value == 0.75
    assert press_sli([], ["DE"]).no_data
    cost = cost_sli([ReplicaCost(cpu=2, memory_mib=1024, cpu_hour_eur=0.03, gib_hour_eur=0.004)] * 2)
    assert cost.value == pytest.approx(2 * (0.06 + 0.004))
    assert cost_sli([]).no_data and math.isinf(cost.events)
