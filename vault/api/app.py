"""``create_app(settings)``: the vault's HTTP API. Nothing happens at import time."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from vault import __version__
from vault.api import errors
from vault.api.hot import VaultApp
from vault.api.routes import audit, keys, principals, subjects, tokens, wellknown
from vault.clock import Clock
from vault.config import Settings, load_settings
from vault.errors import LogRewritten
from vault.ops.runtime import open_vault
from vault.ops.scope_record import record_scopes

log = logging.getLogger("vault")

# How long a thread may hold the GIL while another waits for it (CPython's default is 5 ms). The
# appender's thread gives the GIL up at every database call and then waits for it while the event
# loop keeps it, holding the chain lock all along: at 5 ms, issuance under load ran at about 36 %
# of /healthz here, at 0.5 ms at about 46 %, and took less CPU per token (benchmarks/README.md).
SWITCH_INTERVAL_SECONDS = 0.0005


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        vault = await run_in_threadpool(open_vault, settings, clock=clock, background=True)
        try:
            # Uses are decided with this table: the log says which (vault.ops.scope_record).
            if await run_in_threadpool(record_scopes, vault):
                log.info("scope table recorded in the audit log (scopes.loaded)")
        except LogRewritten:
            # Logged as critical where it was found. The vault serves what reads the log
            # (export, verify, entries) and refuses every write: nobody decides uses by a
            # table the log does not record, as nothing is recorded at all.
            pass
        except BaseException:
            await run_in_threadpool(vault.close)
            raise
        app.state.vault = vault
        log.info("vault ready: issuer %s, audience %s", settings.issuer, settings.audience)
        previous = sys.getswitchinterval()
        sys.setswitchinterval(min(previous, SWITCH_INTERVAL_SECONDS))
        try:
            yield
        finally:
            sys.setswitchinterval(previous)
            await run_in_threadpool(vault.close)

    app = VaultApp(
        title="Delegation Vault",
        version=__version__,
        description="Short-lived, audited delegation tokens for Open WebUI.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # A path with a trailing slash is not one of the vault's: 404, not a redirect to a URL
        # built from the Host header (before any authentication).
        redirect_slashes=False,
    )
    errors.install(app)
    modules = (wellknown, tokens, principals, subjects, keys, audit)
    for module in modules:
        app.include_router(module.router)
    # Every route with its full path, for a 405's Allow (errors.allowed_methods).
    app.state.served_routes = [route for module in modules for route in module.router.routes]
    _document_400_not_422(app)
    return app


def _document_400_not_422(app: FastAPI) -> None:
    """FastAPI documents its 422 validation body on every operation with parameters; the vault
    answers invalid parameters with 400 and the pinned error body (``api/errors.py``)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.get("responses", {})
                    if responses.pop("422", None) is not None and "400" not in responses:
                        responses["400"] = {
                            "description": "Invalid request",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/ErrorBody"}
                                }
                            },
                        }
            for name in ("HTTPValidationError", "ValidationError"):
                document.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_env() -> FastAPI:
    """The uvicorn factory behind ``dvault serve`` (each worker builds its own app)."""
    return create_app(load_settings())
