"""HTTP mapping of the error tree: the only place that knows status codes for vault errors.

Bodies are ``{"error": code, "error_description": text}``; nothing else ever leaves, and never a
stack trace: an unexpected exception is logged here (type and traceback, server side) and
answered with a generic 500.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

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


def error_body(code: str, description: str) -> dict[str, str]:
    return {"error": code, "error_description": redact_secrets(description)}


# A 503 is the vault failing closed (its database or audit log unavailable, shutting down): a
# client may try again, and is told when (RFC 9110 §10.2.3). One second: long enough not to
# hammer a struggling database, short enough that a restart is hardly noticed.
RETRY_AFTER_SECONDS = 1


def error_headers(status: int) -> dict[str, str]:
    if status == 401:
        return {"WWW-Authenticate": "Bearer"}
    if status == 503:
        return {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return {}


def error_response(status: int, code: str, description: str) -> JSONResponse:
    return JSONResponse(
        error_body(code, description), status_code=status, headers=error_headers(status)
    )


def classify(exc: Exception) -> tuple[int, str, str]:
    """Status, code and description for an exception raised while answering; logs what the
    operator must see (server errors), never the request's secrets."""
    if isinstance(exc, errors.VaultError):
        status = status_of(exc)
        if status >= 500:
            log.error("request failed: %s: %s", exc.code, exc.description)
        return status, exc.code, exc.description
    if isinstance(exc, DataError):
        # A value the database refuses (e.g. NUL in a path or query parameter on PostgreSQL).
        return 400, "invalid_request", "the request holds a value that cannot be stored"
    if isinstance(exc, DBAPIError):
        # A read failed (authentication, key reload): the database is down or unreachable.
        log.error("database error: %s", type(exc.orig).__name__ if exc.orig else type(exc).__name__)
        return 503, "unavailable", "the vault's database is unavailable"
    log.error("unexpected error", exc_info=exc)
    return 500, "server_error", "internal error; see the vault's log"


async def _classified(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(*classify(exc))


# The public GET paths that monitors and caches may ask with HEAD (RFC 9110 §9.3.2), answered as
# the GET without its body (``vault.api.hot.VaultApp``). The others stay 405: a HEAD of an export
# would read the whole log for nothing.
HEAD_AS_GET = frozenset(
    {"/healthz", "/readyz", "/.well-known/jwks.json", "/.well-known/audit-keys.json"}
)


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> str:
    """Every method some route of ``routes`` serves at the request's path, e.g. ``GET, POST``.
    Starlette's 405 names only the first route it met there, while RFC 9110 wants them all."""
    methods: set[str] = set()
    for route in routes:
        if route.matches(scope)[0] != Match.NONE:
            served = getattr(route, "methods", None) or ()
            methods.update(served)
            if "GET" in served and getattr(route, "path", None) in HEAD_AS_GET:
                methods.add("HEAD")
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
            for err in exc.errors()[:5]
        )
        return error_response(400, "invalid_request", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else code
        answer = error_response(exc.status_code, code, detail)
        if exc.headers and "Allow" in exc.headers:  # a 405 says which methods are (RFC 9110)
            served = getattr(request.app.state, "served_routes", ())
            answer.headers["Allow"] = allowed_methods(served, request.scope) or exc.headers["Allow"]
        return answer

    for kind in (errors.VaultError, DBAPIError, Exception):  # DataError is a DBAPIError
        app.add_exception_handler(kind, _classified)
