"""Principals (owner only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from vault.api.deps import CallerDep, VaultDep, commit, no_body, read_json, require
from vault.api.schemas import ERRORS, Policy, PrincipalBody, body
from vault.domain import OWNER
from vault.errors import InvalidRequest
from vault.ops import principals
from vault.ops.principals import NewCredential

router = APIRouter(prefix="/v1/principals", tags=["principals"])


def _created(new: NewCredential) -> JSONResponse:
    return JSONResponse(
        {
            **new.principal.to_public(),
            "credential_id": new.credential_id,
            "credential": new.credential,
        },
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


@router.post("", status_code=201, responses=ERRORS, openapi_extra=body(PrincipalBody))
async def create(request: Request, vault: VaultDep, caller: CallerDep) -> JSONResponse:
    """Create a principal; its credential is in this response and never again."""
    require(caller, OWNER)
    payload = await read_json(request, vault)
    if not isinstance(payload, dict):
        raise InvalidRequest("body must be a JSON object")
    extra = sorted(set(payload) - {"name", "roles", "policy"})
    if extra:
        raise InvalidRequest(f"unknown member(s): {', '.join(extra)}")
    job = principals.create_job(
        name=payload.get("name"),
        roles=payload.get("roles"),
        policy=payload.get("policy"),
        actor=caller.id,
        known_scopes=vault.scopes.names,
        max_ttl=vault.settings.max_ttl,
    )
    return _created(await commit(vault, job))


def _list(vault: Any) -> list[dict[str, Any]]:
    with vault.db.read() as session:
        return [p.to_public() for p in principals.list_all(session)]


@router.get("", responses=ERRORS)
async def list_principals(vault: VaultDep, caller: CallerDep) -> dict[str, Any]:
    require(caller, OWNER)
    return {"principals": await run_in_threadpool(_list, vault)}


@router.put("/{principal_id}/policy", responses=ERRORS, openapi_extra=body(Policy))
async def set_policy(
    principal_id: str, request: Request, vault: VaultDep, caller: CallerDep
) -> dict[str, Any]:
    """Replace the delegation policy."""
    require(caller, OWNER)
    policy = await read_json(request, vault)
    if not isinstance(policy, dict):  # ``null`` would put the defaults back: say so with {}
        raise InvalidRequest("body must be a policy, a JSON object ({} for the defaults)")
    job = principals.set_policy_job(
        principal_id,
        policy,
        actor=caller.id,
        known_scopes=vault.scopes.names,
        max_ttl=vault.settings.max_ttl,
    )
    return (await commit(vault, job)).to_public()


@router.post("/{principal_id}/disable", responses=ERRORS)
async def disable(
    principal_id: str, request: Request, vault: VaultDep, caller: CallerDep
) -> dict[str, Any]:
    """Disable the principal: its credentials stop working and its live tokens are revoked."""
    require(caller, OWNER)
    await no_body(request, vault)
    result = await commit(vault, principals.disable_job(principal_id, actor=caller.id))
    return {**result["principal"], "revoked": result["revoked"]}


@router.post("/{principal_id}/credentials", status_code=201, responses=ERRORS)
async def add_credential(
    principal_id: str, request: Request, vault: VaultDep, caller: CallerDep
) -> JSONResponse:
    """Issue an extra credential (shown once)."""
    require(caller, OWNER)
    await no_body(request, vault)
    new = await commit(vault, principals.add_credential_job(principal_id, actor=caller.id))
    return JSONResponse(
        {
            "principal_id": new.principal.id,
            "credential_id": new.credential_id,
            "credential": new.credential,
        },
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )
