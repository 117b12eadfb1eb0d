"""What the OpenAPI document says about bodies and errors, made true to what the API does.

The API reads request bodies itself (JSON or YAML, see :mod:`nemo_kernel.api.body`), so FastAPI cannot see them:
each write operation declares its body with :func:`request_body`, and :func:`install_openapi` puts the schema of
the declared type in the document for both media types. Every error is the JSON :class:`ErrorBody`; FastAPI's own
422 schema (``{"detail": ...}``), which the API never answers with, is replaced by it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field, TypeAdapter

__all__ = ["ERRORS", "ErrorBody", "install_openapi", "request_body"]

MEDIA_TYPES = ("application/json", "application/yaml")
_REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    """What went wrong: a stable ``code``, a ``message`` for people, and the fields or object at fault."""

    code: str = Field(examples=["invalid"])
    message: str
    details: Any = Field(default=None, description="the fields at fault (a list) or the object at fault")


class ErrorBody(BaseModel):
    """The body of every API error."""

    error: ErrorDetail


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description, **extra}


_CHALLENGE = {"WWW-Authenticate": {"description": "RFC 6750 bearer challenge", "schema": {"type": "string"}}}

#: The errors any ``/api/v1`` operation may answer with.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Malformed request: the body is empty or not valid JSON/YAML"),
    401: _error("No bearer token, or an invalid, expired or revoked one", headers=_CHALLENGE),
    403: _error("The token lacks the role this operation needs", headers=_CHALLENGE),
    404: _error("No such resource"),
    409: _error("Conflict with the stored state (a name taken, a reference in use, the last admin)"),
    413: _error("The request body is larger than NEMO_MAX_BODY_BYTES"),
    422: _error("Invalid input; details name each field at fault"),
    500: _error("Unexpected server error (details are in the server log)"),
    503: _error("A backend (the store, the external issuer) does not answer"),
}

#: The request bodies the routers declared, by schema name: their type and the properties a body may leave out
#: although the type requires them (routers are declared once, at import).
_BODY_TYPES: dict[str, tuple[Any, frozenset[str]]] = {}


def request_body(
    body_type: Any, *, name: str | None = None, required: bool = True, optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``openapi_extra`` declaring an operation's body: ``body_type`` (a model, or a union given a ``name``) in JSON
    or YAML, whose ``optional`` properties the operation fills in itself (from its URL) when they are left out.
    :func:`install_openapi` adds its schema to the document's components."""
    name = name or body_type.__name__
    declared = (body_type, frozenset(optional))
    if _BODY_TYPES.setdefault(name, declared) != declared:
        raise ValueError(f"two request body types named {name}")
    schema = {"$ref": _REF.format(model=name)}
    return {"requestBody": {"required": required, "content": {media: {"schema": schema} for media in MEDIA_TYPES}}}


def _body_schemas(document: dict[str, Any]) -> None:
    inputs = [(name, "validation", TypeAdapter(tp)) for name, (tp, _) in _BODY_TYPES.items()]
    schemas, definitions = TypeAdapter.json_schemas(inputs, ref_template=_REF)  # type: ignore[arg-type]
    defs: dict[str, Any] = definitions.get("$defs", {})
    named: dict[str, Any] = {}
    for name, (_, optional) in _BODY_TYPES.items():
        schema = schemas[(name, "validation")]
        if optional:
            referenced = schema.get("$ref", "").rpartition("/")[2]
            schema = dict(defs.get(referenced, schema))
            if "required" in schema:
                schema["required"] = [p for p in schema["required"] if p not in optional]
        if schema != {"$ref": _REF.format(model=name)}:  # a model's own schema is among the definitions
            named[name] = schema
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in {**defs, **named}.items():
        if _canonical(components.setdefault(name, schema)) != _canonical(schema):
            # Input and output schemas of one model differ (defaults, serializers): the document would lie.
            raise AssertionError(f"two different schemas named {name} in the OpenAPI document")


def _canonical(schema: Any) -> Any:
    # FastAPI's rendering of a schema drops null defaults and writes bounds as floats; neither changes its meaning.
    if isinstance(schema, dict):
        return {k: _canonical(v) for k, v in schema.items() if not (k == "default" and v is None)}
    if isinstance(schema, list):
        return [_canonical(v) for v in schema]
    return float(schema) if isinstance(schema, int) and not isinstance(schema, bool) else schema


def _error_schema_for_422(document: dict[str, Any]) -> None:
    # FastAPI documents a 422 {"detail": [...]} for every operation with parameters; the API answers ErrorBody.
    error = {"$ref": _REF.format(model="ErrorBody")}
    for operations in document["paths"].values():
        for operation in operations.values():
            invalid = operation.get("responses", {}).get("422")
            if invalid is not None:
                invalid["content"] = {"application/json": {"schema": error}}
    schemas = document.get("components", {}).get("schemas", {})
    for fastapi_default in ("HTTPValidationError", "ValidationError"):
        schemas.pop(fastapi_default, None)


def install_openapi(app: FastAPI) -> None:
    """Serve an OpenAPI document that declares every request body and the API's own error shape."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
                separate_input_output_schemas=app.separate_input_output_schemas,
            )
            _body_schemas(document)
            _error_schema_for_422(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
