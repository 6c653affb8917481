"""API-key check of the write endpoints: header ``X-API-Key``, constant-time comparison."""

from __future__ import annotations

import hmac

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from lsr.service.errors import MissingApiKey, WrongApiKey

API_KEY_HEADER = "X-API-Key"
api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="required by write endpoints")


def check_api_key(presented: str | None, keys) -> None:
    """Raise 401 without a key and 403 with a key that matches none of ``keys``."""
    if not presented:
        raise MissingApiKey(f"this endpoint needs an API key in the {API_KEY_HEADER} header")
    presented_bytes = presented.encode("utf-8")
    matched = False
    for key in keys:  # every key is compared, so the time does not tell which one matched
        matched |= hmac.compare_digest(presented_bytes, key.get_secret_value().encode("utf-8"))
    if not matched:
        raise WrongApiKey("the API key is not valid" if keys else "writes are disabled: the service has no API key")


def require_api_key(request: Request, presented: str | None = Security(api_key_header)) -> None:
    """FastAPI dependency of the write endpoints."""
    check_api_key(presented, request.app.state.settings.api_keys)
