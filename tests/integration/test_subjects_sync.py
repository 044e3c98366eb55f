"""``subjects sync`` against the vault's state: what an owner decided holds, and users gone from
Open WebUI stop being subjects anyone can act for. The user lists are what Open WebUI's
``GET /api/v1/users/all`` answers (data; the HTTP exchange itself is tested end to end)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support import AsgiServer, FixedAnswer
from vault.clock import SystemClock, format_ts
from vault.errors import Unavailable
from vault.integrations.openwebui.sync import UserList, fetch_users, sync
from vault.ops import subjects
from vault.ops.runtime import Vault
from vault.storage import subjects_repo


def user(uid: str, role: str = "user") -> dict[str, Any]:
    return {"id": uid, "email": f"{uid}@example.com", "name": uid.upper(), "role": role}


def listed(*users: dict[str, Any], complete: bool = True) -> UserList:
    """A list as Open WebUI answered it now (its read time taken now, as ``fetch_users`` does)."""
    return UserList(list(users), complete=complete, listed_at=format_ts(SystemClock().now()))


def stored(vault: Vault, uid: str) -> tuple[str, bool] | None:
    with vault.db.read() as session:
        found = subjects_repo.get_subject(session, uid)
    return None if found is None else (found.role, found.active)


def owner_sets(vault: Vault, uid: str, *, active: bool) -> None:
    subject = subjects.parse_subject(uid, {**user(uid), "active": active})
    vault.appender.run(subjects.upsert_job(subject, actor="owner-1"))


def test_a_sync_never_undoes_an_owners_deactivation(vault: Vault) -> None:
    sync(vault, listed(user("u-1"), user("u-2")))
    owner_sets(vault, "u-1", active=False)  # to stop every delegation for this user

    result = sync(vault, listed(user("u-1"), user("u-2")))

    assert stored(vault, "u-1") == ("user", False)
    assert result.kept_inactive == ["u-1"]
    assert (result.updated, result.unchanged) == (0, 2)
    owner_sets(vault, "u-1", active=True)  # only an owner activates it again
    assert sync(vault, listed(user("u-1"), user("u-2"))).kept_inactive == []
    assert stored(vault, "u-1") == ("user", True)


def test_an_owners_deactivation_outlasts_pending_and_approval_in_open_webui(
    vault: Vault,
) -> None:
    """Open WebUI's admin makes the user ``pending`` and approves them again: to a sync that
    stored ``pending``, the approval would look like a new user's, and undo the owner."""
    sync(vault, listed(user("u-1")))
    owner_sets(vault, "u-1", active=False)

    assert sync(vault, listed(user("u-1", "pending"))).kept_inactive == []  # inactive there too
    assert stored(vault, "u-1") == ("user", False)
    result = sync(vault, listed(user("u-1", "user")))

    assert stored(vault, "u-1") == ("user", False)
    assert result.kept_inactive == ["u-1"]
    assert sync(vault, listed(user("u-1", "admin"))).kept_inactive == ["u-1"]
    assert stored(vault, "u-1") == ("admin", False)  # other roles are the app's, still inactive


def test_a_pending_user_approved_in_open_webui_is_activated(vault: Vault) -> None:
    sync(vault, listed(user("u-1", "pending")))
    assert stored(vault, "u-1") == ("pending", False)

    result = sync(vault, listed(user("u-1", "user")))

    assert stored(vault, "u-1") == ("user", True)
    assert (result.updated, result.kept_inactive) == (1, [])


def test_users_deleted_in_open_webui_are_deactivated(vault: Vault) -> None:
    sync(vault, listed(user("u-1"), user("u-2"), user("u-3", "admin")))

    result = sync(vault, listed(user("u-2")))

    assert result.deactivated == 2
    assert stored(vault, "u-1") == ("user", False)
    assert stored(vault, "u-3") == ("admin", False)
    assert stored(vault, "u-2") == ("user", True)
    again = sync(vault, listed(user("u-2")))  # idempotent
    assert (again.deactivated, again.unchanged) == (0, 1)


