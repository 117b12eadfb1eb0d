"""NEMO Access Control: bearer token verification, API roles, the built-in OIDC issuer and the gateway.

The gateway lives in :mod:`nemo_kernel.access.gateway` (aiohttp) and the FastAPI glue in
:mod:`nemo_kernel.access.fastapi`; neither is imported here so that using one does not load the other.
"""

from nemo_kernel.access.errors import (
    AccessDenied,
    IdentityProviderUnavailable,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    error_body,
)
from nemo_kernel.access.policy import ADMIN, OPERATOR, VIEWER, authorize, effective_roles, required_role
from nemo_kernel.access.tokens import Principal, principal_from_claims
from nemo_kernel.access.verifier import (
    ClientCredentials,
    Introspector,
    KeySource,
    RemoteIntrospector,
    RemoteJwks,
    TokenVerifier,
)

__all__ = [
    "ADMIN",
    "OPERATOR",
    "VIEWER",
    "AccessDenied",
    "ClientCredentials",
    "IdentityProviderUnavailable",
    "InsufficientScope",
    "Introspector",
    "InvalidRequest",
    "InvalidToken",
    "KeySource",
    "Principal",
    "RemoteIntrospector",
    "RemoteJwks",
    "TokenVerifier",
    "authorize",
    "effective_roles",
    "error_body",
    "principal_from_claims",
    "required_role",
]
