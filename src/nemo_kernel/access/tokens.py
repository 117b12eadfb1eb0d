"""Who a verified token speaks for (:class:`Principal`, built from claims the way Keycloak lays them out) and where a
request carries its token (:func:`bearer_token`). Framework-free: the FastAPI glue and the gateway both use it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from nemo_kernel.access.errors import InvalidRequest, InvalidToken

#: Asymmetric JWS algorithms accepted for access tokens. ``none`` and the HMAC family are absent on purpose:
#: a verifier holding only public keys must never accept a MAC keyed with one of them (algorithm confusion).
ASYMMETRIC_ALGORITHMS: frozenset[str] = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

#: Which JWK key type each algorithm family must use; a key of another type is refused before verification.
KEY_TYPE_FOR_ALGORITHM: Mapping[str, str] = MappingProxyType(
    {
        **{a: "RSA" for a in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
        **{a: "EC" for a in ("ES256", "ES384", "ES512")},
        "EdDSA": "OKP",
    }
)


@dataclass(frozen=True, slots=True)
class Principal:
    """The subject a request acts for, after its token was verified.

    ``realm_roles`` come from ``realm_access.roles`` and ``client_roles`` from ``resource_access.<client>.roles``,
    the claims Keycloak (and NEMO's built-in issuer) put in access tokens.
    """

    subject: str
    client_id: str | None
    realm_roles: frozenset[str] = frozenset()
    client_roles: Mapping[str, frozenset[str]] = field(default_factory=dict)
    claims: Mapping[str, Any] = field(default_factory=dict)

    @property
    def username(self) -> str | None:
        """``preferred_username`` when the token carries one (users do, service accounts may not)."""
        value = self.claims.get("preferred_username")
        return value if isinstance(value, str) else None

    def roles(self, client: str | None = None) -> frozenset[str]:
        """Realm roles, plus the client roles for ``client`` when given."""
        if client is None:
            return self.realm_roles
        return self.realm_roles | self.client_roles.get(client, frozenset())


def _string_set(value: Any) -> frozenset[str]:
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """Build a :class:`Principal` from verified claims (JWT payload or an active introspection response).

    Malformed role claims are ignored rather than rejected: a token without usable roles simply has none, and the
    role policy refuses it with 403, which is the honest answer.
    """
    realm_access = claims.get("realm_access")
    realm_roles = _string_set(realm_access.get("roles")) if isinstance(realm_access, Mapping) else frozenset()
    client_roles: dict[str, frozenset[str]] = {}
    resource_access = claims.get("resource_access")
    if isinstance(resource_access, Mapping):
        for client, entry in resource_access.items():
            if isinstance(client, str) and isinstance(entry, Mapping):
                client_roles[client] = _string_set(entry.get("roles"))
    client_id = claims.get("azp") or claims.get("client_id")
    subject = claims.get("sub") or client_id or ""
    return Principal(
        subject=str(subject),
        client_id=str(client_id) if client_id else None,
        realm_roles=realm_roles,
        client_roles=MappingProxyType(client_roles),
        claims=MappingProxyType(dict(claims)),
    )


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; :class:`InvalidToken` if absent."""
    if not authorization:
        raise InvalidToken("missing bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise InvalidToken("authorization scheme must be Bearer")
    token = token.strip()
    if not token or " " in token:
        raise InvalidRequest("malformed bearer token")
    return token
