"""A delegator's policy (SPEC §3) and the issuance decision. Deny by default.

Pinned shape, every member optional::

    {"subject_roles": ["user"], "subjects": null, "scopes": [...], "max_ttl_seconds": 3600}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vault.domain import SUBJECT_ROLES, Subject, has_characters_not_in_text, subject_id_problem
from vault.errors import (
    InvalidRequest,
    InvalidTTL,
    ScopeNotAllowed,
    SubjectInactive,
    SubjectNotAllowed,
)
from vault.policy.scopes import ALL

POLICY_MEMBERS = frozenset({"subject_roles", "subjects", "scopes", "max_ttl_seconds"})
MAX_REASON_CHARS = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class DelegationPolicy:
    subject_roles: tuple[str, ...] = ("user",)
    subjects: tuple[str, ...] | None = None
    scopes: tuple[str, ...] | None = None  # None: every scope but "all"
    max_ttl_seconds: int | None = None  # None: VAULT_MAX_TTL

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject_roles": list(self.subject_roles),
            "subjects": None if self.subjects is None else list(self.subjects),
            "scopes": None if self.scopes is None else list(self.scopes),
            "max_ttl_seconds": self.max_ttl_seconds,
        }

    def allowed_scopes(self, known: tuple[str, ...]) -> tuple[str, ...]:
        if self.scopes is None:
            return tuple(name for name in known if name != ALL)
        return tuple(name for name in self.scopes if name in known)

    def max_ttl(self, vault_max_ttl: int) -> int:
        if self.max_ttl_seconds is None:
            return vault_max_ttl
        return min(self.max_ttl_seconds, vault_max_ttl)


def _str_list(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidRequest(f"policy {name} must be a list of non-empty strings")
    return tuple(dict.fromkeys(value))


def _check_subject_ids(subject_ids: tuple[str, ...]) -> None:
    """Each must be able to be a subject's id: the policy is audited as it is written, so a
    credential or a token in it must be refused, never recorded."""
    for subject_id in subject_ids:
        problem = subject_id_problem(subject_id)
        if problem is not None:
            raise InvalidRequest(f"policy subjects: an id {problem}")


def parse_policy(
    obj: Any, *, known_scopes: tuple[str, ...], vault_max_ttl: int, stored: bool = False
) -> DelegationPolicy:
    """Validate a policy document; raise ``InvalidRequest`` with what is wrong.

    ``stored=True`` reads a policy accepted earlier: a scope since dropped from the scope table
    or a max TTL above a since-lowered ``VAULT_MAX_TTL`` no longer fails it; ``decide`` grants
    neither (unknown scopes are never allowed, the TTL is capped by the vault's maximum).
    """
    if obj is None:
        return DelegationPolicy()
    if not isinstance(obj, dict):
        raise InvalidRequest("policy must be a JSON object")
    extra = sorted(set(obj) - POLICY_MEMBERS)
    if extra:
        raise InvalidRequest(f"unknown policy member(s): {', '.join(extra)}")
    roles: tuple[str, ...] = ("user",)
    if obj.get("subject_roles") is not None:
        roles = _str_list(obj["subject_roles"], "subject_roles")
        bad = [r for r in roles if r not in SUBJECT_ROLES or r == "pending"]
        if bad:
            raise InvalidRequest(f"policy subject_roles may hold only admin and user, not {bad}")
    subjects = None
    if obj.get("subjects") is not None:
        subjects = _str_list(obj["subjects"], "subjects")
        if not stored:
            _check_subject_ids(subjects)
    scopes = None
    if obj.get("scopes") is not None:
        scopes = _str_list(obj["scopes"], "scopes")
        unknown = [s for s in scopes if s not in known_scopes]
        if unknown and not stored:
            raise InvalidRequest(f"policy names unknown scope(s): {' '.join(unknown)}")
    max_ttl = obj.get("max_ttl_seconds")
    if max_ttl is not None:
        if not isinstance(max_ttl, int) or isinstance(max_ttl, bool) or max_ttl < 1:
            raise InvalidRequest("policy max_ttl_seconds must be a positive integer")
        if max_ttl > vault_max_ttl and not stored:
            raise InvalidRequest(
                f"policy max_ttl_seconds {max_ttl} exceeds VAULT_MAX_TTL ({vault_max_ttl})"
            )
    return DelegationPolicy(
        subject_roles=roles, subjects=subjects, scopes=scopes, max_ttl_seconds=max_ttl
    )


@dataclass(frozen=True, slots=True)
class Grant:
    scope: tuple[str, ...]
    ttl_seconds: int


def decide(
    policy: DelegationPolicy,
    subject: Subject,
    *,
    scope: tuple[str, ...],
    ttl_seconds: int | None,
    known_scopes: tuple[str, ...],
    default_ttl: int,
    vault_max_ttl: int,
) -> Grant:
    """May this delegator get a token for ``subject`` with ``scope`` and ``ttl_seconds``?"""
    if not subject.active or subject.role == "pending":
        raise SubjectInactive("the subject is not an active user")
    if subject.role not in policy.subject_roles:
        raise SubjectNotAllowed(f"this delegator may not act for {subject.role} subjects")
    if policy.subjects is not None and subject.id not in policy.subjects:
        raise SubjectNotAllowed("this delegator may not act for this subject")
    allowed = policy.allowed_scopes(known_scopes)
    refused = [name for name in scope if name not in allowed]
    if refused:
        raise ScopeNotAllowed(f"scope not allowed for this delegator: {' '.join(refused)}")
    limit = policy.max_ttl(vault_max_ttl)
    if ttl_seconds is None:
        ttl_seconds = min(default_ttl, limit)
    if ttl_seconds < 1:
        raise InvalidTTL("ttl_seconds must be at least 1")
    if ttl_seconds > limit:
        raise InvalidTTL(f"ttl_seconds {ttl_seconds} exceeds this delegator's maximum of {limit}")
    return Grant(scope=scope, ttl_seconds=ttl_seconds)


def check_reason(reason: str | None, *, required: bool) -> str | None:
    if reason is None or reason == "":
        if required:
            raise InvalidRequest("reason is required (1-500 characters)")
        return None
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidRequest(f"reason must be at most {MAX_REASON_CHARS} characters")
    if not reason.strip():
        raise InvalidRequest("reason must not be blank")
    if has_characters_not_in_text(reason):
        raise InvalidRequest(
            "reason must not hold control characters or line separators (tab and newline may)"
        )
    return reason
