"""An SLA refused for one SLO names that SLO only: the penalties and policies that name it are not blamed too."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nemo_kernel.domain.sla import MAX_MEASURED_SECONDS, SlaSpec
from nemo_kernel.metrics.model import MAX_WINDOW_SECONDS

SLA: dict[str, Any] = {
    "name": "gold",
    "workload": "shop",
    "slos": [{"name": "up", "kind": "availability", "target": 1.5}, {"name": "p99", "kind": "latency", "threshold": 1}],
    "penalties": [{"slo": "up", "below": 0.99, "credit_percent": 10}],
    "policies": [{"action": "scale_out", "slos": ["p99"]}],
}


def test_one_bad_slo_is_the_only_error() -> None:
    with pytest.raises(ValidationError) as caught:
        SlaSpec.model_validate(SLA)
    assert [tuple(e["loc"]) for e in caught.value.errors()] == [("slos", 0, "target")]


def test_a_penalty_naming_no_slo_is_still_refused() -> None:
    good = {**SLA, "slos": [{**SLA["slos"][0], "target": 0.99}, SLA["slos"][1]]}
    SlaSpec.model_validate(good)
    with pytest.raises(ValidationError) as caught:
        SlaSpec.model_validate({**good, "penalties": [{"slo": "ghost", "below": 0.9, "credit_percent": 5}]})
    assert [e["loc"][0] for e in caught.value.errors()] == ["penalties"]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"period": "90d"}, ("period",)),
        ({"period": "5w"}, ("period",)),
        ({"slos": [{"name": "errs", "kind": "error_rate", "target": 0.99, "window": "60d"}]}, ("slos", 0, "window")),
    ],
)
def test_a_window_or_period_nemo_cannot_measure_is_refused(change: dict[str, Any], where: tuple[Any, ...]) -> None:
    # Accepted, it would go Active and stay "not measured" for ever: the analytics engine answers 31 days at most.
    doc = {"name": "long", "workload": "shop", "slos": [{"name": "errs", "kind": "error_rate", "target": 0.99}]}
    with pytest.raises(ValidationError) as caught:
        SlaSpec.model_validate({**doc, **change})
    assert [tuple(e["loc"]) for e in caught.value.errors()] == [where]
    SlaSpec.model_validate({**doc, "period": "31d"})  # the longest that is measured


def test_the_longest_measured_window_is_the_analytics_engines() -> None:
    assert MAX_MEASURED_SECONDS == MAX_WINDOW_SECONDS
