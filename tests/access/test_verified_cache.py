"""The verifier's cache of verified JWTs: it saves the signature check, never a refusal. A cached token is still
refused once it expires, and once revoked when introspection is on."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from nemo_kernel.access.errors import InvalidToken
from nemo_kernel.access.issuer import IdentityAdmin
from nemo_kernel.access.verifier import ClientCredentials, TokenVerifier

from .conftest import IssuerServer


async def _refused(verifier: TokenVerifier, token: str, timeout: float) -> InvalidToken:
    # Polls (the verifier has no event to wait on): a token's expiry is a moment on the wall clock.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await verifier.verify(token)
        except InvalidToken as refused:
            return refused
        await asyncio.sleep(0.1)
    raise AssertionError(f"token still accepted after {timeout}s")


async def test_cached_token_is_refused_once_expired(issuer: IssuerServer) -> None:
    admin = IdentityAdmin(issuer.realm.users, issuer.realm.clients, issuer.realm.hasher)
    client = await admin.add_client("svc", roles=["nemo-viewer"])
    issuer.realm.access_token_ttl = 2
    token = await issuer.client_token("svc", client.secret)
    verifier = TokenVerifier.from_issuer(issuer.issuer, leeway=0)
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first  # the second came from the cache
    refused = await _refused(verifier, token, 10)
    assert refused.message == "token expired"


@pytest.mark.parametrize("cache_ttl", [0.0, 1.0])
async def test_cached_token_is_refused_once_revoked(issuer: IssuerServer, cache_ttl: float) -> None:
    admin = IdentityAdmin(issuer.realm.users, issuer.realm.clients, issuer.realm.hasher)
    gateway = await admin.add_client("gateway")
    client = await admin.add_client("svc", roles=["nemo-viewer"])
    token = await issuer.client_token("svc", client.secret)
    verifier = TokenVerifier.from_issuer(
        issuer.issuer,
        introspection_client=ClientCredentials("gateway", gateway.secret),
        introspect_jwts=True,
        introspection_cache_ttl=cache_ttl,
    )
    await verifier.verify(token)
    await verifier.verify(token)
    async with httpx.AsyncClient() as http:
        revoke = f"{issuer.issuer}/protocol/openid-connect/revoke"
        (await http.post(revoke, data={"token": token}, auth=("svc", client.secret))).raise_for_status()
    if cache_ttl == 0:
        with pytest.raises(InvalidToken):
            await verifier.verify(token)
    else:  # refused within the introspection cache's TTL
        await _refused(verifier, token, cache_ttl + 5)
