"""Which role each ``/api/v1`` call needs, and the check itself (framework-independent).

Three roles, each implying the ones below it: ``nemo-admin`` > ``nemo-operator`` > ``nemo-viewer``.
The table is per resource (first path segment under ``/api/v1``) with one role for reads and one for writes,
so adding a resource is one line and an unknown resource falls back to the strictest sensible default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from nemo_kernel.access.errors import InsufficientScope
from nemo_kernel.access.tokens import Principal

__all__ = [
    "ADMIN",
    "API_PREFIX",
    "OPERATOR",
    "VIEWER",
    "ResourceRule",
    "authorize",
    "effective_roles",
    "required_role",
]

VIEWER = "nemo-viewer"
OPERATOR = "nemo-operator"
ADMIN = "nemo-admin"
API_PREFIX = "/api/v1"

#: Each role and the roles it implies.
_IMPLIES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        ADMIN: frozenset({ADMIN, OPERATOR, VIEWER}),
        OPERATOR: frozenset({OPERATOR, VIEWER}),
        VIEWER: frozenset({VIEWER}),
    }
)

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class ResourceRule:
    """Roles needed to read (GET/HEAD/OPTIONS) and to change (POST/PUT/PATCH/DELETE) one resource."""

    read: str
    write: str


#: Per resource: what reading and what changing it takes. Users, clients and the gateway configuration are
#: admin-only even to read, because they reveal who may do what; everything else is readable by viewers.
RULES: Mapping[str, ResourceRule] = MappingProxyType(
    {
        "users": ResourceRule(read=ADMIN, write=ADMIN),
        "clients": ResourceRule(read=ADMIN, write=ADMIN),
        "gateway": ResourceRule(read=ADMIN, write=ADMIN),
        "modules": ResourceRule(read=VIEWER, write=ADMIN),
        "clusters": ResourceRule(read=VIEWER, write=ADMIN),
        "security": ResourceRule(read=VIEWER, write=ADMIN),
        "workloads": ResourceRule(read=VIEWER, write=OPERATOR),
        "migrations": ResourceRule(read=VIEWER, write=OPERATOR),
        "rebalance": ResourceRule(read=VIEWER, write=OPERATOR),
        "petitions": ResourceRule(read=VIEWER, write=OPERATOR),
        "slas": ResourceRule(read=VIEWER, write=OPERATOR),
        "violations": ResourceRule(read=VIEWER, write=OPERATOR),
        # /api/v1/metrics (queries, top) and, outside /api/v1, the series NEMO collects for Prometheus
        # (/metrics with a token, /federate): viewers read them.
        "metrics": ResourceRule(read=VIEWER, write=ADMIN),
        "federate": ResourceRule(read=VIEWER, write=ADMIN),
    }
)

#: Parts of a resource (``/<resource>/<name>/<part>``) that need other roles than the resource itself: operators
#: inject faults into clusters (a test of resilience, like a drain) although only admins register clusters.
SUBRESOURCE_RULES: Mapping[tuple[str, str], ResourceRule] = MappingProxyType(
    {
        ("clusters", "faults"): ResourceRule(read=VIEWER, write=OPERATOR),
    }
)

#: A resource missing from the table (or a path outside ``/api/v1``): admins only, so a forgotten line fails closed.
DEFAULT_RULE = ResourceRule(read=ADMIN, write=ADMIN)


def required_role(method: str, path: str) -> str:
    """The role a request needs, e.g. ``required_role("POST", "/api/v1/workloads")`` is ``"nemo-operator"``.

    ``path`` may include the ``/api/v1`` prefix or not; the query string is ignored.
    """
    path = path.split("?", 1)[0]
    if path.startswith(API_PREFIX):
        path = path[len(API_PREFIX) :]
    segments = [segment for segment in path.split("/") if segment]
    resource = segments[0] if segments else ""
    rule = RULES.get(resource, DEFAULT_RULE)
    if len(segments) == 3:  # /<resource>/<name>/<part>
        rule = SUBRESOURCE_RULES.get((resource, segments[2]), rule)
    return rule.read if method.upper() in _READ_METHODS else rule.write


def effective_roles(roles: Iterable[str]) -> frozenset[str]:
    """The roles held once implications are applied (an admin is also an operator and a viewer)."""
    held: set[str] = set()
    for role in roles:
        held |= _IMPLIES.get(role, frozenset({role}))
    return frozenset(held)


def authorize(principal: Principal, method: str, path: str, *, client: str | None = None) -> None:
    """Raise :class:`InsufficientScope` (403) unless ``principal`` holds the role ``method path`` needs.

    Roles are the principal's realm roles, plus its roles for ``client`` (``resource_access.<client>.roles``)
    when the API is registered as a client of its own.
    """
    needed = required_role(method, path)
    if needed not in effective_roles(principal.roles(client)):
        raise InsufficientScope(f"requires role {needed}", details={"required_role": needed})
