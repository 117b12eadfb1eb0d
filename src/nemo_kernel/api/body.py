"""Request bodies in JSON or YAML, chosen by Content-Type, parsed and checked whole (see
:mod:`nemo_kernel.domain.documents`): 400 when a body does not parse, 422 naming the field a rule refuses."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from nemo_kernel.api.errors import ApiError
from nemo_kernel.domain import DocumentError, load_document
from nemo_kernel.domain.documents import load_yaml_stream

_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


async def read_document(request: Request, *, stream: bool = False) -> Any:
    """The body as a JSON/YAML document (its size is bounded before, by api.limits); 400 when it does not parse,
    422 for a bad value. With ``stream``, a YAML body may hold several documents (``---`` between them, as OpenSLO
    files do): one is returned as itself, several as their list."""
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "empty_body", "the request body is empty")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if stream and content_type in _YAML_TYPES:
            documents = load_yaml_stream(raw)
            if not documents:
                raise ApiError(400, "empty_body", "the request body holds no YAML document")
            return documents[0] if len(documents) == 1 else documents
        return load_document(raw, yaml_syntax=content_type in _YAML_TYPES)
    except DocumentError as exc:
        if exc.field is None:
            raise ApiError(400, "malformed", f"body is {exc}") from exc
        raise ApiError(422, "invalid", str(exc), [{"field": exc.field, "message": exc.problem}]) from exc


def require_mapping(document: Any, what: str) -> dict[str, Any]:
    """A document that must be an object; 422 otherwise."""
    if not isinstance(document, dict):
        raise ApiError(422, "invalid", f"{what} must be an object", [{"field": "(body)", "message": "not an object"}])
    return document
