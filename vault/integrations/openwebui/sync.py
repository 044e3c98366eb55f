"""``dvault subjects sync``: import Open WebUI's users as subjects (idempotent, audited).

Reads ``GET /api/v1/users/all`` with an Open WebUI admin credential (a session JWT or an ``sk-``
key, from ``OPENWEBUI_ADMIN_TOKEN``). A user whose role is ``pending`` is imported as inactive.
Only changes are written, each as a ``subject.upserted`` entry.

A sync never activates a subject deactivated in the vault (inactive, its role not ``pending``:
an owner's decision, or a user gone from Open WebUI); it is reported as ``kept_inactive``. When
Open WebUI's answer says it lists every user (its ``total``), the active subjects it does not
list (users deleted there) are deactivated, and counted as ``deactivated``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from vault.clock import SystemClock, format_ts
from vault.config import redact_url
from vault.domain import SUBJECT_ROLES, Subject, has_control_characters
from vault.errors import Conflict, InvalidRequest, Unavailable
from vault.ops import subjects
from vault.ops.runtime import Vault
from vault.redact import redact_secrets
from vault.storage import subjects_repo

PAGE = 1000


@dataclass(frozen=True, slots=True)
class SyncResult:
    seen: int
    created: int
    updated: int
    unchanged: int
    skipped: list[str]
    kept_inactive: list[str] = field(default_factory=list)
    deactivated: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "kept_inactive": self.kept_inactive,
            "deactivated": self.deactivated,
        }


@dataclass(frozen=True, slots=True)
class UserList:
    users: list[dict[str, Any]]
    complete: bool  # Open WebUI said how many users it has, and listed that many, each by id
    listed_at: str = ""  # when it was read (canonical UTC); "" means long ago
    unreadable: int = 0  # entries of the list that are not user objects


def fetch_users(base_url: str, admin_token: str, *, timeout: float = 30.0) -> UserList:
    """Open WebUI's users. ``complete`` only if its answer says how many users it has, lists
    that many, each with an id of its own: only then may a user missing from it be taken as
    deleted there."""
    listed_at = format_ts(SystemClock().now())  # before the request: the list is at least this old
    url = base_url.rstrip("/") + "/api/v1/users/all"
    try:
        response = httpx.get(
            url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=timeout
        )
    except httpx.InvalidURL:  # its text may quote a password in the URL: not shown
        raise InvalidRequest(f"not a URL: {redact_url(base_url)}") from None
    except httpx.HTTPError as exc:
        shown = redact_url(base_url)
        raise Unavailable(f"cannot reach Open WebUI at {shown}: {type(exc).__name__}") from None
    if response.status_code in (401, 403):
        raise InvalidRequest(
            f"Open WebUI refused the admin credential (HTTP {response.status_code})"
        )
    if response.status_code != 200:
        raise Unavailable(f"Open WebUI answered HTTP {response.status_code} for {redact_url(url)}")
    try:
        body = response.json()
    except (ValueError, RecursionError):
        raise Unavailable("Open WebUI's user list was not JSON") from None
    users = body.get("users") if isinstance(body, dict) else body
    if not isinstance(users, list):
        raise Unavailable("Open WebUI's user list has an unexpected shape")
    listed = [u for u in users if isinstance(u, dict)]
    total = body.get("total") if isinstance(body, dict) else None
    ids = [u.get("id") for u in listed]
    # An empty list is never whole: it would not even name the admin whose credential read it.
    complete = (
        type(total) is int
        and total == len(listed) == len(users) > 0
        and all(isinstance(i, str) and i for i in ids)
        and len(set(ids)) == len(ids)
    )
    unreadable = len(users) - len(listed)
    return UserList(listed, complete=complete, listed_at=listed_at, unreadable=unreadable)


def to_subject(user: dict[str, Any]) -> Subject:
    role = user.get("role")
    if role not in SUBJECT_ROLES:
        raise InvalidRequest(f"unknown Open WebUI role {role!r}")
    name = user.get("name")
    if isinstance(name, str):  # a display name is shown, not matched: controls become spaces
        name = "".join(" " if has_control_characters(ch) else ch for ch in name).strip()
    body = {"email": user.get("email"), "name": name or user.get("email"), "role": role}
    body["active"] = role != "pending"
    user_id = user.get("id")
    if not isinstance(user_id, str):
        raise InvalidRequest("the user's id is not a string")
    return subjects.parse_subject(user_id, body)


def _named(user: dict[str, Any]) -> str:
    """A skipped user, as the report names it: its id, shortened, with no secret in it."""
    return redact_secrets(repr(user.get("id")))[:80]  # redacted first: a cut could split one


def sync(vault: Vault, listed: UserList) -> SyncResult:
    created = updated = unchanged = deactivated = 0
    skipped: list[str] = []
    kept: list[str] = []
    # a user the list names that could not be read as a subject, or an entry that is no user
    invalid = listed.unreadable > 0
    if invalid:
        skipped.append(f"{listed.unreadable} entries of the list are not user objects")
    seen: set[Any] = {user.get("id") for user in listed.users}
    for user in listed.users:
        try:
            subject = to_subject(user)
        except InvalidRequest as exc:
            skipped.append(f"{_named(user)}: {exc.description}")
            invalid = True
            continue
        job = subjects.upsert_job(subject, actor=None, keep_deactivated=True)
        try:
            stored, outcome = vault.appender.run(job)
        except Conflict as exc:
            skipped.append(f"{subject.id}: {exc.description}")
            continue
        if subject.active and not stored.active:
            kept.append(subject.id)
        created += outcome == subjects.CREATED
        updated += outcome == subjects.UPDATED
        unchanged += outcome == subjects.UNCHANGED
    # A missing user is gone only from a list that is whole (else it may be on another page,
    # or be one whose entry could not be read), and only for a subject not written since the
    # list was read.
    if listed.complete and listed.listed_at and not invalid:
        for subject_id in _active_subjects(vault):
            if subject_id not in seen:
                gone = subjects.deactivate_job(
                    subject_id, actor=None, unchanged_since=listed.listed_at
                )
                deactivated += vault.appender.run(gone)
    return SyncResult(len(listed.users), created, updated, unchanged, skipped, kept, deactivated)


def _active_subjects(vault: Vault) -> list[str]:
    found: list[str] = []
    after: str | None = None
    while True:
        with vault.db.read() as session:
            page = subjects_repo.list_subjects(session, limit=PAGE, after_id=after)
        found += [subject.id for subject in page if subject.active]
        if len(page) < PAGE:
            return found
        after = page[-1].id
