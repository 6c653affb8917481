"""Domain errors and the one place that maps them to HTTP status codes.

Handlers answer ``{"detail": message}`` like FastAPI's own errors (400 for a body that is not
JSON, 422 for validation), so clients read one shape. A 422 lists ``{"type", "loc", "msg"}``
(and ``ctx``: the bound or pattern) per error, and ``loc`` names the field. The input is never
echoed: it can be a ``NaN``, a lone surrogate or a list nested 100,000 deep, which no JSON
response carries, or a whole document.
"""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from lsr.index.live import DocumentNotFound


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


class ShardUnavailable(ServiceError):
    """A shard of a sharded index answered no search in time (every replica down or busy)."""

    status = 503

    def __init__(self, shards: list[str]) -> None:
        super().__init__(f"shard{'s' if len(shards) > 1 else ''} {', '.join(shards)} unavailable: no replica "
                         f"answered; retry, or search with allow_partial for the other shards' results")
        self.shards = shards


class EncoderUnavailable(ServiceError):
    """The query encoder deployment (Ray Serve) answered no request in time."""

    status = 503

    def __init__(self) -> None:
        super().__init__("the query encoder is unavailable: no replica answered; retry shortly")


# Errors raised below the service (index, live updates) and the status each gets.
STATUS_OF = {
    DocumentNotFound: 404,
}

MAX_NAME_CHARS = 200  # a field name (an unknown key) or a type name is cut to this in a 422
# Plainer words than pydantic's for what hostile input triggers most.
MESSAGES = {
    "string_unicode": "must be valid Unicode text: a lone surrogate (U+D800..U+DFFF) is not a character",
    "finite_number": "must be a finite number, not NaN or Infinity",
}
NOT_AN_OBJECT = ("model_attributes_type", "model_type", "dict_type")


def _encodable(text: str) -> str:
    """``text`` with any lone surrogate escaped (``\\ud800``), so UTF-8 encoding cannot fail."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _name(value) -> str:
    text = _encodable(str(value))
    return text if len(text) <= MAX_NAME_CHARS else text[:MAX_NAME_CHARS] + "..."


def _context_value(value):
    """A bound stays a number; anything else (a pattern, an exception) becomes a short string."""
    if value is None or isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    return _name(value)


def _validation_item(error: dict) -> dict:
    """One pydantic error as ``{"type", "loc", "msg"[, "ctx"]}``: no input, every part encodable."""
    loc = tuple(error.get("loc", ()))
    message = MESSAGES.get(error["type"], error.get("msg", ""))
    if error["type"] == "missing" and loc == ("body",):
        message = "a JSON object body is required"
    if error["type"] in NOT_AN_OBJECT and loc == ("body",):
        message = "the body must be a JSON object"
        if isinstance(error.get("input"), (bytes, bytearray)):  # FastAPI parses only JSON content types
            message += " sent with Content-Type: application/json"
    item = {"type": _name(error["type"]), "loc": [part if isinstance(part, int) else _name(part) for part in loc],
            "msg": _encodable(message)}
    if isinstance(error.get("ctx"), dict) and error["type"] not in MESSAGES:
        item["ctx"] = {_name(key): _context_value(value) for key, value in error["ctx"].items()}
    return item


def validation_response(errors: list[dict]) -> JSONResponse:
    """400 for a body that is not JSON (what the README and the OpenAPI page say), else 422."""
    for error in errors:
        if error["type"] == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "JSON decode error")
            return _detail(400, f"the body is not valid JSON: {reason} at character {error['loc'][-1]}")
    return JSONResponse({"detail": [_validation_item(error) for error in errors]}, status_code=422)


def _detail(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": _encodable(message)}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping on an app."""

    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return validation_response(list(error.errors()))

    async def service_error(_: Request, error: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": "ApiKey"} if isinstance(error, MissingApiKey) else None
        return _detail(error.status, error.message, headers)

    async def lower_error(_: Request, error: Exception) -> JSONResponse:
        return _detail(STATUS_OF[type(error)], str(error))

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ServiceError, service_error)
    for error_type in STATUS_OF:
        app.add_exception_handler(error_type, lower_error)
