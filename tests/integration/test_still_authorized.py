"""A token is checked against the vault's current state at every use, not only at issuance.

Deactivating or re-roling the subject, or narrowing the delegator's policy so that it would not
issue the token now, revokes the token in the same commit (``token.revoked``, ``by``
``subject_changed`` or ``policy_changed``): the next introspection is ``active: false`` with a
``token.rejected`` entry, and putting the state back does not bring the token back. An active
answer carries the subject's role, which the middleware holds the app to.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import Api


def introspect(api: Api, verifier: str, token: str) -> dict[str, Any]:
    response = api.call(
        "POST",
        "/v1/introspect",
        verifier,
        json={"token": token, "method": "POST", "path": "/api/chat/completions"},
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.fixture
def issued(api: Api) -> dict[str, str]:
    api.subject("u-1", "u1@example.com")
    delegator_id, delegator = api.principal("bot", "delegator")
    _, verifier = api.principal("owui", "verifier")
    response = api.token(delegator, "u-1", scope="chat")
    assert response.status_code == 200, response.text
    return {
        "token": response.json()["access_token"],
        "jti": response.json()["jti"],
        "verifier": verifier,
        "delegator_id": delegator_id,
    }


def test_an_active_answer_carries_the_subjects_role(api: Api, issued: dict[str, str]) -> None:
    answer = introspect(api, issued["verifier"], issued["token"])
    assert answer["active"] is True
    assert answer["subject_role"] == "user"


@pytest.mark.parametrize(
    "change",
    ["subject_inactive", "subject_pending", "subject_promoted", "policy_narrowed"],
)
def test_a_change_after_issuance_takes_effect_at_the_next_use(
    api: Api, issued: dict[str, str], change: str
) -> None:
    if change.startswith("subject"):
        role = {"subject_pending": "pending", "subject_promoted": "admin"}.get(change, "user")
        api.subject("u-1", "u1@example.com", role=role, active=change != "subject_inactive")
    else:
        response = api.call(
            "PUT",
            f"/v1/principals/{issued['delegator_id']}/policy",
            api.owner,
            json={"scopes": ["models:read"]},
        )
        assert response.status_code == 200, response.text

    [revoked] = api.entries(type="token.revoked", jti=issued["jti"])
    by = "policy_changed" if change == "policy_narrowed" else "subject_changed"
    assert revoked["data"]["by"] == by
    assert revoked["subject"] == "u-1"
    assert introspect(api, issued["verifier"], issued["token"]) == {"active": False}
    rejected = api.entries(type="token.rejected", jti=issued["jti"])
    assert [e["data"]["reason"] for e in rejected] == ["revoked_token"]
    assert api.entries(type="token.used", jti=issued["jti"]) == []

    # the state put back: the token stays revoked (a new one can be asked for)
    api.subject("u-1", "u1@example.com")
    r = api.call("PUT", f"/v1/principals/{issued['delegator_id']}/policy", api.owner, json={})
    assert r.status_code == 200, r.text
    assert introspect(api, issued["verifier"], issued["token"]) == {"active": False}
    assert api.entries(type="token.used", jti=issued["jti"]) == []


def test_a_change_that_still_allows_the_token_revokes_nothing(
    api: Api, issued: dict[str, str]
) -> None:
    api.subject("u-1", "renamed@example.com")  # same role, still active
    r = api.call(
        "PUT",
        f"/v1/principals/{issued['delegator_id']}/policy",
        api.owner,
        json={"scopes": ["chat", "files"], "subjects": ["u-1"]},  # still allows u-1 and chat
    )
    assert r.status_code == 200, r.text
    assert api.entries(type="token.revoked") == []
    assert introspect(api, issued["verifier"], issued["token"])["active"] is True


@pytest.mark.parametrize(("issued_as", "now"), [("user", "admin"), ("admin", "user")])
def test_a_token_keeps_the_role_it_was_issued_for_even_where_the_policy_allows_both(
    api: Api, issued_as: str, now: str
) -> None:
    """A delegator allowed to act for users and admins gets a token for a user; the user is
    promoted. The token does not act as an admin: it was issued for a user (and the other way
    round). A new token, for the subject as it is now, can be asked for."""
    api.subject("u-2", "u2@example.com", role=issued_as)
    policy = {"subject_roles": ["user", "admin"]}
    _, delegator = api.principal("both", "delegator", policy=policy)
    _, verifier = api.principal("owui", "verifier")
    response = api.token(delegator, "u-2", scope="chat")
    assert response.status_code == 200, response.text
    token, jti = response.json()["access_token"], response.json()["jti"]
    assert introspect(api, verifier, token)["subject_role"] == issued_as

    api.subject("u-2", "u2@example.com", role=now)

    assert introspect(api, verifier, token) == {"active": False}
    [rejected] = api.entries(type="token.rejected", jti=jti)
    assert rejected["data"]["reason"] == "revoked_token"  # revoked by the role's change
    fresh = api.token(delegator, "u-2", scope="chat")
    assert fresh.status_code == 200, fresh.text
    assert introspect(api, verifier, fresh.json()["access_token"])["subject_role"] == now
