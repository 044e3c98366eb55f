"""The audit log over HTTP: query, export, checkpoints, verification (auditor, owner)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from itertools import chain
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Send

from vault.api.deps import CallerDep, VaultDep, no_body, require
from vault.api.errors import classify
from vault.api.schemas import ERRORS
from vault.audit.semantics import SemanticChecker
from vault.clock import format_ts
from vault.domain import AUDITOR, OWNER
from vault.errors import AmbiguousSubject, InvalidRequest, NotFound
from vault.ops import audit
from vault.storage import audit_repo, subjects_repo
from vault.storage.engine import Database

log = logging.getLogger("vault.api")

router = APIRouter(prefix="/v1/audit", tags=["audit"])


def _moment(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return format_ts(moment)
    except (ValueError, OverflowError):
        raise InvalidRequest(
            f"{name} must be an ISO 8601 time, e.g. 2026-11-27T17:00:00Z"
        ) from None


def _subject_id(db: Database, named: str) -> str:
    """Entries name a subject by its id; a request may name it by its email too (SPEC §4): the
    id of the subject with that email, if one has it (and none has it as its id). A name that
    is one subject's id and another's email is taken as the id: the log stays searchable by
    every id."""
    with db.read() as session:
        try:
            found = subjects_repo.find_subject(session, named)
        except AmbiguousSubject:
            return named
    return named if found is None else found.id


@router.get("/entries", responses=ERRORS)
async def entries(
    vault: VaultDep,
    caller: CallerDep,
    after_seq: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    type: Annotated[str | None, Query()] = None,
    actor: Annotated[str | None, Query()] = None,
    subject: Annotated[str | None, Query()] = None,
    jti: Annotated[str | None, Query()] = None,
    since: Annotated[str | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[str | None, Query(description="ISO 8601, exclusive")] = None,
) -> dict[str, Any]:
    """Entries in seq order. ``next_after_seq`` is set when a full page came back."""
    require(caller, AUDITOR, OWNER)
    for name, value in (("type", type), ("actor", actor), ("subject", subject), ("jti", jti)):
        if value is not None and ("\x00" in value or len(value) > 320):
            raise InvalidRequest(f"{name} must be at most 320 characters, without NUL")
    if subject is not None and "@" in subject:
        subject = await run_in_threadpool(_subject_id, vault.db, subject)
    flt = audit_repo.EntryFilter(
        after_seq=after_seq,
        limit=limit,
        type=type,
        actor=actor,
        subject=subject,
        jti=jti,
        since=_moment("since", since),
        until=_moment("until", until),
    )
    found = await run_in_threadpool(audit_repo.query_entries, vault.db, flt)
    return {
        "entries": [entry.to_dict() for entry in found],
        "next_after_seq": found[-1].seq if len(found) == limit else None,
    }


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        200: {
            "description": "Every entry, then the checkpoints: one JSON object per line.",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        },
    },
)
async def export(vault: VaultDep, caller: CallerDep) -> StreamingResponse:
    """Every entry in order, then the checkpoints; NDJSON, streamed."""
    require(caller, AUDITOR, OWNER)
    lines = audit.export_lines(vault.db)
    # The first lines are read before the answer starts, so a log that cannot be read from its
    # start (an entry of the wrong type, the database down) is an error answer, not a 200.
    first = await run_in_threadpool(next, lines, "")
    return _Export(
        chain((first,), lines),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="audit-export.jsonl"'},
    )


class _Export(StreamingResponse):
    """A stream that is never ended as if it were whole. Once the status line has gone, an
    entry that cannot be read (a hand-edited row, the database gone) is logged, without a
    traceback, and the connection is closed without the last chunk: the client sees a broken
    transfer (curl exits 18), never a shorter log that looks complete."""

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        try:
            async for chunk in self.body_iterator:
                body = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
                await send({"type": "http.response.body", "body": body, "more_body": True})
        except OSError:
            raise  # the client went away: Starlette's own handling
        except Exception as exc:  # logged, then the stream is cut
            _status, code, _description = classify(exc)  # logs what went wrong, in one line
            log.error("audit export cut short: %s; the client sees a broken transfer", code)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _latest(vault: Any) -> dict[str, Any]:
    with vault.db.read() as session:
        found = audit_repo.latest_checkpoint(session)
    if found is None:
        raise NotFound("no checkpoint has been made yet")
    return found.to_dict()


@router.get("/checkpoint", responses=ERRORS)
async def latest_checkpoint(vault: VaultDep, caller: CallerDep) -> dict[str, Any]:
    """The latest signed checkpoint: save it, and later check the log against it."""
    require(caller, AUDITOR, OWNER)
    return await run_in_threadpool(_latest, vault)


@router.post("/checkpoint", status_code=201, responses=ERRORS)
async def make_checkpoint(request: Request, vault: VaultDep, caller: CallerDep) -> JSONResponse:
    """Sign the head of the log now."""
    require(caller, OWNER)
    await no_body(request, vault)
    checkpoint = await run_in_threadpool(vault.appender.checkpoint_now, caller.id)
    return JSONResponse(checkpoint.to_dict(), status_code=201)


@router.get("/verify", responses=ERRORS)
async def verify(vault: VaultDep, caller: CallerDep) -> dict[str, Any]:
    """Check the whole chain, every checkpoint and the log's meaning; report the first bad seq."""
    require(caller, AUDITOR, OWNER)
    report = await run_in_threadpool(
        audit.verify_database,
        vault.db,
        semantics=SemanticChecker(scopes=vault.scopes),
        checkpoint_log=vault.checkpoint_log,
        keys=vault.keys.audit_key,  # the audit keys this vault made, not any row in its tables
    )
    return report.to_dict()
