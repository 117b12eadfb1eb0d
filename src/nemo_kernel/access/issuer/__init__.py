"""NEMO's built-in OpenID Connect issuer (Keycloak's URL layout), its storage protocols and identity admin."""

from nemo_kernel.access.issuer.admin import MIN_PASSWORD_LENGTH, IdentityAdmin, InvalidIdentity, IssuedClient
from nemo_kernel.access.issuer.hashing import SecretHasher
from nemo_kernel.access.issuer.identities import (
    Client,
    ClientRepository,
    IdentityConflict,
    IdentityNotFound,
    InMemoryClientRepository,
    InMemoryDirectory,
    InMemoryRevocationList,
    InMemoryUserRepository,
    LastAdmin,
    RevocationList,
    User,
    UserRepository,
)
from nemo_kernel.access.issuer.keys import InMemoryKeyRepository, KeyRepository, KeyRing, SigningKey
from nemo_kernel.access.issuer.realm import OAuthError, Realm
from nemo_kernel.access.issuer.router import issuer_router
from nemo_kernel.access.issuer.sql import sql_realm

__all__ = [
    "MIN_PASSWORD_LENGTH",
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
    "LastAdmin",
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
    directory = InMemoryDirectory()  # users and clients together, as the last-admin check needs
    return Realm(
        name,
        users=InMemoryUserRepository(directory),
        clients=InMemoryClientRepository(directory),
        keys=KeyRing(InMemoryKeyRepository()),
        revocations=InMemoryRevocationList(),
        issuer_url=issuer_url,
        audience=audience,
    )
