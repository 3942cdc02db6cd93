"""`--auth keystone`: an existing Keystone is the identity.

Each token is checked with Keystone's own validation call, `GET /v3/auth/tokens`, sent
with the token as both `X-Auth-Token` and `X-Subject-Token` (Keystone's default policy
lets a token validate itself, so shelf needs no service account), through a keystoneauth1
session. User, project and roles (Keystone lists the implied ones too) come from
Keystone's answer, which is cached per token for `cache_seconds` (default 60), never past
the token's expiry: a token revoked in Keystone stops working here within that time.

Why not keystonemiddleware's auth_token: it is WSGI middleware (webob requests), and the
API is an ASGI application; wrapping one in the other would run every request through a
WSGI adapter thread and bring in its own config and cache stack. The validation call is
the same one auth_token makes.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from keystoneauth1 import session as ks_session
from keystoneauth1.exceptions import ClientException

from api.errors import ApiError, unauthorized
from application.identity import Caller
from domain.errors import UsageError

TOKEN_HEADER = "x-auth-token"
DEFAULT_CACHE_SECONDS = 60.0
CACHE_SIZE = 10_000


def caller_from_token(body: Mapping[str, Any]) -> tuple[Caller, float]:
    """The caller a validated token stands for, and its expiry (epoch seconds)."""
    token = body["token"]
    project = token.get("project")
    if not isinstance(project, dict):
        raise unauthorized()  # an unscoped or domain-scoped token acts on no project
    expires = datetime.fromisoformat(token["expires_at"].replace("Z", "+00:00"))
    roles = frozenset(role["name"] for role in token.get("roles", ()))
    return Caller(user_name=token["user"]["name"], user_id=token["user"]["id"],
                  project_id=project["id"], roles=roles), expires.astimezone(UTC).timestamp()


def keystone_strategy(_: Any, settings: Any) -> KeystoneAuth:
    if not settings.keystone_url:
        raise UsageError("--auth keystone needs --keystone-url URL")
    return KeystoneAuth(settings.keystone_url, settings.keystone_cache,
                        settings.keystone_cafile)


class KeystoneAuth:
    name = "keystone"
    loopback_only = False

    def __init__(self, keystone_url: str, cache_seconds: float = DEFAULT_CACHE_SECONDS,
                 cafile: str | None = None) -> None:
        self.url = keystone_url.rstrip("/")
        if self.url.endswith("/v3"):
            self.url = self.url[:-3]
        self.cache_seconds = cache_seconds
        self.session = ks_session.Session(verify=cafile or True, timeout=10)
        self._cache: OrderedDict[str, tuple[Caller, float]] = OrderedDict()
        self._lock = threading.Lock()

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        token = headers.get(TOKEN_HEADER, "")
        if not token or len(token) > 8192:
            raise unauthorized()
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.time()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        caller, expires = self._validate(token)
        with self._lock:
            self._cache[key] = (caller, min(expires, now + self.cache_seconds))
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return caller

    def _validate(self, token: str) -> tuple[Caller, float]:
        try:
            response = self.session.get(
                f"{self.url}/v3/auth/tokens", authenticated=False, raise_exc=False,
                headers={"X-Auth-Token": token, "X-Subject-Token": token},
                params={"nocatalog": "1"})
        except ClientException:
            raise ApiError(503, "The identity service (Keystone) is unreachable.") from None
        if response.status_code in (401, 403, 404):
            raise unauthorized()
        if response.status_code != 200:
            raise ApiError(503, f"The identity service answered {response.status_code}.")
        try:
            return caller_from_token(response.json())
        except (KeyError, TypeError, ValueError):
            raise ApiError(503, "The identity service's answer was not a token.") from None

    def router(self) -> None:
        return None
