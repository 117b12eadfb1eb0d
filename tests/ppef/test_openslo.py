"""OpenSLO v1 export and import: an SLA survives the round trip whole; what OpenSLO cannot carry travels in the
``nemo.io/sla`` annotation; what NEMO cannot honour is refused naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from nemo_kernel.domain.errors import ApiError
from nemo_kernel.domain.sla import SlaSpec
from nemo_kernel.ppef import openslo

RICH: dict[str, Any] = {
    "name": "gold",
    "namespace": "team-a",
    "workload": "shop",
    "period": "28d",
    "service": {"description": "the shop", "availability": "critical"},
    "press": {"data_residency": ["ES"], "encryption_in_transit": True, "backup": {"rpo": "1h", "rto": "15m"}},
    "slos": [
        {"name": "errors", "kind": "error_rate", "target": 0.999, "min_events": 50, "description": "few errors"},
        {"name": "p99", "kind": "latency", "threshold": 0.3, "percentile": 99, "budgeting": "Timeslices",
         "timeslice": "1m"},
        {"name": "rps", "kind": "throughput", "threshold": 5},
        {"name": "odd", "kind": "throughput", "threshold": 5, "comparison": "<="},
    ],
    "reporting": {"period": "7d", "recipients": ["sre@example.org"]},
    "penalties": [{"slo": "errors", "below": 0.99, "credit_percent": 10}],
    "policies": [
        {"action": "scale_out", "slos": ["p99"], "step": 2, "max_replicas": 5},
        {"action": "notify", "cooldown": "1m", "webhook": "https://hooks.example.com/a"},
        {"action": "notify", "on": ["violated"], "slos": ["errors", "p99"], "webhook": "https://hooks.example.com/b"},
    ],
}  # fmt: skip


def test_round_trip_keeps_every_field() -> None:
    sla = SlaSpec.model_validate(RICH)
    objects = openslo.from_sla(sla)
    assert [o["kind"] for o in objects] == ["SLO"] * 4 and openslo.is_openslo(objects)
    assert objects[2]["spec"]["objectives"] == [{"target": 0.99, "op": "gte", "value": 5.0}]
    assert openslo.to_sla(objects) == sla


def test_an_unknown_kind_inside_openslo_is_named() -> None:
    objects = openslo.from_sla(SlaSpec.model_validate(RICH))
    objects[1]["spec"]["indicator"]["spec"]["thresholdMetric"]["metricSource"]["spec"]["kind"] = "vibes"
    with pytest.raises(ApiError) as caught:
        openslo.to_sla(objects)
    assert (caught.value.status, caught.value.details[0]["field"]) == (422, "slos[1].kind")


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("spec", "timeWindow"), [{"duration": "1M", "isRolling": False}], "[0].spec.timeWindow[0].isRolling"),
        (("spec", "objectives"), [{"target": 0.9, "op": "lt", "value": 1}], "[0].spec.objectives[0].op"),
        (("metadata", "annotations"), {"team": "a"}, "[0].metadata.annotations.team"),
        (("spec", "service"), "other", "spec.service"),
    ],
)
def test_what_nemo_cannot_honour_is_refused(path: tuple[str, str], value: Any, field: str) -> None:
    objects = openslo.from_sla(SlaSpec.model_validate(RICH))
    objects[0][path[0]][path[1]] = value
    with pytest.raises(ApiError) as caught:
        openslo.to_sla(objects)
    assert caught.value.details[0]["field"] == field


@pytest.mark.parametrize(
    ("annotation", "problem"),
    [
        ("[" * 5000 + "]" * 5000, "nested too deeply"),  # the JSON parser's recursion was a 500
        ('{"name": "gold", "name": "other", "workload": "shop"}', "duplicate key 'name'"),
        ('{"name": "gold", "workload": "shop", "penalties": [{"slo": "errors", "below": NaN}]}', "finite"),
    ],
)
def test_the_sla_annotation_obeys_the_rules_of_every_body(annotation: str, problem: str) -> None:
    objects = [o for o in openslo.from_sla(SlaSpec.model_validate(RICH)) if o["kind"] == "SLO"][:1]
    objects[0]["metadata"]["annotations"][openslo.ANNOTATION] = annotation
    with pytest.raises(ApiError) as caught:
        openslo.to_sla(objects)
    assert caught.value.status == 422
    assert f"metadata.annotations.{openslo.ANNOTATION}" in caught.value.details[0]["field"]
    assert problem in caught.value.message, caught.value.message
