"""Subjects: upsert (audited), read, list."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlmodel import Session

from vault.audit.appender import Job, JobContext
from vault.audit.entry import SUBJECT_UPSERTED, Draft
from vault.clock import format_ts
from vault.domain import SUBJECT_ROLES, Subject, has_control_characters, subject_id_problem
from vault.errors import Conflict, InvalidRequest
from vault.ops.revocation import revoke_rows
from vault.redact import looks_secret
from vault.storage import subjects_repo, tokens_repo

MAX_FIELD_CHARS = 320


def _text(body: dict[str, Any], name: str, *, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_FIELD_CHARS:
        raise InvalidRequest(f"{name} must be a string of 1-{MAX_FIELD_CHARS} characters")
    if has_control_characters(value):
        raise InvalidRequest(f"{name} must not hold control characters")
    if looks_secret(value):
        raise InvalidRequest(f"{name} looks like it holds a credential or token; it was refused")
    return value.strip()


def parse_subject(subject_id: str, body: Any) -> Subject:
    if subject_id != subject_id.strip():
        raise InvalidRequest("subject id must be 1-320 characters without surrounding spaces")
    problem = subject_id_problem(subject_id)
    if problem is not None:
        raise InvalidRequest(f"subject id {problem}")
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    extra = sorted(set(body) - {"id", "email", "name", "role", "active"})
    if extra:
        raise InvalidRequest(f"unknown member(s): {', '.join(extra)}")
    if body.get("id", subject_id) != subject_id:
        raise InvalidRequest("the id in the body differs from the id in the path")
    email = _text(body, "email")
    if "@" not in email or " " in email:
        raise InvalidRequest("email must be an email address")
    role = body.get("role", "user")
    if role not in SUBJECT_ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(SUBJECT_ROLES)}")
    active = body.get("active", True)
    if not isinstance(active, bool):
        raise InvalidRequest("active must be true or false")
    name = _text(body, "name", default=email)
    return Subject(id=subject_id, email=email.lower(), name=name, role=role, active=active)


CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"
SUBJECT_CHANGED = "subject_changed"  # why its tokens were revoked (``token.revoked`` ``by``)


def upsert_job(
    subject: Subject, *, actor: str | None, keep_deactivated: bool = False
) -> Job[tuple[Subject, str]]:
    """Insert or replace; returns the subject as stored and created/updated/unchanged (no entry
    then).

    ``keep_deactivated`` (``subjects sync``): a subject that is inactive here though its role is
    not ``pending`` was deactivated in the vault (by an owner, or by a sync that no longer saw
    it in the app), and stays inactive whatever the app says: a sync never undoes that, nor
    stores the app's ``pending`` for it (a later approval in the app would then look like the
    first one). Only an owner's upsert activates it again."""

    def job(session: Session, ctx: JobContext) -> tuple[Subject, str]:
        return _upsert(session, ctx, subject, actor=actor, keep_deactivated=keep_deactivated)

    return job


def deactivate_job(subject_id: str, *, actor: str | None, unchanged_since: str) -> Job[bool]:
    """Make a subject inactive (``subjects sync``, for a user gone from the app); True if it
    was active. Its tokens are refused from then on, as for any inactive subject. Only if its
    row was not written since ``unchanged_since`` (a canonical UTC time: when the app's list
    was read), checked under the chain lock: a subject created or changed meanwhile (another
    sync, an owner) is not judged by a list older than it."""

    def job(session: Session, ctx: JobContext) -> bool:
        before = subjects_repo.get_subject(session, subject_id)
        if before is None or not before.active:
            return False
        written = subjects_repo.updated_at(session, subject_id)
        if written is None or written >= unchanged_since:
            return False
        _upsert(session, ctx, replace(before, active=False), actor=actor)
        return True

    return job


def _upsert(
    session: Session,
    ctx: JobContext,
    subject: Subject,
    *,
    actor: str | None,
    keep_deactivated: bool = False,
) -> tuple[Subject, str]:
    owner = subjects_repo.email_owner(session, subject.email)
    if owner is not None and owner != subject.id:
        raise Conflict("another subject has this email")
    # A subject may be named by id or by email: neither may name two subjects.
    if "@" in subject.id:
        owner = subjects_repo.email_owner(session, subject.id)
        if owner is not None and owner != subject.id:
            raise Conflict("another subject has this id as its email")
    before = subjects_repo.get_subject(session, subject.id)
    # Names resolve by id, else by email, case aside (``find_subject``): an id that is this
    # (stored, lower-case) email but for case would make that name mean two subjects. Checked
    # when the email is new (the check reads every id with an "@"): a sync of unchanged users
    # reads none.
    new_email = before is None or before.email != subject.email.lower()
    if new_email and any(
        other != subject.id for other in subjects_repo.ids_folding_to(session, subject.email)
    ):
        raise Conflict("this email is another subject's id")
    if keep_deactivated and before is not None and not before.active and before.role != "pending":
        # Deactivated in the vault: it stays so, and keeps what marks it so (a role that is not
        # ``pending``): were the app's ``pending`` stored, its approval there would undo it.
        role = before.role if subject.role == "pending" else subject.role
        subject = replace(subject, role=role, active=False)
    if before == subject:
        return subject, UNCHANGED
    subjects_repo.upsert_subject(session, subject, updated_at=format_ts(ctx.now))
    ctx.record(
        Draft(
            type=SUBJECT_UPSERTED,
            actor=actor,
            subject=subject.id,
            data={
                **subject.to_public(),
                "previous": None if before is None else before.to_public(),
            },
        )
    )
    if before is not None and before.active and (not subject.active or subject.role != before.role):
        # Its tokens were issued for what it no longer is: revoked, not only refused while
        # this lasts (activated again, or its role put back, it would have them back).
        now = int(ctx.now.timestamp())
        live = tokens_repo.live_tokens(session, now=now, subject_id=subject.id)
        revoke_rows(session, ctx, live, actor=actor, by=SUBJECT_CHANGED)
    return subject, CREATED if before is None else UPDATED
