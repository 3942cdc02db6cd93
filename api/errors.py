"""Nova's error bodies, `{"itemNotFound": {"code": 404, "message": …}}`, for every error the
API answers, including the framework's own (an unknown path, a body that fails
validation), but 401, which a Nova behind keystonemiddleware answers in Keystone's
`{"error": {"code", "title", "message"}}`; anything unexpected is answered by the
middleware (`computeFault`)."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from domain.errors import Conflict, NoRoom, NotFound, ShelfError, UsageError

log = structlog.get_logger("shelf.api")

FAULT_NAMES = {
    400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
    405: "badMethod", 406: "notAcceptable", 409: "conflictingRequest", 413: "overLimit",
    415: "badMediaType", 422: "badRequest", 500: "computeFault", 501: "notImplemented",
}
UNEXPECTED = ("Unexpected API Error. Please report this at the project's issue tracker "
              "and attach the shelf api log if possible.")


class ApiError(Exception):
    """An error answered as is: status and Nova's message."""

    def __init__(self, status: int, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def forbidden(rule: str) -> ApiError:
    return ApiError(403, f"Policy doesn't allow {rule} to be performed.")


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def unauthorized() -> ApiError:
    return ApiError(401, "The request you have made requires authentication.",
                    {"WWW-Authenticate": "Keystone uri='/identity/v3'"})


def fault_body(status: int, message: str) -> dict[str, Any]:
    status = 400 if status == 422 else status
    if status == 401:  # in front of Nova, keystonemiddleware answers in Keystone's shape
        return {"error": {"code": 401, "title": "Unauthorized", "message": message}}
    return {FAULT_NAMES.get(status, "computeFault"): {"code": status, "message": message}}


def fault_response(status: int, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    code = 400 if status == 422 else status
    return JSONResponse(fault_body(code, message), status_code=code, headers=headers)


SHELF_STATUS: tuple[tuple[type[ShelfError], int], ...] = (
    (NotFound, 404), (Conflict, 409), (UsageError, 400), (NoRoom, 409),
)


def shelf_status(error: ShelfError) -> int:
    for kind, status in SHELF_STATUS:
        if isinstance(error, kind):
            return status
    return 500


def install(app: FastAPI) -> None:
    """Every error becomes Nova's body."""

    async def api_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiError)
        return fault_response(error.status, error.message, error.headers)

    async def shelf_error(_: Request, error: Exception) -> JSONResponse:
        status = shelf_status(error) if isinstance(error, ShelfError) else 500
        return fault_response(status, str(error) if status != 500 else UNEXPECTED)

    async def http_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        message = error.detail if isinstance(error.detail, str) else "Error"
        if error.status_code == 404:
            message = "The resource could not be found."
        return fault_response(error.status_code, message, dict(error.headers or {}))

    async def invalid(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        if any(e.get("type") == "json_invalid" for e in error.errors()):
            return fault_response(400, "Malformed request body")
        return fault_response(400, "Invalid input for field/attribute "
                              f"{_where(error)}. {_first_message(error)}")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(ShelfError, shelf_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)


def _where(error: RequestValidationError) -> str:
    errors = error.errors()
    if not errors:
        return "body"
    location = [str(part) for part in errors[0].get("loc", ()) if part != "body"]
    return ".".join(location) or "body"


def _first_message(error: RequestValidationError) -> str:
    errors = error.errors()
    return str(errors[0].get("msg", "")) if errors else ""
