"""SPEC §8 against a real Open WebUI 0.12.4 behind ``dvault openwebui serve`` and a real vault.

Open WebUI's own answers are told apart from the middleware's by their body: Open WebUI says
``{"detail": ...}``, the middleware ``{"error", "error_description"}``. The test that stops the
vault is the last one in this module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vault.crypto.keys import thumbprint

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

JWT_LIKE = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, payload, _ = token.split(".")
    return json.loads(unb64(head)), json.loads(unb64(payload))


def compact(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def uses(stack: Stack, jti: str) -> list[dict[str, Any]]:
    return stack.api.entries(type="token.used", jti=jti)


# Open WebUI compresses responses (gzip, br, zstd) for clients that accept it; natively this
# endpoint echoes the caller's token in its body (test_native_credentials_pass_through_unchanged).
@pytest.mark.parametrize("accept_encoding", ["identity", "gzip", "gzip, deflate, br, zstd"])
def test_who_am_i_is_the_subject_and_no_native_token_comes_back(
    stack: Stack, accept_encoding: str
) -> None:
    user, admin = stack.accounts.user, stack.accounts.admin
    issued = stack.issue(user.id, "chat models:read")

    # The admin's session cookie rides along: it is dropped, the request is the subject's.
    response = stack.as_bearer(
        "GET",
        "/api/v1/auths/",
        issued["access_token"],
        headers={"Cookie": f"token={admin.session_token}", "Accept-Encoding": accept_encoding},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["email"], body["role"]) == (user.id, user.email, "user")
    assert "token" not in body
    assert not [c for c in response.headers.get_list("set-cookie") if c.startswith("token=")]
    assert not JWT_LIKE.search(response.text), "a JWT came back in the body"
    assert len(response.content) == int(response.headers["content-length"])


def test_a_chat_created_by_delegation_belongs_to_the_subject(stack: Stack) -> None:
    user, admin = stack.accounts.user, stack.accounts.admin
    issued = stack.issue(user.email, "chats")

    created = stack.as_bearer(
        "POST",
        "/api/v1/chats/new",
        issued["access_token"],
        json={"chat": {"title": "Delegated TICKET-42", "messages": []}},
    )

    assert created.status_code == 200, created.text
    chat = created.json()
    assert chat["user_id"] == user.id
    mine = stack.as_bearer("GET", f"/api/v1/chats/{chat['id']}", user.session_token or "")
    assert mine.status_code == 200, mine.text
    assert (mine.json()["user_id"], mine.json()["title"]) == (user.id, "Delegated TICKET-42")
    by_key = stack.as_bearer("GET", "/api/v1/chats/", user.api_key or "")
    assert by_key.status_code == 200, by_key.text
    assert chat["id"] in [c["id"] for c in by_key.json()]
    admins = stack.as_bearer("GET", "/api/v1/chats/", admin.session_token or "")
    assert admins.status_code == 200, admins.text
    assert chat["id"] not in [c["id"] for c in admins.json()]
    [used] = uses(stack, issued["jti"])
    assert (used["data"]["method"], used["data"]["path"]) == ("POST", "/api/v1/chats/new")
    assert used["data"]["outcome"] == "allowed"


def test_an_admin_only_endpoint_is_refused_by_open_webui_for_an_ordinary_subject(
    stack: Stack,
) -> None:
    issued = stack.issue(stack.accounts.user.id, "read")

    response = stack.as_bearer("GET", "/api/v1/users/all", issued["access_token"])

    # The scope allows any GET under /api/: the refusal is Open WebUI's own, for this user.
    assert response.status_code in (401, 403), response.text
    assert "detail" in response.json()
    assert "error" not in response.json()
    [used] = uses(stack, issued["jti"])
    assert (used["data"]["path"], used["data"]["outcome"]) == ("/api/v1/users/all", "allowed")


def test_a_request_outside_the_scope_is_refused_and_recorded(stack: Stack) -> None:
    issued = stack.issue(stack.accounts.user.id, "chat models:read")

    refused = stack.as_bearer("GET", "/api/v1/chats/", issued["access_token"])

    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "scope_not_allowed"
    [used] = uses(stack, issued["jti"])
    assert used["data"]["outcome"] == "denied_scope"
    assert (used["data"]["method"], used["data"]["path"]) == ("GET", "/api/v1/chats/")


def test_the_users_raw_api_key_is_never_reachable_by_delegation(stack: Stack) -> None:
    # "read" allows any GET under /api/, but not Open WebUI's GET /api/v1/auths/api_key, which
    # would turn a short-lived delegation into the user's lasting sk- key (no scope does,
    # "all" included: tests/unit/test_scopes.py).
    issued = stack.issue(stack.accounts.user.id, "read")

    refused = stack.as_bearer("GET", "/api/v1/auths/api_key", issued["access_token"])

    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "scope_not_allowed"
    assert "sk-" not in refused.text
    [used] = uses(stack, issued["jti"])
    assert used["data"]["outcome"] == "denied_scope"


def test_every_use_is_audited_with_method_and_path(stack: Stack) -> None:
    user = stack.accounts.user
    issued = stack.issue(user.id, "chat models:read")
    token = issued["access_token"]

    assert stack.as_bearer("GET", "/api/v1/auths/", token).status_code == 200
    assert stack.as_bearer("GET", "/api/models", token).status_code == 200
    assert stack.as_bearer("GET", "/api/v1/auths/", token).status_code == 200

    used = uses(stack, issued["jti"])
    assert [(e["data"]["method"], e["data"]["path"]) for e in used] == [
        ("GET", "/api/v1/auths/"),
        ("GET", "/api/models"),
        ("GET", "/api/v1/auths/"),
    ]
    for entry in used:
        assert entry["actor"] == stack.delegator_id
        assert entry["subject"] == user.id
        assert entry["data"]["outcome"] == "allowed"
        assert entry["data"]["client_ip"] == "127.0.0.1"
        assert entry["data"]["verifier"] == stack.verifier_id
        assert token not in json.dumps(entry)


def test_a_revocation_takes_effect_on_the_next_request(stack: Stack) -> None:
    issued = stack.issue(stack.accounts.user.id, "chat models:read")
    token = issued["access_token"]
    assert stack.as_bearer("GET", "/api/v1/auths/", token).status_code == 200

    revoked = stack.api.call("POST", "/v1/revoke", stack.delegator, json={"jti": issued["jti"]})
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {"revoked": 1}

    refused = stack.as_bearer("GET", "/api/v1/auths/", token)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "revoked_token"
    [rejected] = stack.api.entries(type="token.rejected", jti=issued["jti"])
    assert rejected["data"]["path"] == "/api/v1/auths/"
    assert len(uses(stack, issued["jti"])) == 1


def _forgeries(stack: Stack, token: str) -> dict[str, str]:
    header, payload = segments(token)
    head, _, signature = token.split(".")
    as_admin = {**payload, "sub": stack.accounts.admin.id, "scope": "all"}
    jwks = stack.api.call("GET", "/.well-known/jwks.json").json()
    public = next(unb64(k["x"]) for k in jwks["keys"] if k["kid"] == header["kid"])
    stranger = Ed25519PrivateKey.generate()
    stranger_kid = thumbprint(stranger.public_key())
    return {
        "tampered_payload": f"{head}.{b64(json.dumps(as_admin).encode())}.{signature}",
        "other_key_with_the_vault_kid": compact(header, as_admin, stranger.sign),
        "unknown_kid": compact({**header, "kid": stranger_kid}, as_admin, stranger.sign),
        "alg_none": compact({**header, "alg": "none"}, as_admin, lambda _: b""),
        "hs256_keyed_with_the_public_key": compact(
            {**header, "alg": "HS256"},
            as_admin,
            lambda data: hmac.new(public, data, hashlib.sha256).digest(),
        ),
    }


def test_forged_tokens_get_401_and_leave_no_audit_entry(stack: Stack) -> None:
    issued = stack.issue(stack.accounts.user.id, "chat models:read")
    forgeries = _forgeries(stack, issued["access_token"])
    before = stack.head_seq()

    answers = {
        name: stack.as_bearer("GET", "/api/v1/auths/", forged) for name, forged in forgeries.items()
    }

    for name, response in answers.items():
        assert response.status_code == 401, (name, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer"), name
        assert "error" in response.json(), name
    assert stack.head_seq() == before, "a forgery reached the vault's audit log"


def test_native_credentials_pass_through_unchanged(stack: Stack) -> None:
    admin, user = stack.accounts.admin, stack.accounts.user
    before = stack.head_seq()

    who = stack.as_bearer("GET", "/api/v1/auths/", admin.session_token or "")
    assert who.status_code == 200, who.text
    assert (who.json()["id"], who.json()["token"]) == (admin.id, admin.session_token)
    every = stack.as_bearer("GET", "/api/v1/users/all", admin.session_token or "")
    assert every.status_code == 200, every.text
    by_cookie = stack.http.get("/api/v1/auths/", headers={"Cookie": f"token={user.session_token}"})
    assert by_cookie.status_code == 200, by_cookie.text
    assert by_cookie.json()["id"] == user.id
    for path in ("/api/models", "/api/v1/chats/"):
        response = stack.as_bearer("GET", path, user.api_key or "")
        assert response.status_code == 200, (path, response.text)

    assert stack.head_seq() == before, "native credentials never involve the vault"


def test_subjects_sync_is_idempotent(stack: Stack) -> None:
    accounts = stack.accounts.accounts
    assert stack.first_sync["created"] == len(accounts), stack.first_sync
    upserts = len(stack.api.entries(type="subject.upserted"))

    again = stack.sync()

    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert (result["seen"], result["unchanged"]) == (len(accounts), len(accounts)), result
    assert (result["created"], result["updated"], result["skipped"]) == (0, 0, [])
    assert (result["deactivated"], result["kept_inactive"]) == (0, [])
    assert len(stack.api.entries(type="subject.upserted")) == upserts


def test_users_are_imported_with_their_roles_and_pending_ones_inactive(stack: Stack) -> None:
    seen = {}
    for account in stack.accounts.accounts:
        response = stack.api.call("GET", f"/v1/subjects/{account.id}", stack.api.owner)
        assert response.status_code == 200, response.text
        subject = response.json()
        seen[account.role] = (subject["email"], subject["role"], subject["active"])
    assert seen == {
        "admin": (stack.accounts.admin.email, "admin", True),
        "user": (stack.accounts.user.email, "user", True),
        "pending": (stack.accounts.pending.email, "pending", False),
    }

    refused = stack.api.token(stack.delegator, stack.accounts.pending.id, scope="chat")
    assert refused.status_code == 403, refused.text


def add_synced_user(stack: Stack, name: str, email: str) -> str:
    """A new ordinary user, added by Open WebUI's admin, then synced into the vault: its id."""
    added = stack.http.post(
        "/api/v1/auths/add",
        headers={"Authorization": f"Bearer {stack.accounts.admin.session_token}"},
        json={"name": name, "email": email, "password": "Added-pass-123!", "role": "user"},
    )
    assert added.status_code == 200, added.text
    assert stack.sync().returncode == 0
    user_id: str = added.json()["id"]
    return user_id


