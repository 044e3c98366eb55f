"""Key rotation (owner)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from vault.api.deps import CallerDep, VaultDep, commit, decode_json, read_body, require
from vault.api.schemas import ERRORS, RotateBody, body
from vault.crypto.keys import TOKEN
from vault.domain import OWNER
from vault.errors import InvalidRequest
from vault.ops.keys import rotate_job

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.post("/rotate", responses=ERRORS, openapi_extra=body(RotateBody, required=False))
async def rotate(request: Request, vault: VaultDep, caller: CallerDep) -> dict[str, Any]:
    """Make a new signing key; the old one stays published while anything it signed is valid."""
    require(caller, OWNER)
    purpose = TOKEN
    body = await read_body(request, vault)
    if body:  # none at all: the token key; else exactly this object (not ``null``)
        payload = decode_json(body)
        if not isinstance(payload, dict) or set(payload) - {"purpose"}:
            raise InvalidRequest('body must be {"purpose": "token" | "audit"}')
        purpose = payload.get("purpose", TOKEN)
    job = rotate_job(
        vault.master_key,
        purpose,
        actor=caller.id,
        max_ttl=vault.settings.max_ttl,
        leeway=vault.settings.leeway_seconds,
    )
    result = await commit(vault, job)
    await run_in_threadpool(vault.keys.reload)
    return result
