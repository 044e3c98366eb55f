"""Public endpoints: key sets, liveness, readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from vault.api.deps import VaultDep
from vault.api.errors import error_body, error_headers
from vault.ops.runtime import Vault

router = APIRouter(tags=["public"])
PUBLIC_CACHE = {"Cache-Control": "public, max-age=60"}
# The key sets are read from the database on every request (public keys only, nothing
# unsealed): a key rotated in by any process (the CLI, another worker, a replica) is published
# as soon as its rotation commits, before anything signs with it, so a verifier that meets a
# new kid and fetches the JWKS finds it whichever process answers.


@router.get("/.well-known/jwks.json")
async def jwks(vault: VaultDep) -> JSONResponse:
    """The token-signing public keys (current, and retired ones until their tokens expire)."""
    token_jwks, _ = await run_in_threadpool(vault.keys.published)
    return JSONResponse(token_jwks, headers=PUBLIC_CACHE)


@router.get("/.well-known/audit-keys.json")
async def audit_keys(vault: VaultDep) -> JSONResponse:
    """The checkpoint-signing public keys, current and past. Never used for tokens."""
    _, audit_jwks = await run_in_threadpool(vault.keys.published)
    return JSONResponse(audit_jwks, headers=PUBLIC_CACHE)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _ready(vault: Vault) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    try:
        with vault.db.read() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # readiness reports; it does not raise
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        vault.keys.current()
        checks["keys"] = "ok"
    except Exception as exc:
        checks["keys"] = f"not loaded: {type(exc).__name__}"
    refused = vault.appender.refused
    checks["audit_log"] = "ok" if refused is None else f"refused: {refused.description}"
    return checks


@router.get("/readyz")
async def readyz(vault: VaultDep) -> JSONResponse:
    checks = await run_in_threadpool(_ready, vault)
    failing = [f"{name} {value}" for name, value in checks.items() if value != "ok"]
    if not failing:
        return JSONResponse({"status": "ready", "checks": checks})
    # Not ready is an error answer: the pinned error members, and the checks beside them.
    body = error_body("unavailable", f"not ready: {'; '.join(failing)}")
    return JSONResponse(
        {**body, "status": "not_ready", "checks": checks},
        status_code=503,
        headers=error_headers(503),
    )
