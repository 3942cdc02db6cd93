"""`--auth standalone`: shelf is its own Keystone. Serves the part of Keystone v3 that
clients log in with (`/identity/v3`) and checks tokens in memory.

Answers under /identity use Keystone's bodies (`{"error": {"code", "message",
"title"}}`). Every failed login is the same 401, whatever was wrong.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from api.errors import unauthorized
from api.keystone_bodies import DOMAIN, error_body, token_body, version_document
from application.auth.login import FAILED_LOGIN, Authenticator, LoginFailed
from application.auth.setup import key_directory, standalone_authenticator
from application.auth.tokens import Token, TokenInvalid
from application.bootstrap import Context
from application.identity import Caller

TOKEN_HEADER = "x-auth-token"
SUBJECT_HEADER = "x-subject-token"
MAX_FIELD = 4096  # longer names or secrets are refused before any work
WWW_AUTHENTICATE = {"WWW-Authenticate": "Keystone uri='/identity/v3'"}


class BadAuthRequest(Exception):
    """A body that is not a password or application-credential login (400)."""


def keystone_error(status: int, message: str) -> JSONResponse:
    headers = WWW_AUTHENTICATE if status == 401 else None
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def caller_of(token: Token) -> Caller:
    identity = token.identity
    return Caller(user_name=identity.user_name, user_id=identity.user_id,
                  project_id=identity.project_id, roles=frozenset(identity.roles))


def _text(mapping: Any, key: str) -> str | None:
    value = mapping.get(key) if isinstance(mapping, dict) else None
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD:
        raise BadAuthRequest(f"Invalid input for field '{key}'.")
    return value


def _domain_ok(holder: Any) -> bool:
    domain = holder.get("domain") if isinstance(holder, dict) else None
    if domain is None:
        return True
    return isinstance(domain, dict) and (
        domain.get("id") in (None, DOMAIN["id"]) and domain.get("name") in (None, DOMAIN["name"]))


def _section(holder: Any, key: str) -> dict[str, Any]:
    value = holder.get(key) if isinstance(holder, dict) else None
    if not isinstance(value, dict):
        raise BadAuthRequest(f"Expecting to find {key} in the request.")
    return value


def parse_login(body: Any) -> tuple[str, dict[str, Any], str | None]:
    """(method, its section, the project asked for) of a v3 auth request."""
    auth = _section(body, "auth")
    identity = _section(auth, "identity")
    methods = identity.get("methods")
    if not isinstance(methods, list) or not methods:
        raise BadAuthRequest("Expecting to find identity in auth.")
    method = methods[0]
    if method not in ("password", "application_credential") or not isinstance(
            identity.get(method), dict):
        raise BadAuthRequest(f"Attempted to authenticate with an unsupported method: {method}")
    scope = auth.get("scope")
    project = scope.get("project") if isinstance(scope, dict) else None
    if scope not in (None, "unscoped") and not isinstance(project, dict):
        raise BadAuthRequest("Only project scope is supported.")
    wanted = (_text(project, "name") or _text(project, "id")) if project else None
    if project is not None and not _domain_ok(project):
        wanted = "\0not-in-default-domain"
    section: dict[str, Any] = identity[method]
    return method, section, wanted


def standalone_strategy(contexts: Any, settings: Any) -> StandaloneAuth:
    """Its own store context (the revocation list refreshes from it in a thread), the key
    directory made on first start, and the revocation list refreshing."""
    ctx = Context(contexts.store_url, data_dir=contexts.data_dir)
    auth = standalone_authenticator(
        ctx.repo, key_directory(ctx.data_dir, settings.token_keys),
        timedelta(seconds=settings.token_lifetime), settings.revocation_refresh)
    auth.revocations.start()
    return StandaloneAuth(auth, ctx)


class StandaloneAuth:
    name = "standalone"
    loopback_only = False

    def __init__(self, authenticator: Authenticator, ctx: Context | None = None) -> None:
        self.auth = authenticator
        self.ctx = ctx

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        try:
            return caller_of(self.auth.check(headers.get(TOKEN_HEADER, "")))
        except TokenInvalid:
            raise unauthorized() from None

    def router(self) -> APIRouter:
        return identity_router(self.auth)

    def close(self) -> None:
        self.auth.revocations.stop()
        if self.ctx is not None:
            self.ctx.close()


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def identity_router(auth: Authenticator) -> APIRouter:
    router = APIRouter(prefix="/identity", tags=["identity"])

    @router.get("")
    @router.get("/", include_in_schema=False)
    def versions(request: Request) -> dict[str, Any]:
        return {"versions": {"values": [version_document(_base(request))]}}

    @router.get("/v3")
    @router.get("/v3/", include_in_schema=False)
    def version(request: Request) -> dict[str, Any]:
        return {"version": version_document(_base(request))}

    @router.post("/v3/auth/tokens", status_code=201)
    async def issue(request: Request) -> Response:
        try:
            method, section, project = parse_login(await request.json())
            who = _login_name(method, section)
        except (BadAuthRequest, ValueError) as error:
            message = str(error) if isinstance(error, BadAuthRequest) else (
                "Malformed request body")
            return keystone_error(400, message)
        await asyncio.sleep(auth.login_delay(who))
        remote = request.client.host if request.client else "unknown"
        request_id = request.scope["state"]["request_id"]
        try:
            token = await run_in_threadpool(_login, auth, method, section, project,
                                            remote, request_id)
        except (LoginFailed, BadAuthRequest):
            return keystone_error(401, FAILED_LOGIN)
        return JSONResponse(token_body(token, _base(request)), status_code=201,
                            headers={"X-Subject-Token": token.text})

    @router.get("/v3/auth/tokens")
    @router.head("/v3/auth/tokens", include_in_schema=False)
    def validate(request: Request) -> Response:
        checked = _subject(auth, request)
        if isinstance(checked, Response):
            return checked
        nocatalog = "nocatalog" in request.query_params
        return JSONResponse(token_body(checked, _base(request), not nocatalog),
                            headers={"X-Subject-Token": checked.text})

    @router.delete("/v3/auth/tokens", status_code=204)
    def revoke(request: Request) -> Response:
        checked = _subject(auth, request)
        if isinstance(checked, Response):
            return checked
        caller = auth.check(request.headers.get(TOKEN_HEADER, "")).identity
        auth.revoke(checked, caller.user_name, request.scope["state"]["request_id"])
        return Response(status_code=204)

    return router


def _login_name(method: str, section: dict[str, Any]) -> str:
    if method == "password":
        user = section.get("user")
        return _text(user, "name") or _text(user, "id") or ""
    return f"credential:{_text(section, 'id') or ''}"


def _login(auth: Authenticator, method: str, section: dict[str, Any], project: str | None,
           remote: str, request_id: str) -> Token:
    if method == "password":
        user = section.get("user")
        name, password = _text(user, "name"), _text(user, "password")
        if name is None or password is None or not _domain_ok(user):
            name = name or _text(user, "id") or ""
            return auth.login_password(name, "", "\0refused", remote, request_id)
        return auth.login_password(name, password, project, remote, request_id)
    credential_id, secret = _text(section, "id"), _text(section, "secret")
    return auth.login_credential(credential_id or "", secret or "", project, remote,
                                 request_id)


def _subject(auth: Authenticator, request: Request) -> Token | Response:
    """The X-Subject-Token, if the caller (X-Auth-Token) may see it: its own, or admin."""
    try:
        caller = auth.check(request.headers.get(TOKEN_HEADER, ""))
    except TokenInvalid:
        return keystone_error(401, FAILED_LOGIN)
    try:
        subject = auth.check(request.headers.get(SUBJECT_HEADER, ""))
    except TokenInvalid:
        return keystone_error(404, "Could not find token.")
    if subject.identity.user_id != caller.identity.user_id and (
            "admin" not in caller.identity.roles):
        return keystone_error(403, "You are not authorized to perform the requested action.")
    return subject
