"""HTTP mapping of the error tree: the only place that knows status codes for vault errors.

Bodies are ``{"error": code, "error_description": text}``; nothing else ever leaves, and never a
stack trace: an unexpected exception is logged here (type and traceback, server side) and
answered with a generic 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from vault import errors
from vault.redact import redact_secrets

log = logging.getLogger("vault.api")

STATUS: list[tuple[type[errors.VaultError], int]] = [
    (errors.RequestTooLarge, 413),
    (errors.InvalidRequest, 400),
    (errors.Unauthenticated, 401),
    (errors.TokenError, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.AlreadyInitialized, 409),
    (errors.Unavailable, 503),
    (errors.ConfigError, 503),
]
_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}


def status_of(exc: errors.VaultError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def error_response(status: int, code: str, description: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        {"error": code, "error_description": redact_secrets(description)},
        status_code=status,
        headers=headers,
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.VaultError)
    async def _vault_error(_request: Request, exc: errors.VaultError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.error("request failed: %s: %s", exc.code, exc.description)
        return error_response(status, exc.code, exc.description)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
            for err in exc.errors()[:5]
        )
        return error_response(400, "invalid_request", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else code
        return error_response(exc.status_code, code, detail)

    @app.exception_handler(DataError)
    async def _unstorable(_request: Request, _exc: DataError) -> JSONResponse:
        # A value the database refuses (e.g. NUL in a path or query parameter on PostgreSQL).
        return error_response(
            400, "invalid_request", "the request holds a value that cannot be stored"
        )

    @app.exception_handler(DBAPIError)
    async def _database(_request: Request, exc: DBAPIError) -> JSONResponse:
        # A read failed (authentication, key reload): the database is down or unreachable.
        log.error("database error: %s", type(exc.orig).__name__ if exc.orig else type(exc).__name__)
        return error_response(503, "unavailable", "the vault's database is unavailable")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        return error_response(500, "server_error", "internal error; see the vault's log")
