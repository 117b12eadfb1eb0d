"""NEMO's built-in OpenID Connect issuer (Keycloak's URL layout), its storage protocols and identity admin."""

from nemo_kernel.access.issuer.admin import (
    IdentityAdmin,
    IdentityConflict,
    IdentityNotFound,
    InvalidIdentity,
    IssuedClient,
)
from nemo_kernel.access.issuer.hashing import SecretHasher
from nemo_kernel.access.issuer.identities import (
    Client,
    ClientRepository,
    InMemoryClientRepository,
    InMemoryRevocationList,
    InMemoryUserRepository,
    RevocationList,
    User,
    UserRepository,
)
from nemo_kernel.access.issuer.keys import InMemoryKeyRepository, KeyRepository, KeyRing, SigningKey
from nemo_kernel.access.issuer.realm import OAuthError, Realm
from nemo_kernel.access.issuer.router import issuer_router
from nemo_kernel.access.issuer.sql import sql_realm

__all__ = [
    "Client",
    "ClientRepository",
    "IdentityAdmin",
    "IdentityConflict",
    "IdentityNotFound",
    "InMemoryClientRepository",
    "InMemoryKeyRepository",
    "InMemoryRevocationList",
    "InMemoryUserRepository",
    "InvalidIdentity",
    "IssuedClient",
    "KeyRepository",
    "KeyRing",
    "OAuthError",
    "Realm",
    "RevocationList",
    "SecretHasher",
    "SigningKey",
    "User",
    "UserRepository",
    "in_memory_realm",
    "issuer_router",
    "sql_realm",
]


def in_memory_realm(name: str = "nemo", *, issuer_url: str | None = None, audience: str = "nemo-api") -> Realm:
    """A realm on in-memory repositories (tests); ``nemo up`` uses :func:`sql_realm`."""
    return Realm(
        name,
        users=InMemoryUserRepository(),
        clients=InMemoryClientRepository(),
        keys=KeyRing(InMemoryKeyRepository()),
        revocations=InMemoryRevocationList(),
        issuer_url=issuer_url,
        audience=audience,
    )
