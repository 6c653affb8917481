"""Domain errors and the one place that maps them to HTTP status codes.

Handlers answer ``{"detail": message}`` like FastAPI's own errors (422 for validation, 400
for a body that is not JSON), so clients read one shape.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from index.live.live_index import DocumentNotFound


class ServiceError(Exception):
    """An error the client can act on; ``status`` is set by the subclass."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MissingApiKey(ServiceError):
    status = 401


class WrongApiKey(ServiceError):
    status = 403


class PayloadTooLarge(ServiceError):
    status = 413


class ModeUnavailable(ServiceError):
    """Dense or hybrid search on an index without a dense part."""

    status = 409


# Errors raised below the service (index, live updates) and the status each gets.
STATUS_OF = {
    DocumentNotFound: 404,
}


def _detail(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping on an app."""

    async def service_error(_: Request, error: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": "ApiKey"} if isinstance(error, MissingApiKey) else None
        return _detail(error.status, error.message, headers)

    async def lower_error(_: Request, error: Exception) -> JSONResponse:
        return _detail(STATUS_OF[type(error)], str(error))

    app.add_exception_handler(ServiceError, service_error)
    for error_type in STATUS_OF:
        app.add_exception_handler(error_type, lower_error)
