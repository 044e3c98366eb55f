"""``subjects sync`` against the vault's state: what an owner decided holds, and users gone from
Open WebUI stop being subjects anyone can act for. The user lists are what Open WebUI's
``GET /api/v1/users/all`` answers (data; the HTTP exchange itself is tested end to end)."""

from __future__ import annotations

from typing import Any

from vault.integrations.openwebui.sync import UserList, sync
from vault.ops import subjects
from vault.ops.runtime import Vault
from vault.storage import subjects_repo


def user(uid: str, role: str = "user") -> dict[str, Any]:
    return {"id": uid, "email": f"{uid}@example.com", "name": uid.upper(), "role": role}


def listed(*users: dict[str, Any], complete: bool = True) -> UserList:
    return UserList(list(users), complete=complete)


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
