"""A workload's own series cannot take the room of the series NEMO judges workloads by.

A replica that declares ``deployment.metrics`` may invent new label values on every page (10,000 samples a page
within the scrape limits): within minutes its series would fill ``max_series``, and every NEMO series of a replica
started afterwards (``nemo_replica_up``, CPU, energy) would be dropped, leaving its SLOs and placement blind.
"""

from __future__ import annotations

from nemo_kernel.metrics import Aggregation, EmbeddedMetrics, MetricsQuery, Sample, Selector

NOW = 1_700_000_000.0


def test_a_churning_workload_leaves_room_for_nemo_series() -> None:
    store = EmbeddedMetrics(max_series=100, clock=lambda: NOW)
    for page in range(4):  # new label values on every page
        store.ingest([Sample("churn", {"id": f"{page}-{i}"}, 1.0, NOW - 10 + page) for i in range(60)])
    later = {"workload": "demo", "replica": "demo-v1-0-abc"}
    store.ingest([Sample("nemo_replica_up", {**later, "n": str(i)}, 1.0, NOW) for i in range(40)])
    answer = store.evaluate(MetricsQuery(Selector("nemo_replica_up"), 60, Aggregation.LAST, at=NOW))
    assert len(answer.series) == 40  # every NEMO series of the later replica is held
    assert store.dropped()["series_limit"] > 0  # the churn beyond its share was refused and counted
