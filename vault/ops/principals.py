"""Principals: create, list, change policy, disable (revoking their tokens), add credentials."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from vault.audit.appender import Job, JobContext
from vault.audit.entry import (
    CREDENTIAL_CREATED,
    POLICY_CHANGED,
    PRINCIPAL_CREATED,
    PRINCIPAL_DISABLED,
    Draft,
)
from vault.clock import format_ts
from vault.domain import OWNER, ROLES, Principal, Subject, has_control_characters
from vault.errors import Conflict, InvalidRequest, NotFound, VaultError
from vault.ops.credentials import new_credential, secret_hash
from vault.ops.revocation import revoke_rows
from vault.policy.delegation import DelegationPolicy, decide, parse_policy
from vault.redact import looks_secret
from vault.storage import principals_repo, subjects_repo, tokens_repo
from vault.storage.tables import TokenRow

MAX_NAME_CHARS = 200


@dataclass(frozen=True, slots=True)
class NewCredential:
    principal: Principal
    credential_id: str
    credential: str  # shown once, never stored


def check_roles(roles: Any) -> tuple[str, ...]:
    if not isinstance(roles, list | tuple) or not roles:
        raise InvalidRequest(f"roles must be a non-empty list of {', '.join(ROLES)}")
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise InvalidRequest(f"unknown role(s) {bad}: roles are {', '.join(ROLES)}")
    return tuple(dict.fromkeys(roles))


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
        raise InvalidRequest(f"name must be 1-{MAX_NAME_CHARS} characters")
    if has_control_characters(name):
        raise InvalidRequest("name must not hold control characters")
    if looks_secret(name):
        raise InvalidRequest("name looks like it holds a credential or token; it was refused")
    return name


def _add_credential(
    session: Session, ctx: JobContext, principal: Principal, actor: str | None
) -> NewCredential:
    credential = new_credential()
    credential_id = "c_" + secrets.token_hex(8)
    principals_repo.insert_credential(
        session,
        credential_id=credential_id,
        principal_id=principal.id,
        secret_hash=secret_hash(credential),
        created_at=format_ts(ctx.now),
    )
    ctx.record(
        Draft(
            type=CREDENTIAL_CREATED,
            actor=actor,
            subject=None,
            data={"principal_id": principal.id, "credential_id": credential_id},
        )
    )
    return NewCredential(principal, credential_id, credential)


def create_job(
    *,
    name: Any,
    roles: Any,
    policy: Any,
    actor: str | None,
    known_scopes: tuple[str, ...],
    max_ttl: int,
) -> Job[NewCredential]:
    checked_name = check_name(name)
    checked_roles = check_roles(roles)
    checked_policy = parse_policy(
        policy, known_scopes=known_scopes, vault_max_ttl=max_ttl
    ).to_dict()

    def job(session: Session, ctx: JobContext) -> NewCredential:
        _named_by_id(session, checked_policy)
        principal = Principal(
            id="p_" + secrets.token_hex(8),
            name=checked_name,
            roles=checked_roles,
            policy=checked_policy,
            disabled=False,
            created_at=format_ts(ctx.now),
        )
        principals_repo.insert_principal(session, principal)
        ctx.record(
            Draft(
                type=PRINCIPAL_CREATED,
                actor=actor,
                subject=None,
                data={
                    "principal_id": principal.id,
                    "name": principal.name,
                    "roles": list(principal.roles),
                    "policy": principal.policy,
                },
            )
        )
        return _add_credential(session, ctx, principal, actor)

    return job


def _named_by_id(session: Session, policy: dict[str, Any]) -> None:
    """A policy's ``subjects`` allow-list holds subject ids (SPEC §3), and tokens are matched
    against it by id: an entry that is the email of a known subject, not an id, would allow
    nobody, so it is refused with the id to use. (An entry naming no known subject is kept: the
    subject may be synced from Open WebUI later.)"""
    for entry in policy.get("subjects") or ():
        if subjects_repo.get_subject(session, entry) is not None:
            continue
        owner = subjects_repo.email_owner(session, entry) if "@" in entry else None
        if owner is not None:
            raise InvalidRequest(
                f"policy subjects are subject ids: {entry!r} is the email of subject {owner!r}"
            )


def _existing(session: Session, principal_id: str) -> Principal:
    principal = principals_repo.get_principal(session, principal_id)
    if principal is None:
        raise NotFound("no such principal")
    return principal


def add_credential_job(principal_id: str, *, actor: str | None) -> Job[NewCredential]:
    def job(session: Session, ctx: JobContext) -> NewCredential:
        principal = _existing(session, principal_id)
        if principal.disabled:
            raise InvalidRequest("the principal is disabled")
        return _add_credential(session, ctx, principal, actor)

    return job


def set_policy_job(
    principal_id: str,
    policy: Any,
    *,
    actor: str | None,
    known_scopes: tuple[str, ...],
    max_ttl: int,
) -> Job[Principal]:
    parsed = parse_policy(policy, known_scopes=known_scopes, vault_max_ttl=max_ttl)
    checked = parsed.to_dict()

    def job(session: Session, ctx: JobContext) -> Principal:
        before = _existing(session, principal_id)
        _named_by_id(session, checked)
        if before.policy == checked:  # nothing changes: no entry, as for a subject
            return before
        principals_repo.set_policy(session, principal_id, checked)
        ctx.record(
            Draft(
                type=POLICY_CHANGED,
                actor=actor,
                subject=None,
                data={"principal_id": principal_id, "policy": checked, "previous": before.policy},
            )
        )
        outside = _outside(session, ctx, principal_id, parsed, known_scopes, max_ttl)
        revoke_rows(session, ctx, outside, actor=actor, by=POLICY_NARROWED)
        return _existing(session, principal_id)

    return job


POLICY_NARROWED = "policy_changed"  # why tokens were revoked (``token.revoked`` ``by``)


def _outside(
    session: Session,
    ctx: JobContext,
    principal_id: str,
    policy: DelegationPolicy,
    known_scopes: tuple[str, ...],
    max_ttl: int,
) -> list[TokenRow]:
    """The delegator's live tokens that ``policy`` would not issue now (for whom, with what
    scope): revoked, not only refused while it lasts (widened again, it would give them back).
    A token of a subject that is gone or not active is left: that is no matter of the policy."""
    found: list[TokenRow] = []
    subjects: dict[str, Subject | None] = {}
    now = int(ctx.now.timestamp())
    for row in tokens_repo.live_tokens(session, now=now, actor_id=principal_id):
        if row.subject_id not in subjects:
            subjects[row.subject_id] = subjects_repo.get_subject(session, row.subject_id)
        subject = subjects[row.subject_id]
        if subject is None or not subject.active:
            continue
        try:
            decide(
                policy,
                subject,
                scope=tuple(row.scope.split()),
                ttl_seconds=1,
                known_scopes=known_scopes,
                default_ttl=1,
                vault_max_ttl=max_ttl,
            )
        except VaultError:
            found.append(row)
    return found


def disable_job(principal_id: str, *, actor: str | None) -> Job[dict[str, Any]]:
    def job(session: Session, ctx: JobContext) -> dict[str, Any]:
        principal = _existing(session, principal_id)
        if principal.disabled:
            return {"principal": principal.to_public(), "revoked": 0}
        if principal.has(OWNER) and not any(
            other.has(OWNER) and not other.disabled and other.id != principal_id
            for other in principals_repo.list_principals(session)
        ):
            raise Conflict("the last enabled owner cannot be disabled: make another owner first")
        principals_repo.set_disabled(session, principal_id)
        rows = tokens_repo.live_tokens(session, now=int(ctx.now.timestamp()), actor_id=principal_id)
        ctx.record(
            Draft(
                type=PRINCIPAL_DISABLED,
                actor=actor,
                subject=None,
                data={"principal_id": principal_id, "revoked": len(rows)},
            )
        )
        revoke_rows(session, ctx, rows, actor=actor, by="principal_disabled")
        return {"principal": _existing(session, principal_id).to_public(), "revoked": len(rows)}

    return job


def list_all(session: Session) -> list[Principal]:
    return principals_repo.list_principals(session)
