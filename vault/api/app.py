"""``create_app(settings)``: the vault's HTTP API. Nothing happens at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from vault import __version__
from vault.api import errors
from vault.api.routes import audit, keys, principals, subjects, tokens, wellknown
from vault.clock import Clock
from vault.config import Settings, load_settings
from vault.ops.runtime import open_vault

log = logging.getLogger("vault")


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        vault = await run_in_threadpool(open_vault, settings, clock=clock, background=True)
        app.state.vault = vault
        log.info("vault ready: issuer %s, audience %s", settings.issuer, settings.audience)
        try:
            yield
        finally:
            await run_in_threadpool(vault.close)

    app = FastAPI(
        title="Delegation Vault",
        version=__version__,
        description="Short-lived, audited delegation tokens for Open WebUI.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    for module in (wellknown, tokens, principals, subjects, keys, audit):
        app.include_router(module.router)
    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory behind ``dvault serve`` (each worker builds its own app)."""
    return create_app(load_settings())
