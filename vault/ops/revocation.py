"""Revoking delegation tokens: one ``token.revoked`` entry per token, in the revoking commit."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from vault.audit.appender import Job, JobContext
from vault.audit.entry import TOKEN_REVOKED, Draft
from vault.clock import format_ts
from vault.domain import DELEGATOR, OWNER, Principal
from vault.errors import Forbidden, InvalidRequest
from vault.storage import subjects_repo, tokens_repo
from vault.storage.tables import TokenRow

TARGETS = ("jti", "subject", "actor")


def revoke_rows(
    session: Session, ctx: JobContext, rows: list[TokenRow], *, actor: str | None, by: str
) -> None:
    tokens_repo.mark_revoked(session, rows, revoked_at=format_ts(ctx.now))
    for row in rows:
        ctx.record(
            Draft(
                type=TOKEN_REVOKED,
                actor=actor,
                subject=row.subject_id,
                data={"jti": row.jti, "by": by, "token_actor": row.actor_id, "exp": row.exp},
            )
        )


def parse_target(body: Any) -> tuple[str, str]:
    if not isinstance(body, dict):
        raise InvalidRequest('body must be one of {"jti"}, {"subject"}, {"actor"}')
    given = [name for name in TARGETS if body.get(name) is not None]
    if len(given) != 1 or set(body) - set(TARGETS):
        raise InvalidRequest('body must be exactly one of {"jti"}, {"subject"}, {"actor"}')
    value = body[given[0]]
    if not isinstance(value, str) or not value or len(value) > 320:
        raise InvalidRequest(f"{given[0]} must be a non-empty string")
    return given[0], value


def revoke_job(caller: Principal, body: Any) -> Job[int]:
    """Owners revoke anything; a delegator only tokens it issued itself."""
    target, value = parse_target(body)
    is_owner = caller.has(OWNER)
    if not is_owner and not caller.has(DELEGATOR):
        raise Forbidden("only owners and delegators revoke tokens")
    if not is_owner and target == "actor" and value != caller.id:
        raise Forbidden("a delegator revokes only the tokens it issued")

    def job(session: Session, ctx: JobContext) -> int:
        now = int(ctx.now.timestamp())
        own = None if is_owner else caller.id
        if target == "jti":
            token = tokens_repo.get_token(session, value)
            if token is not None and own is not None and token.actor_id != own:
                raise Forbidden("a delegator revokes only the tokens it issued")
            rows = tokens_repo.live_tokens(session, now=now, jti=value)
        elif target == "subject":
            subject = subjects_repo.find_subject(session, value)
            subject_id = value if subject is None else subject.id
            rows = tokens_repo.live_tokens(session, now=now, subject_id=subject_id, actor_id=own)
        else:
            rows = tokens_repo.live_tokens(session, now=now, actor_id=value)
        revoke_rows(session, ctx, rows, actor=caller.id, by=target)
        return len(rows)

    return job
