"""The built-in issuer over real HTTP: discovery, grants, JWKS verification, introspection, revocation, rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI

from nemo_kernel.access import ClientCredentials, InvalidToken, TokenVerifier
from nemo_kernel.access.issuer import IdentityAdmin, IdentityConflict, InvalidIdentity, issuer_router
from nemo_kernel.api.security import ApiAccess
from nemo_kernel.config import Settings
from tests.conftest import migrated_database

from .conftest import IssuerServer, listening_socket, running_issuer, serve_asgi

PROTOCOL = "/protocol/openid-connect"


async def _admin(server: IssuerServer) -> IdentityAdmin:
    return IdentityAdmin(server.realm.users, server.realm.clients, server.realm.hasher)


async def test_discovery_document_has_keycloak_layout(issuer: IssuerServer) -> None:
    async with httpx.AsyncClient() as http:
        doc = (await http.get(f"{issuer.issuer}/.well-known/openid-configuration")).json()
    assert doc["issuer"] == issuer.issuer
    assert doc["token_endpoint"] == f"{issuer.issuer}{PROTOCOL}/token"
    assert doc["jwks_uri"] == f"{issuer.issuer}{PROTOCOL}/certs"
    assert doc["introspection_endpoint"] == f"{issuer.issuer}{PROTOCOL}/token/introspect"
    assert doc["revocation_endpoint"] == f"{issuer.issuer}{PROTOCOL}/revoke"


async def test_client_credentials_token_verifies_against_jwks(issuer: IssuerServer) -> None:
    issued = await (await _admin(issuer)).add_client("svc", roles=["nemo-operator"], client_roles={"nemo-api": ["x"]})
    async with httpx.AsyncClient() as http:
        # client_secret_post as well as client_secret_basic
        response = await http.post(
            f"{issuer.issuer}{PROTOCOL}/token",
            data={"grant_type": "client_credentials", "client_id": "svc", "client_secret": issued.secret},
        )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    token = response.json()["access_token"]
    assert "refresh_token" not in response.json()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["kid"]
    verifier = TokenVerifier.from_issuer(issuer.issuer, audience="nemo-api")
    principal = await verifier.verify(token)
    assert principal.client_id == "svc"
    assert principal.realm_roles == {"nemo-operator"}
    assert principal.roles("nemo-api") == {"nemo-operator", "x"}
    assert principal.claims["jti"] and principal.claims["azp"] == "svc"


async def test_wrong_secret_is_invalid_client(issuer: IssuerServer) -> None:
    await (await _admin(issuer)).add_client("svc")
    async with httpx.AsyncClient() as http:
        response = await http.post(issuer.token_url, data={"grant_type": "client_credentials"}, auth=("svc", "nope"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_introspection_active_revoked_unknown_and_caller_auth(issuer: IssuerServer) -> None:
    admin = await _admin(issuer)
    svc = await admin.add_client("svc", roles=["nemo-viewer"])
    gw = await admin.add_client("gateway")
    token = await issuer.client_token("svc", svc.secret)
    url = f"{issuer.issuer}{PROTOCOL}/token/introspect"
    async with httpx.AsyncClient() as http:
        unauthenticated = await http.post(url, data={"token": token})
        assert unauthenticated.status_code == 401
        active = (await http.post(url, data={"token": token}, auth=("gateway", gw.secret))).json()
        assert active["active"] is True and active["client_id"] == "svc"
        assert active["realm_access"] == {"roles": ["nemo-viewer"]}
        unknown = await http.post(url, data={"token": "not-a-token"}, auth=("gateway", gw.secret))
        assert unknown.status_code == 200 and unknown.json() == {"active": False}
        revoke = await http.post(f"{issuer.issuer}{PROTOCOL}/revoke", data={"token": token}, auth=("svc", svc.secret))
        assert revoke.status_code == 200
        revoked = await http.post(url, data={"token": token}, auth=("gateway", gw.secret))
        assert revoked.status_code == 200 and revoked.json() == {"active": False}


async def test_token_lifetime_follows_nemo_token_ttl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEMO_TOKEN_TTL", "3600")
    settings = Settings(data_dir=tmp_path)
    sock = listening_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with migrated_database(settings.resolved_database_url()) as db:
        realm = ApiAccess.from_settings(settings, db, base).realm  # as `nemo up` builds it
        assert realm is not None
        svc = await (await _admin(IssuerServer(realm, base))).add_client("svc")
        app = FastAPI()
        app.include_router(issuer_router(realm))
        async with serve_asgi(app, sock), httpx.AsyncClient() as http:
            response = await http.post(
                f"{base}/realms/nemo{PROTOCOL}/token",
                data={"grant_type": "client_credentials"},
                auth=("svc", svc.secret),
            )
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3600
    assert response.json()["expires_in"] == 3600


async def test_expired_token_is_inactive_and_refused() -> None:
    async with running_issuer(access_token_ttl=-120) as server:
        admin = await _admin(server)
        svc = await admin.add_client("svc")
        token = await server.client_token("svc", svc.secret)
        async with httpx.AsyncClient() as http:
            result = await http.post(
                f"{server.issuer}{PROTOCOL}/token/introspect", data={"token": token}, auth=("svc", svc.secret)
            )
        assert result.json() == {"active": False}
        with pytest.raises(InvalidToken, match="expired"):
            await TokenVerifier.from_issuer(server.issuer).verify(token)


async def test_disabled_client_tokens_become_inactive(issuer: IssuerServer) -> None:
    admin = await _admin(issuer)
    svc = await admin.add_client("svc")
    token = await issuer.client_token("svc", svc.secret)
    verifier = issuer.realm.local_verifier()
    assert (await verifier.verify(token)).client_id == "svc"
    await admin.set_client_enabled("svc", False)
    with pytest.raises(InvalidToken, match="not active"):
        await verifier.verify(token)


async def test_key_rotation_old_tokens_verify_until_retired(issuer: IssuerServer) -> None:
    svc = await (await _admin(issuer)).add_client("svc")
    old_token = await issuer.client_token("svc", svc.secret)
    verifier = TokenVerifier.from_issuer(issuer.issuer, jwks_min_refresh_interval=0)
    await verifier.verify(old_token)
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    new_key = await issuer.realm.keys.rotate("ES256")
    new_token = await issuer.client_token("svc", svc.secret)
    assert jwt.get_unverified_header(new_token) == {"alg": "ES256", "kid": new_key.kid, "typ": "JWT"}
    # The verifier has never seen the new kid: it re-fetches the JWKS once and accepts both tokens.
    await verifier.verify(new_token)
    await verifier.verify(old_token)
    await issuer.realm.keys.retire(old_kid)
    fresh = TokenVerifier.from_issuer(issuer.issuer)
    await fresh.verify(new_token)
    with pytest.raises(InvalidToken, match="unknown key"):
        await fresh.verify(old_token)


async def test_unknown_kid_refetch_is_rate_bounded(issuer: IssuerServer) -> None:
    svc = await (await _admin(issuer)).add_client("svc")
    token = await issuer.client_token("svc", svc.secret)
    verifier = TokenVerifier.from_issuer(issuer.issuer, jwks_min_refresh_interval=3600)
    await verifier.verify(token)
    await issuer.realm.keys.rotate()
    rotated = await issuer.client_token("svc", svc.secret)
    for _ in range(5):
        with pytest.raises(InvalidToken, match="unknown key"):
            await verifier.verify(rotated)
    assert verifier._keys.fetches == 1  # type: ignore[attr-defined]


async def test_password_and_refresh_grants_rotate_refresh_tokens(issuer: IssuerServer) -> None:
    admin = await _admin(issuer)
    cli = await admin.add_client("nemo-cli", grant_types=["password", "refresh_token"])
    await admin.add_user("alice", "correct horse", roles=["nemo-admin"])
    async with httpx.AsyncClient() as http:
        bad = await http.post(
            issuer.token_url,
            data={"grant_type": "password", "username": "alice", "password": "wrong password"},
            auth=("nemo-cli", cli.secret),
        )
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
        first = (
            await http.post(
                issuer.token_url,
                data={"grant_type": "password", "username": "alice", "password": "correct horse"},
                auth=("nemo-cli", cli.secret),
            )
        ).json()
        principal = await issuer.realm.local_verifier().verify(first["access_token"])
        assert principal.username == "alice" and principal.realm_roles == {"nemo-admin"}
        refreshed = await http.post(
            issuer.token_url,
            data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
            auth=("nemo-cli", cli.secret),
        )
        assert refreshed.status_code == 200 and refreshed.json()["refresh_token"] != first["refresh_token"]
        replay = await http.post(
            issuer.token_url,
            data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
            auth=("nemo-cli", cli.secret),
        )
        assert replay.status_code == 400
        # A client may not use a grant it was not given.
        denied = await http.post(
            issuer.token_url, data={"grant_type": "client_credentials"}, auth=("nemo-cli", cli.secret)
        )
        assert denied.json()["error"] == "unauthorized_client"


async def test_identity_admin_validates_and_hides_secrets(issuer: IssuerServer) -> None:
    admin = await _admin(issuer)
    with pytest.raises(InvalidIdentity):
        await admin.add_user("bob", "short")
    with pytest.raises(InvalidIdentity):
        await admin.add_user("bad name", "long enough")
    user = await admin.add_user("bob", "long enough")
    assert user.password_hash.startswith("$argon2id$")
    with pytest.raises(IdentityConflict):
        await admin.add_user("bob", "long enough")
    issued = await admin.ensure_admin_client()
    assert issued is not None and issued.secret not in repr(issued)
    assert await admin.ensure_admin_client() is None
    assert [c.client_id for c in await admin.list_clients()] == ["nemo-admin"]
    assert ClientCredentials("a", "s3cret").__repr__().count("s3cret") == 0


async def test_verifier_refuses_none_and_hmac_confusion(issuer: IssuerServer) -> None:
    async with httpx.AsyncClient() as http:
        jwks = (await http.get(f"{issuer.issuer}{PROTOCOL}/certs")).json()
    kid = jwks["keys"][0]["kid"]
    verifier = TokenVerifier.from_issuer(issuer.issuer)
    claims = {"iss": issuer.issuer, "exp": 2_000_000_000, "sub": "x"}
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
    with pytest.raises(InvalidToken, match="algorithm"):
        await verifier.verify(unsigned)
    public_pem = jwt.PyJWK(jwks["keys"][0]).key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    forged = _hs256(claims, public_pem, kid)
    with pytest.raises(InvalidToken, match="algorithm"):
        await verifier.verify(forged)
    with pytest.raises(ValueError):
        TokenVerifier(issuer=issuer.issuer, keys=issuer.realm.keys, algorithms=frozenset({"HS256"}))


def _hs256(claims: dict[str, object], secret: bytes, kid: str) -> str:
    """Hand-made HS256 token keyed with the public key (PyJWT itself refuses to make one)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"
