"""A workload's own weights of the placement criteria (``deployment.placement.weights``): strict like every field
users write, named in full when refused, stored as written."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nemo_kernel.domain import WorkloadDescriptor


def descriptor(weights: Any) -> dict[str, Any]:
    return {"name": "web", "deployment": {"command": ["app"], "placement": {"weights": weights}}}


def test_weights_are_kept_as_written() -> None:
    workload = WorkloadDescriptor.model_validate(descriptor({"carbon": 10, "cost": 0}))
    assert workload.deployment is not None
    assert workload.deployment.placement.weights == {"carbon": 10.0, "cost": 0.0}
    assert workload.model_dump(mode="json")["deployment"]["placement"]["weights"] == {"carbon": 10.0, "cost": 0.0}
    assert (
        WorkloadDescriptor.model_validate({"name": "web", "deployment": {"command": ["a"]}}).model_dump(mode="json")[
            "deployment"
        ]["placement"]["weights"]
        == {}
    )


@pytest.mark.parametrize(
    ("weights", "field", "kind"),
    [
        ({"speed": 1}, "speed", "extra_forbidden"),  # not a criterion of the decision engine
        ({"cost": True}, "cost", "float_type"),
        ({"cost": "3"}, "cost", "float_type"),
        ({"cost": 1001}, "cost", "less_than_equal"),
        ({"cost": -0.5}, "cost", "greater_than_equal"),
        ({"cost": float("nan")}, "cost", "finite_number"),
    ],
)
def test_bad_weights_are_refused_at_their_name(weights: dict[str, Any], field: str, kind: str) -> None:
    with pytest.raises(ValidationError) as caught:
        WorkloadDescriptor.model_validate(descriptor(weights))
    (error,) = caught.value.errors()
    assert error["loc"] == ("deployment", "placement", "weights", field)
    assert error["type"] == kind
