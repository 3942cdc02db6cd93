"""Who is asking: the one place where a request's identity is established.

Every route takes its `Caller` from `caller()` below, which asks the configured strategy
(`shelf api --auth …`). A strategy turns the request's headers into a verified `Caller`
or refuses with 401; the user, user id and project recorded in events come from it, never
from a body field. `noauth` is here; `standalone` and `keystone` plug into `STRATEGIES`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from fastapi import APIRouter, Request

from api.errors import unauthorized
from api.keystone_auth import keystone_strategy
from api.standalone_auth import standalone_strategy
from application.identity import Caller

TOKEN_HEADER = "x-auth-token"
ROLES_HEADER = "x-roles"
# Keystone's default roles imply one another: admin ⊃ member ⊃ reader.
IMPLIED_ROLES = {"admin": ("member", "reader"), "member": ("reader",)}
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def with_implied(roles: set[str] | frozenset[str]) -> frozenset[str]:
    expanded = set(roles)
    for role in roles:
        expanded.update(IMPLIED_ROLES.get(role, ()))
    return frozenset(expanded)


class Strategy(Protocol):
    """How an `--auth` strategy establishes identity."""

    name: str
    loopback_only: bool  # refuse to listen anywhere but 127.0.0.0/8 and ::1

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """The verified caller, or raise `api.errors.unauthorized()`."""

    def router(self) -> APIRouter | None:
        """Routes the strategy serves itself (standalone's /identity/v3), if any."""


class NoAuth:
    """Development only, as Nova's noauth2: the token's text is `user:project`.

    Roles: the `X-Roles` header (comma-separated) if sent, else a third field of the token
    (`user:project:reader`), else `admin` for the user named `admin` and `member` for
    everyone else. Implied roles follow (admin ⊃ member ⊃ reader).
    """

    name = "noauth"
    loopback_only = True

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        token = headers.get(TOKEN_HEADER, "")
        parts = token.split(":")
        if len(parts) not in (2, 3) or not all(_NAME.match(p) for p in parts[:2]):
            raise unauthorized()
        user, project = parts[0], parts[1]
        roles = _roles(headers.get(ROLES_HEADER) or (parts[2] if len(parts) == 3 else ""))
        if not roles:
            roles = {"admin"} if user == "admin" else {"member"}
        return Caller(user_name=user, user_id=user, project_id=project,
                      roles=with_implied(roles))

    def router(self) -> APIRouter | None:
        return identity_version_router()


def identity_version_router() -> APIRouter:
    """Keystone's v3 version document and nothing else: the client reads it before
    listing servers (it checks that identity speaks v3) even with a static token."""
    router = APIRouter(prefix="/identity", tags=["identity"])

    @router.get("/v3")
    @router.get("/v3/", include_in_schema=False)
    def identity_version(request: Request) -> dict[str, Any]:
        base = str(request.base_url).rstrip("/")
        return {"version": {
            "id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{base}/identity/v3/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.identity-v3+json"}]}}

    return router


def _roles(text: str) -> set[str]:
    return {role.strip().lower() for role in text.split(",") if role.strip()}


def _noauth(_: Any, __: Any) -> Strategy:
    return NoAuth()


# name → factory(the API's composition root, the ApiSettings) → strategy
STRATEGIES: dict[str, Callable[[Any, Any], Strategy]] = {
    "noauth": _noauth, "standalone": standalone_strategy, "keystone": keystone_strategy}


def caller(request: Request) -> Caller:
    """FastAPI dependency: the request's verified caller (401 when there is none)."""
    strategy: Strategy = request.app.state.identity
    return strategy.authenticate(request.headers)
