"""An SLA document as a user sends it: NEMO's own format, or OpenSLO v1 (detected by ``apiVersion: openslo/v1``)."""

from __future__ import annotations

from typing import Any

from nemo_kernel.domain.errors import ApiError
from nemo_kernel.domain.sla import SlaSpec
from nemo_kernel.ppef import openslo


def parse_sla(document: Any) -> SlaSpec:
    """The SLA ``document`` describes; a ValidationError (NEMO format) or a 422 ApiError (OpenSLO) names the field
    at fault."""
    if openslo.is_openslo(document):
        return openslo.to_sla(document)
    if not isinstance(document, dict):
        message = "an SLA is an object, or OpenSLO v1 objects (apiVersion: openslo/v1)"
        raise ApiError(422, "invalid", message, [{"field": "(body)", "message": message}])
    return SlaSpec.model_validate(document)