def test_a_subject_promoted_in_open_webui_after_issuance_gets_no_admin_power(
    stack: Stack,
) -> None:
    # The vault authorized a token for an ordinary user; Open WebUI later makes them admin.
    # Acting with the admin's powers would bypass the delegator's policy (admin subjects need
    # "admin" in subject_roles), so the mapper refuses until the vault knows (subjects sync).
    admin = {"Authorization": f"Bearer {stack.accounts.admin.session_token}"}
    user_id = add_synced_user(stack, "Promoted Four", "promoted4@example.com")
    issued = stack.issue(user_id, "read")
    chat = stack.issue(user_id, "chat")  # a scope with a state-changing request in it
    assert stack.as_bearer("GET", "/api/v1/chats/", issued["access_token"]).status_code == 200

    promoted = stack.http.post(
        f"/api/v1/users/{user_id}/update", headers=admin, json={"role": "admin"}
    )
    assert promoted.status_code == 200, promoted.text

    refused = stack.as_bearer("GET", "/api/v1/users/all", issued["access_token"])
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "subject_role_changed"
    assert "sync" in refused.json()["error_description"]
    # A state-changing request is refused before Open WebUI sees it (the user is read first).
    posted = stack.as_bearer(
        "POST",
        "/api/chat/completions",
        chat["access_token"],
        json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert posted.status_code == 401, posted.text
    assert posted.json()["error"] == "subject_role_changed"
    # Once the vault learns the new role, the delegator's users-only policy refuses the token.
    assert stack.sync().returncode == 0
    after_sync = stack.as_bearer("GET", "/api/v1/chats/", issued["access_token"])
    assert after_sync.status_code == 401, after_sync.text
    assert after_sync.json()["error"] == "revoked_token"


def test_a_user_deleted_in_open_webui_is_deactivated_by_the_next_sync(stack: Stack) -> None:
    """Open WebUI's user list says how many users it has: a sync that got them all deactivates
    the subjects it no longer lists, so no token is issued for a deleted user (and the ones
    issued before are refused at the vault)."""
    admin = {"Authorization": f"Bearer {stack.accounts.admin.session_token}"}
    user_id = add_synced_user(stack, "Leaving Five", "leaving5@example.com")
    issued = stack.issue(user_id, "read")

    deleted = stack.http.delete(f"/api/v1/users/{user_id}", headers=admin)
    assert deleted.status_code == 200, deleted.text
    synced = stack.sync()

    assert synced.returncode == 0, synced.stderr
    assert json.loads(synced.stdout)["deactivated"] == 1, synced.stdout
    subject = stack.api.call("GET", f"/v1/subjects/{user_id}", stack.api.owner).json()
    assert subject["active"] is False
    refused = stack.api.token(stack.delegator, user_id, scope="read")
    assert refused.status_code == 403, refused.text
    after = stack.as_bearer("GET", "/api/v1/chats/", issued["access_token"])
    assert after.status_code == 401, after.text
    assert after.json()["error"] == "revoked_token"  # the vault's no, before Open WebUI's


def test_with_the_vault_down_delegation_fails_closed_and_native_credentials_work(
    stack: Stack,
) -> None:
    """Last in the module: it stops the vault for good."""
    admin, user = stack.accounts.admin, stack.accounts.user
    issued = stack.issue(user.id, "chats")
    token = issued["access_token"]
    assert stack.as_bearer("GET", "/api/v1/chats/", token).status_code == 200

    stack.stop_vault()

    for method, path in (("GET", "/api/v1/chats/"), ("GET", "/api/v1/auths/")):
        refused = stack.as_bearer(method, path, token)
        assert refused.status_code == 503, (path, refused.text)
        assert refused.json()["error"] == "vault_unavailable"
    session = stack.as_bearer("GET", "/api/v1/auths/", admin.session_token or "")
    assert session.status_code == 200, session.text
    assert session.json()["id"] == admin.id
    key = stack.as_bearer("GET", "/api/v1/chats/", user.api_key or "")
    assert key.status_code == 200, key.text
