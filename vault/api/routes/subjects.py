"""Subjects: owners upsert; owners and delegators read."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from vault.api.deps import CallerDep, VaultDep, commit, read_json, require
from vault.api.schemas import ERRORS, SubjectBody, body
from vault.domain import DELEGATOR, OWNER
from vault.errors import UnknownSubject
from vault.ops import subjects
from vault.ops.runtime import Vault
from vault.storage import subjects_repo

router = APIRouter(prefix="/v1/subjects", tags=["subjects"])


@router.put(
    "/{subject_id}",
    responses={201: {"description": "Created: the subject was new"}, **ERRORS},
    openapi_extra=body(SubjectBody),
)
async def upsert(
    subject_id: str, request: Request, vault: VaultDep, caller: CallerDep
) -> JSONResponse:
    """Create (201) or replace (200) a subject."""
    require(caller, OWNER)
    subject = subjects.parse_subject(subject_id, await read_json(request, vault))
    stored, outcome = await commit(vault, subjects.upsert_job(subject, actor=caller.id))
    return JSONResponse(stored.to_public(), status_code=201 if outcome == subjects.CREATED else 200)


def _list(vault: Vault, limit: int, after: str | None) -> list[dict[str, Any]]:
    with vault.db.read() as session:
        found = subjects_repo.list_subjects(session, limit=limit, after_id=after)
    return [s.to_public() for s in found]


@router.get("", responses=ERRORS)
async def list_subjects(
    vault: VaultDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(description="Page after this subject id")] = None,
) -> dict[str, Any]:
    require(caller, OWNER, DELEGATOR)
    found = await run_in_threadpool(_list, vault, limit, after)
    return {"subjects": found, "next_after": found[-1]["id"] if len(found) == limit else None}


def _get(vault: Vault, id_or_email: str) -> dict[str, Any]:
    with vault.db.read() as session:
        found = subjects_repo.find_subject(session, id_or_email)
    if found is None:
        raise UnknownSubject("no such subject")
    return found.to_public()


@router.get("/{subject_id}", responses=ERRORS)
async def get_subject(subject_id: str, vault: VaultDep, caller: CallerDep) -> dict[str, Any]:
    """A subject by id or by email."""
    require(caller, OWNER, DELEGATOR)
    return await run_in_threadpool(_get, vault, subject_id)
