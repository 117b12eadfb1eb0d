"""With NEMO_PROMETHEUS_URL set, queries go to Prometheus; Prometheus down is a 503 naming it, while the embedded
store goes on collecting the clusters' series (a real local cluster, its agent a real process)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nemo_kernel.metrics.model import Selector
from tests.metrics.prometheus_server import PrometheusServer, wait_for

served_api = pytest.importorskip("tests.served_api", reason="needs the query API (issue 10, query interface)")

CLUSTER = {
    "name": "solo",
    "driver": "local",
    "tier": "edge",
    "region": "eu",
    "country": "DE",
    "nodes": [{"name": "solo-n1", "cpu": 2, "memory_mib": 2048, "power": {"idle_watts": 5, "max_watts": 20}}],
}
QUERY = {"selector": "nemo_node_cpu_cores", "window": "1m", "aggregation": "last"}


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path / "prometheus", {"global": {"scrape_interval": "15s"}})
    yield server
    server.stop()


def test_prometheus_down_is_503_while_the_embedded_store_keeps_collecting(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    with served_api.served_api(
        tmp_path / "nemo", [], prometheus_url=prometheus.url, prometheus_timeout=2, metrics_interval=0.5
    ) as api:
        assert api.api("POST", "/clusters", json=CLUSTER).status_code == 201
        answered = api.api("GET", "/metrics/query", params=QUERY)
        assert answered.status_code == 200, answered.text
        assert answered.json()["source"] == "prometheus"

        prometheus.stop()
        stopped = time.time()
        refused = api.api("GET", "/metrics/query", params=QUERY)
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert f"Prometheus at {prometheus.url} is unreachable" in error["message"]

        def collected_since_the_stop() -> bool:
            latest = api.plane.metrics_store.latest([Selector("nemo_node_cpu_cores")])
            return any(s.timestamp > stopped and s.labels.get("cluster") == "solo" for s in latest)

        wait_for(collected_since_the_stop, "a sample of cluster solo collected after Prometheus stopped", 60)
