"""``dvault subjects sync``: import Open WebUI's users as subjects (idempotent, audited).

Reads ``GET /api/v1/users/all`` with an Open WebUI admin credential (a session JWT or an ``sk-``
key, from ``OPENWEBUI_ADMIN_TOKEN``). A user whose role is ``pending`` is imported as inactive.
Only changes are written, each as a ``subject.upserted`` entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from vault.config import redact_url
from vault.domain import SUBJECT_ROLES, Subject, has_control_characters
from vault.errors import Conflict, InvalidRequest, Unavailable
from vault.ops import subjects
from vault.ops.runtime import Vault
from vault.redact import redact_secrets


@dataclass(frozen=True, slots=True)
class SyncResult:
    seen: int
    created: int
    updated: int
    unchanged: int
    skipped: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
        }


def fetch_users(base_url: str, admin_token: str, *, timeout: float = 30.0) -> list[dict[str, Any]]:
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
    except ValueError:
        raise Unavailable("Open WebUI's user list was not JSON") from None
    users = body.get("users") if isinstance(body, dict) else body
    if not isinstance(users, list):
        raise Unavailable("Open WebUI's user list has an unexpected shape")
    return [u for u in users if isinstance(u, dict)]


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


def sync(vault: Vault, users: list[dict[str, Any]]) -> SyncResult:
    created = updated = unchanged = 0
    skipped: list[str] = []
    for user in users:
        try:
            subject = to_subject(user)
        except InvalidRequest as exc:
            skipped.append(f"{_named(user)}: {exc.description}")
            continue
        try:
            _, outcome = vault.appender.run(subjects.upsert_job(subject, actor=None))
        except Conflict as exc:
            skipped.append(f"{subject.id}: {exc.description}")
            continue
        created += outcome == subjects.CREATED
        updated += outcome == subjects.UPDATED
        unchanged += outcome == subjects.UNCHANGED
    return SyncResult(len(users), created, updated, unchanged, skipped)
