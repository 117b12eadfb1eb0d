"""Access errors: one exception type per RFC 6750 outcome, and the project's JSON error body.

Every refusal in the access layer (API dependency, gateway plugin) is an :class:`AccessDenied`, so the HTTP
mapping (status, ``WWW-Authenticate``, body) is decided here once and not in each caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nemo_kernel.domain.errors import error_body as domain_error_body


class AccessDenied(Exception):
    """A request refused by the access layer; ``status`` and ``code`` say how it maps to HTTP."""

    status: int = 403
    code: str = "access_denied"

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def body(self) -> dict[str, Any]:
        """The JSON body every NEMO error has: ``{"error": {"code", "message", "details"}}``."""
        return error_body(self.code, self.message, self.details)

    def headers(self) -> dict[str, str]:
        """Response headers that belong to this refusal (none by default)."""
        return {}


class InvalidToken(AccessDenied):
    """No token, or a token that is malformed, badly signed, expired, revoked or for someone else (401)."""

    status = 401
    code = "invalid_token"

    def headers(self) -> dict[str, str]:
        """RFC 6750 section 3: the challenge names the error so clients know to fetch a new token."""
        return {"WWW-Authenticate": bearer_challenge(self.code, self.message)}


class InsufficientScope(AccessDenied):
    """A valid token whose principal lacks the role the request needs (403)."""

    status = 403
    code = "insufficient_scope"

    def headers(self) -> dict[str, str]:
        """RFC 6750 section 3.1: a 403 for missing privileges carries ``insufficient_scope``."""
        return {"WWW-Authenticate": bearer_challenge(self.code, self.message)}


class InvalidRequest(AccessDenied):
    """A malformed ``Authorization`` header (RFC 6750 ``invalid_request``, 400)."""

    status = 400
    code = "invalid_request"

    def headers(self) -> dict[str, str]:
        """RFC 6750 challenge with ``invalid_request``."""
        return {"WWW-Authenticate": bearer_challenge(self.code, self.message)}


class IdentityProviderUnavailable(AccessDenied):
    """The issuer's keys or introspection endpoint cannot be reached: refuse, never guess (503)."""

    status = 503
    code = "identity_provider_unavailable"


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build the project's error body ``{"error": {"code": ..., "message": ..., "details": ...}}``."""
    return domain_error_body(code, message, dict(details or {}))


def bearer_challenge(error: str, description: str, realm: str = "nemo") -> str:
    """An RFC 6750 ``WWW-Authenticate: Bearer`` challenge; quotes and backslashes are dropped from the text."""
    safe = "".join(ch for ch in description if ch not in '"\\' and 0x20 <= ord(ch) < 0x7F)
    return f'Bearer realm="{realm}", error="{error}", error_description="{safe}"'
