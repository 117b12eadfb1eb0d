"""The one JSON error shape of every NEMO HTTP service (API, cluster agents, gateway).

``{"error": {"code": ..., "message": ..., "details": ...}}``: ``code`` is stable and machine-readable,
``message`` is for people, ``details`` names the field or object at fault when there is one.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from nemo_kernel.domain.common import field_path


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The error body every NEMO service answers with."""
    return {"error": {"code": code, "message": message, "details": details}}


class ApiError(Exception):
    """An error a request handler raises to be answered as is, with ``status`` and :func:`error_body`."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        """This error's JSON body."""
        return error_body(self.code, self.message, self.details)


def refusal(exc: Exception) -> str:
    """Why an input was refused, for an event or a log line: a validation error as ``field: message`` pairs, without
    the input's values or pydantic's links (an event log is read by viewers); anything else as its message."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        parts.append(f"{field_path(list(err['loc'])) or '(body)'}: {err['msg'].removeprefix('Value error, ')}")
    more = f" (and {len(parts) - 5} more)" if len(parts) > 5 else ""
    return "; ".join(parts[:5]) + more