def test_an_incomplete_list_deactivates_no_one(vault: Vault) -> None:
    """Only when Open WebUI said it listed every user (its ``total``) is a missing user gone."""
    sync(vault, listed(user("u-1"), user("u-2")))

    result = sync(vault, listed(user("u-2"), complete=False))

    assert result.deactivated == 0
    assert stored(vault, "u-1") == ("user", True)


def test_a_list_with_an_unreadable_user_deactivates_no_one(vault: Vault) -> None:
    """A user whose entry cannot be read as a subject (no id, an id that is not a string) may be
    any of the subjects: with one in the list, none is taken as deleted."""
    sync(vault, listed(user("u-1"), user("u-2")))
    renamed = [
        {("user_id" if k == "id" else k): v for k, v in user(u).items()} for u in ("u-1", "u-2")
    ]

    result = sync(vault, listed(*renamed, {**user("u-3"), "id": None}))

    assert (result.deactivated, len(result.skipped)) == (0, 3)
    assert stored(vault, "u-1") == ("user", True)
    assert stored(vault, "u-2") == ("user", True)


def test_a_list_older_than_a_subject_does_not_deactivate_it(vault: Vault) -> None:
    """A list read before a subject was created (or changed) says nothing of it: another sync,
    or an owner, wrote it since."""
    sync(vault, listed(user("u-1")))
    stale = listed(user("u-1"))  # read now; u-2 appears after it
    sync(vault, listed(user("u-1"), user("u-2")))

    result = sync(vault, stale)

    assert result.deactivated == 0
    assert stored(vault, "u-2") == ("user", True)


def open_webui_users(body: Any, *, raw: bytes | None = None) -> FixedAnswer:
    """``GET /api/v1/users/all`` of an Open WebUI (outside the project), answering ``body``."""
    return FixedAnswer(200, json.dumps(body).encode() if raw is None else raw)


@pytest.mark.parametrize(
    ("body", "complete"),
    [
        ({"users": [user("u-1"), user("u-2")], "total": 2}, True),  # Open WebUI 0.12.4's answer
        ([user("u-1"), user("u-2")], False),  # a bare list: how many there are is not said
        ({"users": [user("u-1")]}, False),
        ({"users": [user("u-1")], "total": 2}, False),  # another page
        ({"users": [user("u-1")], "total": True}, False),
        ({"users": [user("u-1"), "u-2"], "total": 2}, False),
        ({"users": [user("u-1"), {**user("u-2"), "id": None}], "total": 2}, False),
        ({"users": [user("u-1"), {"email": "x@example.com"}], "total": 2}, False),
        ({"users": [user("u-1"), user("u-1")], "total": 2}, False),  # an id twice
        ({"users": [], "total": 0}, False),  # names not even the admin whose credential read it
    ],
)
def test_a_list_is_complete_only_if_it_says_so_and_names_each_user_once(
    body: Any, complete: bool
) -> None:
    with AsgiServer(open_webui_users(body)) as owui:
        found = fetch_users(owui.url, "admin-token")
    assert found.complete is complete
    assert found.listed_at


def test_an_empty_list_deactivates_no_one(vault: Vault) -> None:
    sync(vault, listed(user("u-1"), user("u-2")))
    with AsgiServer(open_webui_users({"users": [], "total": 0})) as owui:
        found = fetch_users(owui.url, "admin-token")
    assert sync(vault, found).deactivated == 0
    assert stored(vault, "u-1") == ("user", True)


def test_entries_that_are_not_users_are_reported_and_deactivate_no_one(vault: Vault) -> None:
    sync(vault, listed(user("u-1"), user("u-2")))
    with AsgiServer(open_webui_users([user("u-1"), 7, "u-2", None])) as owui:
        found = fetch_users(owui.url, "admin-token")
    result = sync(vault, found)
    assert (result.seen, result.deactivated) == (1, 0)
    assert result.skipped == ["3 entries of the list are not user objects"]
    assert stored(vault, "u-2") == ("user", True)


def test_an_answer_nested_too_deeply_is_one_clear_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with (
        AsgiServer(open_webui_users(None, raw=deep)) as owui,
        pytest.raises(Unavailable, match="was not JSON"),
    ):
        fetch_users(owui.url, "admin-token")
