"""Request bodies in JSON or YAML, chosen by Content-Type.

A body is refused whole before anything reads it as a model: duplicate keys (which would silently keep the last
value), nesting beyond :data:`~nemo_kernel.domain.MAX_DEPTH`, lone surrogates, non-finite numbers and YAML values
that have no JSON form (``!!binary``, dates, sets) are a 422 naming the field; what does not parse is a 400.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from fastapi import Request

from nemo_kernel.api.errors import ApiError
from nemo_kernel.domain import document_problem

MAX_BODY_BYTES = 1 << 20
_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


class DuplicateKey(ValueError):
    """A mapping of the body names the same key twice."""

    def __init__(self, key: object) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise DuplicateKey(key)
        document[key] = value
    return document


class _StrictYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that names a key twice (it would keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges on purpose; its keys may be overridden
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable: the base constructor refuses it
            if duplicate:
                raise DuplicateKey(key)
        return super().construct_mapping(node, deep=deep)


def parse_document(raw: bytes, yaml_syntax: bool) -> Any:
    """``raw`` parsed as YAML or JSON and checked against the rules every input obeys.

    Raises :class:`ApiError`: 400 when it does not parse, 422 naming the field for a duplicate key or a value
    :func:`~nemo_kernel.domain.document_problem` refuses.
    """
    kind = "YAML" if yaml_syntax else "JSON"
    try:
        if yaml_syntax:
            document = yaml.load(raw, Loader=_StrictYamlLoader)  # noqa: S506 - a SafeLoader subclass
        else:
            document = json.loads(raw, object_pairs_hook=_unique_pairs)
    except DuplicateKey as exc:
        message = f"duplicate key {exc.key!r}: each key may appear once in a mapping"
        raise ApiError(422, "invalid", message, [{"field": str(exc.key), "message": message}]) from exc
    except RecursionError as exc:
        # The parsers recurse per level; a body nested deeper than they can follow is refused like any deep body.
        raise ApiError(400, "malformed", f"body is not valid {kind}: nested too deeply") from exc
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiError(400, "malformed", f"body is not valid {kind}: {exc}") from exc
    problem = document_problem(document)
    if problem is not None:
        field, message = problem
        raise ApiError(422, "invalid", f"{field}: {message}", [{"field": field, "message": message}])
    return document


async def read_document(request: Request) -> Any:
    """The body as a JSON/YAML document; 413 when too large, 400 when it does not parse, 422 for a bad value."""
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "too_large", f"body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}")
    if not raw.strip():
        raise ApiError(400, "empty_body", "the request body is empty")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return parse_document(raw, content_type in _YAML_TYPES)


def require_mapping(document: Any, what: str) -> dict[str, Any]:
    """A document that must be an object; 422 otherwise."""
    if not isinstance(document, dict):
        raise ApiError(422, "invalid", f"{what} must be an object", [{"field": "(body)", "message": "not an object"}])
    return document
