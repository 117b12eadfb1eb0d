"""Request bodies in JSON or YAML, chosen by Content-Type."""

from __future__ import annotations

import json
from typing import Any

import yaml
from fastapi import Request

from nemo_kernel.api.errors import ApiError

_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


async def read_document(request: Request) -> Any:
    """The body as a JSON/YAML document (its size is bounded before, by api.limits); 400 when it does not parse."""
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "empty_body", "the request body is empty")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type in _YAML_TYPES:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "YAML" if content_type in _YAML_TYPES else "JSON"
        raise ApiError(400, "malformed", f"body is not valid {kind}: {exc}") from exc


def require_mapping(document: Any, what: str) -> dict[str, Any]:
    """A document that must be an object; 422 otherwise."""
    if not isinstance(document, dict):
        raise ApiError(422, "invalid", f"{what} must be an object", [{"field": "(body)", "message": "not an object"}])
    return document
