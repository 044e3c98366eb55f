"""POST /v1/revoke and POST /v1/principals/{id}/disable over HTTP (SPEC §3, §6): who may revoke
what, the count of live tokens, one ``token.revoked`` entry per token, and that a revoked token is
no longer honoured."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import Api, MovableClock


@dataclass
class World:
    api: Api
    a_id: str
    a: str
    b_id: str
    b: str
    verifier: str

    def issue(self, credential: str, subject: str = "u-1", **extra: Any) -> str:
        r = self.api.token(credential, subject, **extra)
        assert r.status_code == 200, r.text
        jti: str = r.json()["jti"]
        self.tokens[jti] = r.json()["access_token"]
        return jti

    def revoke(self, credential: str, **target: Any) -> Any:
        return self.api.call("POST", "/v1/revoke", credential, json=target)

    def active(self, jti: str) -> bool:
        body = {"token": self.tokens[jti], "method": "GET", "path": "/api/v1/auths/"}
        r = self.api.call("POST", "/v1/introspect", self.verifier, json=body)
        assert r.status_code == 200, r.text
        active: bool = r.json()["active"]
        return active

    def revoked_jtis(self) -> list[str]:
        return [e["data"]["jti"] for e in self.api.entries(type="token.revoked")]

    def __post_init__(self) -> None:
        self.tokens: dict[str, str] = {}


@pytest.fixture
def world(api: Api) -> World:
    api.subject("u-1", "alice@example.com")
    api.subject("u-2", "bob@example.com")
    a_id, a = api.principal("bot-a", "delegator")
    b_id, b = api.principal("bot-b", "delegator")
    _, verifier = api.principal("owui", "verifier")
    return World(api, a_id, a, b_id, b, verifier)


# --- owners --------------------------------------------------------------------------------------


def test_owner_revokes_by_jti(world: World, api: Api) -> None:
    jti = world.issue(world.a)
    keep = world.issue(world.a)
    r = world.revoke(api.owner, jti=jti)
    assert r.status_code == 200, r.text
    assert r.json() == {"revoked": 1}
    assert world.active(jti) is False
    assert world.active(keep) is True
    (entry,) = api.entries(type="token.revoked")
    assert entry["data"]["jti"] == jti
    assert entry["subject"] == "u-1"
    assert world.tokens[jti] not in str(entry)
    # already revoked, or never issued: nothing live to count
    assert world.revoke(api.owner, jti=jti).json() == {"revoked": 0}
    assert world.revoke(api.owner, jti="no-such-jti").json() == {"revoked": 0}
    assert world.revoked_jtis() == [jti]


def test_a_token_in_use_is_refused_from_the_use_after_its_revocation(
    world: World, api: Api
) -> None:
    """The vault keeps what a use read of the token for the next uses, until a change: a
    revocation between two uses is seen by the second."""
    jti = world.issue(world.a)
    assert [world.active(jti) for _ in range(3)] == [True, True, True]
    assert world.revoke(api.owner, jti=jti).json() == {"revoked": 1}
    assert world.active(jti) is False
    (rejected,) = api.entries(type="token.rejected")
    assert rejected["data"]["jti"] == jti
    assert rejected["data"]["reason"] == "revoked_token"


@pytest.mark.parametrize("name", ["u-1", "alice@example.com"])
def test_owner_revokes_by_subject(world: World, api: Api, name: str) -> None:
    mine = [world.issue(world.a), world.issue(world.a), world.issue(world.b)]
    other = world.issue(world.a, "u-2")
    r = world.revoke(api.owner, subject=name)
    assert r.status_code == 200, r.text
    assert r.json() == {"revoked": 3}
    assert sorted(world.revoked_jtis()) == sorted(mine), "one token.revoked entry per token"
    assert not any(world.active(jti) for jti in mine)
    assert world.active(other) is True
    assert world.revoke(api.owner, subject=name).json() == {"revoked": 0}


def test_owner_revokes_by_actor(world: World, api: Api) -> None:
    of_a = [world.issue(world.a), world.issue(world.a, "u-2")]
    of_b = world.issue(world.b)
    r = world.revoke(api.owner, actor=world.a_id)
    assert r.json() == {"revoked": 2}
    assert sorted(world.revoked_jtis()) == sorted(of_a)
    assert world.active(of_b) is True
    for entry in api.entries(type="token.revoked"):
        assert entry["data"]["jti"] in of_a


def test_only_live_tokens_are_counted(world: World, api: Api, clock: MovableClock) -> None:
    expired = world.issue(world.a, ttl_seconds=60)
    clock.advance(61)
    live = world.issue(world.a, ttl_seconds=600)
    already = world.issue(world.a, ttl_seconds=600)
    assert world.revoke(api.owner, jti=already).json() == {"revoked": 1}
    r = world.revoke(api.owner, actor=world.a_id)
    assert r.json() == {"revoked": 1}
    assert sorted(world.revoked_jtis()) == sorted([already, live])
    assert expired not in world.revoked_jtis()


# --- delegators ----------------------------------------------------------------------------------


def test_delegator_revokes_its_own(world: World) -> None:
    by_jti = world.issue(world.a)
    assert world.revoke(world.a, jti=by_jti).json() == {"revoked": 1}
    assert world.active(by_jti) is False

    own = world.issue(world.a)
    foreign = world.issue(world.b)
    r = world.revoke(world.a, subject="u-1")
    assert r.json() == {"revoked": 1}, "by subject, a delegator reaches only its own tokens"
    assert world.active(own) is False
    assert world.active(foreign) is True

    own_again = [world.issue(world.a), world.issue(world.a, "u-2")]
    assert world.revoke(world.a, actor=world.a_id).json() == {"revoked": 2}
    assert not any(world.active(jti) for jti in own_again)
    assert world.active(foreign) is True
    entries = world.api.entries(type="token.revoked")
    assert len(entries) == 4
    assert {e["actor"] for e in entries} == {world.a_id}


@pytest.mark.parametrize("target", ["jti", "actor"])
def test_delegator_cannot_revoke_another_delegators_tokens(world: World, target: str) -> None:
    foreign = world.issue(world.b)
    value = foreign if target == "jti" else world.b_id
    r = world.revoke(world.a, **{target: value})
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "forbidden"
    assert world.active(foreign) is True
    assert world.revoked_jtis() == []


@pytest.mark.parametrize("roles", [("auditor",), ("verifier",)])
def test_other_roles_cannot_revoke(world: World, roles: tuple[str, ...]) -> None:
    jti = world.issue(world.a)
    _, credential = world.api.principal("other", *roles)
    for target in ({"jti": jti}, {"subject": "u-1"}, {"actor": world.a_id}):
        r = world.revoke(credential, **target)
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "forbidden"
    assert world.active(jti) is True


def test_revoke_needs_a_credential(world: World) -> None:
    jti = world.issue(world.a)
    r = world.api.call("POST", "/v1/revoke", json={"jti": jti})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = world.api.call("POST", "/v1/revoke", world.tokens[jti], json={"jti": jti})
    assert r.status_code == 401, "a delegation token is not a vault credential"
    assert world.active(jti) is True


@pytest.mark.parametrize(
    "content",
    [
        b"{}",
        b'{"jti": "x", "subject": "u-1"}',
        b'{"jti": "x", "actor": "p_1"}',
        b'{"jti": ""}',
        b'{"jti": 5}',
        b'{"jti": null}',
        b'{"token": "x"}',
        b'{"jti": "x", "extra": 1}',
        b"[]",
        b"not json",
    ],
)
def test_revoke_body_names_exactly_one_target(world: World, api: Api, content: bytes) -> None:
    jti = world.issue(world.a)
    r = api.raw("POST", "/v1/revoke", api.owner, content)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error", "error_description"}
    assert r.json()["error"] == "invalid_request"
    assert world.active(jti) is True


# --- disabling a principal -----------------------------------------------------------------------


def test_disable_revokes_live_tokens_and_credentials(world: World, api: Api) -> None:
    of_a = [world.issue(world.a), world.issue(world.a, "u-2")]
    of_b = world.issue(world.b)
    extra = api.call("POST", f"/v1/principals/{world.a_id}/credentials", api.owner)
    assert extra.status_code == 201, extra.text
    second = extra.json()["credential"]
    of_a.append(world.issue(second))

    r = api.call("POST", f"/v1/principals/{world.a_id}/disable", api.owner)
    assert r.status_code == 200, r.text
    assert r.json()["disabled"] is True
    assert r.json()["revoked"] == 3

    for jti in of_a:
        body = {"token": world.tokens[jti], "method": "GET", "path": "/api/v1/auths/"}
        answer = api.call("POST", "/v1/introspect", world.verifier, json=body)
        assert answer.json() == {"active": False}
    assert world.active(of_b) is True
    assert sorted(world.revoked_jtis()) == sorted(of_a)
    (disabled,) = api.entries(type="principal.disabled")
    assert disabled["data"]["principal_id"] == world.a_id

    for credential in (world.a, second):
        refused = api.token(credential, "u-1")
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"] == "unauthorized"
        assert world.revoke(credential, actor=world.a_id).status_code == 401
    listed = api.call("GET", "/v1/principals", api.owner).json()["principals"]
    assert {p["id"]: p["disabled"] for p in listed}[world.a_id] is True
    # disabling again revokes nothing more
    again = api.call("POST", f"/v1/principals/{world.a_id}/disable", api.owner)
    assert again.status_code == 200
    assert again.json()["revoked"] == 0


def test_disable_unknown_principal_is_404(api: Api) -> None:
    r = api.call("POST", "/v1/principals/p_nope/disable", api.owner)
    assert r.status_code == 404, r.text
    assert set(r.json()) == {"error", "error_description"}


def test_delegator_cannot_disable(world: World) -> None:
    r = world.api.call("POST", f"/v1/principals/{world.b_id}/disable", world.a)
    assert r.status_code == 403
    assert world.api.token(world.b, "u-1").status_code == 200
