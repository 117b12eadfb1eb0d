"""The store's newest samples as Prometheus text exposition (what /federate serves), read back by Prometheus'
own parsers: prometheus_client's and promtool's."""

from __future__ import annotations

import math
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nemo_kernel.metrics import EmbeddedMetrics, Matcher, MatchOp, Sample, Selector
from nemo_kernel.metrics.exposition import federate

NOW = 1_700_000_000.0


@pytest.fixture
def store() -> EmbeddedMetrics:
    store = EmbeddedMetrics(clock=lambda: NOW)
    lat = "nemo_workload_request_duration_seconds"
    store.ingest(
        [
            Sample("nemo_node_power_watts", {"node": "n1", "cluster": "edge"}, 10.0, NOW - 20),
            Sample("nemo_node_power_watts", {"node": "n1", "cluster": "edge"}, 12.5, NOW - 5),
            Sample("nemo_node_power_watts", {"node": "n2", "cluster": "edge"}, 3.0, NOW - 400),  # beyond lookback
            Sample("app_queue_depth", {"workload": 'we"b\\x\ny'}, 7.0, NOW - 1),
            Sample(f"{lat}_bucket", {"workload": "web", "le": "0.5"}, 3.0, NOW - 2),
            Sample(f"{lat}_bucket", {"workload": "web", "le": "+Inf"}, 4.0, NOW - 2),
            Sample(f"{lat}_sum", {"workload": "web"}, 1.25, NOW - 2),
            Sample(f"{lat}_count", {"workload": "web"}, 4.0, NOW - 2),
            Sample("nemo_link_loss_ratio", {"cluster": "edge"}, float("nan"), NOW - 3),
        ]
    )
    return store


def test_newest_samples_within_the_lookback_with_types_help_and_ms_timestamps(store: EmbeddedMetrics) -> None:
    text = federate(store, [Selector("nemo_node_power_watts"), Selector("nemo_node_power_watts")], 100)
    assert text == (
        "# HELP nemo_node_power_watts Power drawn by the node (its power model)\n"
        "# TYPE nemo_node_power_watts gauge\n"
        'nemo_node_power_watts{cluster="edge",node="n1"} 12.5 1699999995000\n'
    )


def test_every_selected_family_parses_back_with_its_labels_escaped(store: EmbeddedMetrics) -> None:
    everything = Selector("", (Matcher("__name__", MatchOp.RE, ".+"),))
    text = federate(store, [everything], 100)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    lat = "nemo_workload_request_duration_seconds"
    assert families["nemo_workload_request_duration_seconds"].type == "histogram"
    assert families["app_queue_depth"].type == "unknown"  # untyped, as Prometheus' /federate writes it
    (queue,) = families["app_queue_depth"].samples
    assert queue.labels == {"workload": 'we"b\\x\ny'}
    assert queue.timestamp == pytest.approx(NOW - 1)
    assert [(s.name.rsplit("_", 1)[1], s.labels.get("le"), s.value) for s in families[lat].samples] == [
        ("bucket", "0.5", 3.0),  # buckets in increasing le
        ("bucket", "+Inf", 4.0),
        ("count", None, 4.0),
        ("sum", None, 1.25),
    ]
    assert math.isnan(families["nemo_link_loss_ratio"].samples[0].value)
    promtool = shutil.which("promtool")
    if promtool is not None:  # Prometheus' own linter reads it too (it may only warn, never fail to parse)
        checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert "error while linting" not in checked.stderr + checked.stdout


def test_nothing_selected_is_empty_and_a_bad_regex_is_refused(store: EmbeddedMetrics) -> None:
    assert federate(store, [Selector("absent")], 100) == ""
    with pytest.raises(ValueError, match="regular expression"):
        federate(store, [Selector("x", (Matcher("a", MatchOp.RE, "["),))], 100)
