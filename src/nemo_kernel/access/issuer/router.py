"""The built-in issuer's HTTP face, in Keycloak's layout under ``/realms/{realm}``.

The OAuth endpoints answer errors in RFC 6749's shape (``{"error": "invalid_client", "error_description": ...}``)
rather than the project's ``{"error": {...}}`` because OAuth client libraries parse exactly that.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from nemo_kernel.access.issuer.identities import Client
from nemo_kernel.access.issuer.realm import OAuthError, Realm

PROTOCOL = "/protocol/openid-connect"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthErrorBody(BaseModel):
    """An OAuth 2.0 error (RFC 6749 section 5.2)."""

    error: str = Field(examples=["invalid_client"])
    error_description: str | None = None


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": OAuthErrorBody, "description": "invalid_request, invalid_grant, unsupported_grant_type, ..."},
    401: {
        "model": OAuthErrorBody,
        "description": "invalid_client: the client did not authenticate",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    404: {"model": OAuthErrorBody, "description": "No such realm"},
    413: {"model": OAuthErrorBody, "description": "The request body is too large"},
}


def _oauth_error(exc: OAuthError) -> JSONResponse:
    headers = dict(_NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="nemo"'
    return JSONResponse({"error": exc.error, "error_description": exc.description}, exc.status, headers=headers)


async def _form(request: Request) -> dict[str, Any]:
    """The form body; a malformed one is an OAuth ``invalid_request``, not Starlette's own 400 shape."""
    try:
        return dict(await request.form())
    except HTTPException as exc:
        raise OAuthError("invalid_request", f"malformed form body: {exc.detail}") from None


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise OAuthError("invalid_client", "malformed basic credentials", 401) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "malformed basic credentials", 401)
    # RFC 6749 2.3.1: both parts are form-urlencoded before base64.
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


async def _client(realm: Realm, request: Request, form: Mapping[str, Any]) -> Client:
    """client_secret_basic or client_secret_post, but not both (RFC 6749 2.3)."""
    basic = _basic_credentials(request.headers.get("authorization"))
    posted = form.get("client_secret")
    if basic and posted is not None:
        raise OAuthError("invalid_request", "use one client authentication method")
    if basic:
        return await realm.authenticate_client(*basic)
    client_id = form.get("client_id")
    if not isinstance(client_id, str) or not isinstance(posted, str):
        raise OAuthError("invalid_client", "client authentication required", 401)
    return await realm.authenticate_client(client_id, posted)


def _field(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    if not isinstance(value, str) or not value:
        raise OAuthError("invalid_request", f"missing {name}")
    return value


def issuer_router(*realms: Realm) -> APIRouter:
    """An ``APIRouter`` serving the given realms at ``/realms/{realm}/...``; mount it at the app root."""
    by_name = {realm.name: realm for realm in realms}
    router = APIRouter(prefix="/realms/{realm}", tags=["identity"], responses=_ERROR_RESPONSES)

    def lookup(name: str) -> Realm:
        found = by_name.get(name)
        if found is None:
            raise OAuthError("not_found", f"no realm {name!r}", 404)
        return found

    @router.get("/.well-known/openid-configuration")
    async def discovery(realm: str, request: Request) -> Response:
        """OIDC discovery document."""
        try:
            r = lookup(realm)
        except OAuthError as exc:
            return _oauth_error(exc)
        issuer = r.issuer(str(request.base_url))
        return JSONResponse(
            {
                "issuer": issuer,
                "token_endpoint": f"{issuer}{PROTOCOL}/token",
                "jwks_uri": f"{issuer}{PROTOCOL}/certs",
                "introspection_endpoint": f"{issuer}{PROTOCOL}/token/introspect",
                "revocation_endpoint": f"{issuer}{PROTOCOL}/revoke",
                "grant_types_supported": ["client_credentials", "password", "refresh_token"],
                "response_types_supported": ["token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "jti", "azp", "realm_access"],
            }
        )

    @router.get(f"{PROTOCOL}/certs")
    async def certs(realm: str) -> Response:
        """The JWKS: every signing key not yet retired."""
        try:
            r = lookup(realm)
        except OAuthError as exc:
            return _oauth_error(exc)
        return JSONResponse(await r.keys.jwks(), headers={"Cache-Control": "max-age=60"})

    @router.post(f"{PROTOCOL}/token")
    async def token(realm: str, request: Request) -> Response:
        """Token endpoint: client_credentials, password and refresh_token grants."""
        try:
            r = lookup(realm)
            form = await _form(request)
            client = await _client(r, request, form)
            issuer = r.issuer(str(request.base_url))
            grant = _field(form, "grant_type")
            raw_scope = form.get("scope")
            scope = raw_scope if isinstance(raw_scope, str) else None
            if grant == "client_credentials":
                body = await r.client_credentials(client, issuer, scope)
            elif grant == "password":
                body = await r.password(client, issuer, _field(form, "username"), _field(form, "password"), scope)
            elif grant == "refresh_token":
                body = await r.refresh(client, issuer, _field(form, "refresh_token"))
            else:
                raise OAuthError("unsupported_grant_type", f"grant {grant!r} not supported")
        except OAuthError as exc:
            return _oauth_error(exc)
        return JSONResponse(body, headers=_NO_STORE)

    @router.post(f"{PROTOCOL}/token/introspect")
    async def introspect(realm: str, request: Request) -> Response:
        """RFC 7662 introspection; the caller must authenticate as a client."""
        try:
            r = lookup(realm)
            form = await _form(request)
            await _client(r, request, form)
            result = await r.introspect(_field(form, "token"))
        except OAuthError as exc:
            return _oauth_error(exc)
        return JSONResponse(result, headers=_NO_STORE)

    @router.post(f"{PROTOCOL}/revoke")
    async def revoke(realm: str, request: Request) -> Response:
        """RFC 7009 revocation; 200 even for unknown tokens."""
        try:
            r = lookup(realm)
            form = await _form(request)
            client = await _client(r, request, form)
            await r.revoke(client, _field(form, "token"))
        except OAuthError as exc:
            return _oauth_error(exc)
        return Response(status_code=200, headers=_NO_STORE)

    return router
