"""Per request: its request id and, on compute paths, its microversion.

`x-openstack-request-id: req-<uuid>` is made here, once, and is the request id the
application layer records with the action and its events, so `openstack server event
list` and `shelf actions` agree. The microversion is read from either header and echoed in
both, with `Vary`, as Nova does. A body over Nova's `max_request_body_size` (112 KiB) is
413 before it is read whole. A compute request's body is JSON, as Nova reads it: a JSON
Content-Type, text/plain or none; any other type is 415. Pure ASGI (no per-request task as
BaseHTTPMiddleware has).
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import microversion
from api.errors import UNEXPECTED, fault_body, log
from domain.service import new_request_id

COMPUTE_PREFIX = "/v2.1"
VARY = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
MAX_BODY = 114_688  # Nova's [oslo_middleware] max_request_body_size
TOO_LARGE = "Request is too large."
# Nova's wsgi.Request.get_content_type: these two, and text/plain or no type, read as JSON.
JSON_TYPES = frozenset({"application/json", "application/vnd.openstack.compute+json"})
UNSUPPORTED_TYPE = "Unsupported Content-Type"


class BodyTooLarge(Exception):
    """More than MAX_BODY bytes arrived (a chunked body, or a lying Content-Length)."""


def _declared_length(scope: Scope) -> int:
    for key, value in scope["headers"]:
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0  # the server refuses a malformed length itself
    return 0


class _BoundedBody:
    """`receive` that stops a body at MAX_BODY; `exceeded` tells the answer to become 413
    (the framework may turn the exception into its own 400 for an unreadable body)."""

    def __init__(self, receive: Receive) -> None:
        self.receive, self.received, self.exceeded = receive, 0, False

    async def __call__(self) -> Message:
        message = await self.receive()
        self.received += len(message.get("body", b""))
        if self.received > MAX_BODY:
            self.exceeded = True
            raise BodyTooLarge
        return message


def request_id_of(scope: Scope) -> str:
    value: str = scope["state"]["request_id"]
    return value


def version_of(scope: Scope) -> microversion.Microversion:
    value: microversion.Microversion = scope["state"]["microversion"]
    return value


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        extra: list[tuple[bytes, bytes]] = [(b"x-openstack-request-id", request_id.encode())]
        if scope["path"].startswith(COMPUTE_PREFIX):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in scope["headers"]}
            try:
                version = microversion.requested(headers.get(microversion.NEW_HEADER),
                                                 headers.get(microversion.LEGACY_HEADER))
            except microversion.BadVersion as error:
                await _refuse(send, 400, str(error), extra)
                return
            except microversion.VersionNotAcceptable as error:
                await _refuse(send, 406, str(error), extra)
                return
            state["microversion"] = version
            extra += [
                (b"openstack-api-version", f"compute {version}".encode()),
                (b"x-openstack-nova-api-version", str(version).encode()),
                (b"vary", VARY.encode()),
            ]
        else:
            state["microversion"] = microversion.Microversion(*microversion.MIN_VERSION)
        if _declared_length(scope) > MAX_BODY:
            await _refuse(send, 413, TOO_LARGE, extra)
            return
        if scope["path"].startswith(COMPUTE_PREFIX) and _has_body(scope) and not (
                _read_as_json(scope)):
            await _refuse(send, 415, UNSUPPORTED_TYPE, extra)
            return

        started = False
        body = _BoundedBody(receive)

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if body.exceeded:  # whatever the app answered, it is 413
                if not started:
                    started = True
                    await _refuse(send, 413, TOO_LARGE, extra)
                return
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, body, send_with_headers)
        except BodyTooLarge:
            if not started:
                await _refuse(send, 413, TOO_LARGE, extra)
        except Exception as error:  # a bug: Nova's 500 body, never a traceback or a reset
            log.error("api.unexpected_error", path=scope["path"], error=repr(error),
                      request_id=request_id)
            if not started:
                await _refuse(send, 500, UNEXPECTED, extra)


def _has_body(scope: Scope) -> bool:
    """A Content-Length above 0, or a chunked body (Nova looks at no type without one)."""
    headers = dict(scope["headers"])
    return _declared_length(scope) > 0 or b"chunked" in headers.get(b"transfer-encoding", b"")


def _read_as_json(scope: Scope) -> bool:
    """False for a body of another type than JSON; a text/plain body (curl's default, and
    Nova's too) is relabelled JSON for the framework's parser."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for index, (key, value) in enumerate(headers):
        if key.lower() != b"content-type":
            continue
        media = value.decode("latin-1").split(";", 1)[0].strip().lower()
        if media in ("", "text/plain"):
            headers[index] = (key, b"application/json")
            return True
        return media in JSON_TYPES
    return True


async def _refuse(send: Send, status: int, message: str,
                  headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(fault_body(status, message)).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
