"""Token exchange, introspection, revocation (SPEC §6)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from vault.api.deps import (
    Call,
    CallerDep,
    VaultDep,
    commit,
    get_vault,
    hot_caller,
    read_json,
    request_call,
    require,
)
from vault.api.schemas import (
    ERRORS,
    IntrospectBody,
    RevokeBody,
    TokenRequestBody,
    TokenResponse,
    body,
)
from vault.domain import DELEGATOR, OWNER, VERIFIER
from vault.errors import InvalidRequest
from vault.ops import revocation, tokens
from vault.ops.keyring import KeysNotHeld
from vault.ops.runtime import Vault

router = APIRouter(prefix="/v1", tags=["tokens"])
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.post(
    "/token",
    response_model=TokenResponse,
    responses=ERRORS,
    openapi_extra=body(TokenRequestBody),
)
async def exchange(request: Request) -> JSONResponse:
    """A delegator exchanges its credential for a short-lived token scoped to one subject."""
    answer = await answer_exchange(await get_vault(request), request_call(request))
    return JSONResponse(answer, headers=NO_STORE)


@router.post("/introspect", responses=ERRORS, openapi_extra=body(IntrospectBody))
async def introspect(request: Request) -> JSONResponse:
    """For the verifier middleware: is this token active, and record its use."""
    answer = await answer_introspect(await get_vault(request), request_call(request))
    return JSONResponse(answer, headers=NO_STORE)


# The two functions below answer the routes above. In the server they are reached through
# ``vault.api.hot``, which serves these two paths without FastAPI's per-request machinery.


async def answer_exchange(vault: Vault, call: Call) -> dict[str, Any]:
    caller = await hot_caller(vault, call.authorization)
    try:
        payload: Any = await call.json(vault)
    except InvalidRequest as exc:  # a body over the limit too (413, ``RequestTooLarge``)
        payload = exc  # refused through the job, with what was wrong, so the denial is audited
    job = tokens.issue_job(
        vault.settings, vault.scopes, vault.keys, caller, payload, call.client_ip
    )
    issued = await commit(vault, job, read_only=True)
    return issued.to_response()


async def answer_introspect(vault: Vault, call: Call) -> dict[str, Any]:
    caller = await hot_caller(vault, call.authorization)
    require(caller, VERIFIER)
    use = tokens.parse_use_request(await call.json(vault))
    now = int(vault.clock.now().timestamp())
    args = (vault.settings, vault.scopes, caller, use, now)
    try:  # with the keys this process holds: no I/O, so on the event loop
        found = tokens.introspect_job(*args, vault.keys.token_key_held, vault.signatures)
    except KeysNotHeld:  # an unknown kid, or keys due for a refresh: off the event loop
        found = await run_in_threadpool(
            tokens.introspect_job, *args, vault.keys.token_key, vault.signatures
        )
    if found is None:
        return dict(tokens.INACTIVE)
    job, reads = found
    return await commit(vault, job, read_only=True, reads=reads)


@router.post("/revoke", responses=ERRORS, openapi_extra=body(RevokeBody))
async def revoke(request: Request, vault: VaultDep, caller: CallerDep) -> dict[str, int]:
    """Owners revoke any token; a delegator revokes the tokens it issued."""
    require(caller, OWNER, DELEGATOR)
    job = revocation.revoke_job(caller, await read_json(request, vault))
    return {"revoked": await commit(vault, job)}
