"""NEMO's built-in OpenID Connect issuer (Keycloak's URL layout), its storage protocols and identity admin."""

from nemo_kernel.access.issuer.admin import MIN_PASSWORD_LENGTH, IdentityAdmin, InvalidIdentity, IssuedClient
from nemo_kernel.access.issuer.hashing import SecretHasher
from nemo_kernel.access.issuer.identities import (
    Client,
    ClientRepository,
    IdentityConflict,
    IdentityNotFound,
    LastAdmin,
    RevocationList,
    User,
    UserRepository,
)
from nemo_kernel.access.issuer.keys import KeyRepository, KeyRing, SigningKey
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
    "issuer_router",
    "sql_realm",
]
