"""POST /v1/token over HTTP (SPEC §3-§6): the pinned response and JWT, the policy, and the audit
entry of every issuance and every refusal by an authenticated caller."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.support import Api, LiveServer, MovableClock, make_settings
from vault.config import Settings
from vault.ops.setup import InitResult, init_vault
from vault.storage import meta_repo
from vault.storage.engine import Database
from vault.storage.tables import SubjectRow

TOKEN_RESPONSE_MEMBERS = {
    "access_token",
    "token_type",
    "expires_in",
    "scope",
    "jti",
    "issued_token_type",
}
CLAIMS = {"iss", "aud", "sub", "act", "client_id", "scope", "iat", "nbf", "exp", "jti"}
DENIAL_MEMBERS = {"subject", "scope", "ttl_seconds", "reason", "error"}
ISSUED_MEMBERS = {"jti", "scope", "exp", "ttl_seconds", "reason", "client_ip"}


def b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def segment(part: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(b64url(part))
    return value


def rfc7638_kid(x: str) -> str:
    members = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(members.encode()).digest()).rstrip(b"=").decode()


@dataclass
class Bot:
    api: Api
    id: str
    credential: str

    def token(self, subject: str = "u-1", **extra: Any) -> Any:
        return self.api.token(self.credential, subject, **extra)


@pytest.fixture
def bot(api: Api) -> Bot:
    api.subject("u-1", "Alice@Example.com")
    api.subject("u-2", "bob@example.com")
    api.subject("u-off", "off@example.com", active=False)
    api.subject("u-pending", "pending@example.com", role="pending")
    api.subject("u-admin", "admin@example.com", role="admin")
    principal_id, credential = api.principal("support-bot", "delegator")
    return Bot(api, principal_id, credential)


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == code, body


def last_denial(api: Api, actor: str) -> dict[str, Any]:
    denials = api.entries(type="token.denied", actor=actor)
    assert denials, "the refusal left no token.denied entry"
    entry = denials[-1]
    assert set(entry["data"]) >= DENIAL_MEMBERS, entry
    return entry


def assert_refused(bot: Bot, response: Any, status: int, code: str, **data: Any) -> dict[str, Any]:
    """The refusal's status and code, and its token.denied entry, committed before the answer."""
    assert_error(response, status, code)
    entry = last_denial(bot.api, bot.id)
    assert entry["data"]["error"] == code, entry
    for name, value in data.items():
        assert entry["data"][name] == value, (name, entry)
    assert bot.api.entries(type="token.issued") == [], "a refused request issued a token"
    return entry


def assert_refused_after_issue(bot: Bot, response: Any, status: int, code: str) -> None:
    assert_error(response, status, code)
    assert last_denial(bot.api, bot.id)["data"]["error"] == code


# --- the pinned response and token ---------------------------------------------------------------


def test_response_and_jwt_follow_the_contract(bot: Bot, settings: Settings) -> None:
    before = int(time.time())
    r = bot.token("u-1", scope="chat", ttl_seconds=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == TOKEN_RESPONSE_MEMBERS
    assert body["token_type"] == "Bearer"
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
    assert body["expires_in"] == 120
    assert body["scope"] == "chat"
    assert "no-store" in r.headers["cache-control"]

    head, payload, signature = body["access_token"].split(".")
    header = segment(head)
    assert set(header) == {"alg", "typ", "kid"}
    assert header["alg"] == "EdDSA"
    assert header["typ"] == "at+jwt"
    assert len(b64url(signature)) == 64  # an Ed25519 signature

    jwks = bot.api.call("GET", "/.well-known/jwks.json").json()
    published = {k["kid"]: k for k in jwks["keys"]}
    assert header["kid"] in published
    jwk = published[header["kid"]]
    assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
    assert "d" not in jwk
    assert header["kid"] == rfc7638_kid(jwk["x"])

    claims = segment(payload)
    assert set(claims) == CLAIMS
    assert claims["iss"] == settings.issuer
    assert claims["aud"] == settings.audience == "open-webui"
    assert claims["sub"] == "u-1"
    assert claims["act"] == {"sub": bot.id}
    assert claims["client_id"] == bot.id
    assert claims["scope"] == "chat"
    assert claims["jti"] == body["jti"]
    assert all(isinstance(claims[n], int) for n in ("iat", "nbf", "exp"))
    assert before - 5 <= claims["iat"] <= int(time.time()) + 5
    assert claims["nbf"] <= claims["iat"] + 1
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert len(b64url(claims["jti"][12:])) >= 16, "jti must carry at least 128 random bits"

    verified = jwt.decode(
        body["access_token"],
        jwt.PyJWK(jwk).key,
        algorithms=["EdDSA"],
        audience=settings.audience,
        issuer=settings.issuer,
        options={"require": sorted(CLAIMS - {"act", "client_id", "scope"})},
    )
    assert verified == claims

    second = bot.token("u-1", scope="chat").json()
    assert second["jti"] != body["jti"]


def test_jwks_publishes_token_keys_only(api: Api, initialized: InitResult) -> None:
    r = api.call("GET", "/.well-known/jwks.json")
    assert r.status_code == 200
    assert set(r.json()) == {"keys"}
    kids = [k["kid"] for k in r.json()["keys"]]
    assert kids == [initialized.token_kid]
    assert initialized.audit_kid not in kids
    for key in r.json()["keys"]:
        assert "d" not in key


def test_issuance_is_audited_before_the_response(bot: Bot, settings: Settings) -> None:
    r = bot.token("u-1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scope"] == "chat models:read"
    assert body["expires_in"] == settings.default_ttl == 300
    claims = segment(body["access_token"].split(".")[1])
    assert claims["exp"] - claims["iat"] == 300

    issued = bot.api.entries(type="token.issued")
    assert len(issued) == 1
    entry = issued[0]
    assert entry["actor"] == bot.id
    assert entry["subject"] == "u-1"
    assert set(entry["data"]) >= ISSUED_MEMBERS
    assert entry["data"]["jti"] == body["jti"]
    assert entry["data"]["scope"] == "chat models:read"
    assert entry["data"]["exp"] == claims["exp"]
    assert entry["data"]["ttl_seconds"] == 300
    assert entry["data"]["reason"] == "test: TICKET-1"
    assert entry["data"]["client_ip"] == "127.0.0.1"
    assert body["access_token"] not in json.dumps(entry)


@pytest.mark.parametrize("subject", ["u-1", "alice@example.com", "ALICE@Example.COM"])
def test_subject_by_id_or_email(bot: Bot, subject: str) -> None:
    r = bot.token(subject)
    assert r.status_code == 200, r.text
    assert segment(r.json()["access_token"].split(".")[1])["sub"] == "u-1"
    assert bot.api.entries(type="token.issued")[0]["subject"] == "u-1"


# --- TTL -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "ttl", "status", "code"),
    [
        (None, 3600, 200, None),
        (None, 3601, 400, "invalid_ttl"),
        ({"max_ttl_seconds": 600}, 600, 200, None),
        ({"max_ttl_seconds": 600}, 601, 400, "invalid_ttl"),
        ({"max_ttl_seconds": 600}, 3600, 400, "invalid_ttl"),
        (None, 0, 400, "invalid_ttl"),
        (None, -5, 400, "invalid_ttl"),
        (None, "300", 400, "invalid_request"),
        (None, 1.5, 400, "invalid_request"),
        (None, True, 400, "invalid_request"),
    ],
)
def test_ttl_is_granted_exactly_or_refused(
    api: Api, policy: dict[str, Any] | None, ttl: Any, status: int, code: str | None
) -> None:
    api.subject("u-1", "alice@example.com")
    principal_id, credential = api.principal("bot", "delegator", policy=policy)
    bot = Bot(api, principal_id, credential)
    r = bot.token("u-1", ttl_seconds=ttl)
    if code is None:
        assert r.status_code == 200, r.text
        assert r.json()["expires_in"] == ttl, "the TTL must be granted as asked, never clamped"
        claims = segment(r.json()["access_token"].split(".")[1])
        assert claims["exp"] - claims["iat"] == ttl
    else:
        if isinstance(ttl, float):  # audit data holds no floats (SPEC §7)
            entry = assert_refused(bot, r, status, code, subject="u-1")
            assert not isinstance(entry["data"]["ttl_seconds"], float), entry
        else:
            assert_refused(bot, r, status, code, ttl_seconds=ttl, subject="u-1")


# --- reason --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        (None, 400),
        ("", 400),
        ("   ", 400),
        (7, 400),
        ("x" * 501, 400),
        ("x" * 500, 200),
        ("é" * 500, 200),
        ("TICKET-42\n\tuser asked\r\n", 200),  # tab and newlines: escaped in the log's JSON
        ("TICKET-42 \x1b[2J", 400),  # a terminal's escape
        ("TICKET-42 \x85 next line", 400),  # NEL, raw in JSON: a reader may split the line
        ("TICKET-42 \u2028 next line", 400),
        ("TICKET-42 \u2029", 400),
        ("TICKET-42 \x7f", 400),
    ],
)
def test_reason_is_required_and_bounded(bot: Bot, reason: Any, status: int) -> None:
    body: dict[str, Any] = {"subject": "u-1"}
    if reason is not None:
        body["reason"] = reason
    r = bot.api.call("POST", "/v1/token", bot.credential, json=body)
    if status == 200:
        assert r.status_code == 200, r.text
        assert bot.api.entries(type="token.issued")[0]["data"]["reason"] == reason
    else:
        entry = assert_refused(bot, r, 400, "invalid_request", subject="u-1")
        expected = reason[:500] if isinstance(reason, str) else reason
        if isinstance(expected, str):  # recorded as sent, each character kept out escaped
            expected = "".join(
                ch if ch.isprintable() or ch == " " else f"\\u{ord(ch):04x}" for ch in expected
            )
        assert entry["data"]["reason"] == expected


def test_reason_optional_when_not_required(
    tmp_path: Path, database_url: str, clock: MovableClock
) -> None:
    settings = make_settings(tmp_path / "home", database_url, VAULT_REQUIRE_REASON="false")
    assert settings.require_reason is False
    owner = init_vault(settings).credential
    with LiveServer(settings, clock) as server:
        api = Api(server.url, owner)
        try:
            api.subject("u-1", "alice@example.com")
            _, credential = api.principal("bot", "delegator")
            r = api.call("POST", "/v1/token", credential, json={"subject": "u-1"})
            assert r.status_code == 200, r.text
            assert api.entries(type="token.issued")[0]["data"]["reason"] is None
            too_long = {"subject": "u-1", "reason": "x" * 501}
            r = api.call("POST", "/v1/token", credential, json=too_long)
            assert_error(r, 400, "invalid_request")
        finally:
            api.close()


# --- subjects ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "status", "code", "entry_subject"),
    [
        ("nobody", 404, "unknown_subject", None),
        ("nobody@example.com", 404, "unknown_subject", None),
        ("u-off", 403, "subject_inactive", "u-off"),
        ("off@example.com", 403, "subject_inactive", "u-off"),
        ("u-pending", 403, "subject_inactive", "u-pending"),
        ("u-admin", 403, "subject_not_allowed", "u-admin"),
    ],
)
def test_subject_refusals(
    bot: Bot, subject: str, status: int, code: str, entry_subject: str | None
) -> None:
    entry = assert_refused(bot, bot.token(subject), status, code, subject=subject)
    assert entry["subject"] == entry_subject
    assert entry["actor"] == bot.id


def test_admin_subject_needs_an_explicit_policy(bot: Bot) -> None:
    assert_refused(bot, bot.token("u-admin"), 403, "subject_not_allowed")
    r = bot.api.call(
        "PUT",
        f"/v1/principals/{bot.id}/policy",
        bot.api.owner,
        json={"subject_roles": ["admin", "user"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["policy"]["subject_roles"] == ["admin", "user"]
    admin = bot.token("u-admin")
    assert admin.status_code == 200, admin.text
    assert segment(admin.json()["access_token"].split(".")[1])["sub"] == "u-admin"
    assert bot.token("u-1").status_code == 200
    assert bot.token("u-pending").status_code == 403, "admin policy must not open pending users"


def test_delegator_cannot_change_its_own_policy(bot: Bot) -> None:
    r = bot.api.call(
        "PUT", f"/v1/principals/{bot.id}/policy", bot.credential, json={"subject_roles": ["admin"]}
    )
    assert_error(r, 403, "forbidden")
    assert bot.token("u-admin").status_code == 403


def test_subject_allow_list(api: Api) -> None:
    api.subject("u-1", "alice@example.com")
    api.subject("u-2", "bob@example.com")
    principal_id, credential = api.principal("bot", "delegator", policy={"subjects": ["u-1"]})
    bot = Bot(api, principal_id, credential)
    assert bot.token("u-1").status_code == 200
    assert bot.token("ALICE@example.com").status_code == 200
    assert_refused_after_issue(bot, bot.token("u-2"), 403, "subject_not_allowed")
    assert_refused_after_issue(bot, bot.token("bob@example.com"), 403, "subject_not_allowed")


def test_a_policy_put_again_as_it_is_records_nothing(api: Api) -> None:
    narrow = {"subjects": ["u-1"], "scopes": ["chat"]}
    principal_id, _ = api.principal("bot", "delegator", policy=narrow)
    path = f"/v1/principals/{principal_id}/policy"
    r = api.call("PUT", path, api.owner, json={"scopes": ["chat", "models:read"]})
    assert r.status_code == 200, r.text
    changed = api.entries(type="policy.changed")
    assert changed[-1]["data"]["policy"]["scopes"] == ["chat", "models:read"]
    again = api.call("PUT", path, api.owner, json={"scopes": ["chat", "models:read"]})
    assert again.status_code == 200, again.text
    assert again.json() == r.json()
    assert api.entries(type="policy.changed") == changed  # nothing changed: nothing recorded


def test_a_policy_body_that_is_not_an_object_changes_nothing(api: Api) -> None:
    """``null`` (or a list) is no policy: it is refused, never read as "the defaults", which
    would widen a restricted delegator to every user and scope. ``{}`` asks for the defaults."""
    api.subject("u-1", "alice@example.com")
    api.subject("u-2", "bob@example.com")
    narrow = {"subjects": ["u-1"], "scopes": ["chat"]}
    principal_id, credential = api.principal("bot", "delegator", policy=narrow)
    bot = Bot(api, principal_id, credential)
    entries = len(api.entries())
    for content in (b"null", b"[]", b'"{}"'):
        r = api.raw("PUT", f"/v1/principals/{principal_id}/policy", api.owner, content)
        assert_error(r, 400, "invalid_request")
    assert len(api.entries()) == entries
    assert_refused_after_issue(bot, bot.token("u-2"), 403, "subject_not_allowed")
    r = api.call("PUT", f"/v1/principals/{principal_id}/policy", api.owner, json={})
    assert r.status_code == 200, r.text
    assert bot.token("u-2").status_code == 200


def test_an_allow_list_names_subjects_by_id_not_by_email(api: Api) -> None:
    """An email in the allow-list would match no token (they are matched by id): refused with
    the id to use, on creation and on a change; an id not known yet is kept (synced later)."""
    api.subject("u-1", "alice@example.com")
    principal_id, _ = api.principal("bot", "delegator")
    by_email = {"subjects": ["Alice@Example.com"]}
    by_id = {"subjects": ["u-1", "u-later"]}

    def create(policy: dict[str, Any]) -> Any:
        body = {"name": "bot-2", "roles": ["delegator"], "policy": policy}
        return api.call("POST", "/v1/principals", api.owner, json=body)

    def change(policy: dict[str, Any]) -> Any:
        return api.call("PUT", f"/v1/principals/{principal_id}/policy", api.owner, json=policy)

    for call, status in ((create, 201), (change, 200)):
        entries = len(api.entries())
        r = call(by_email)
        assert_error(r, 400, "invalid_request")
        assert "'u-1'" in r.json()["error_description"]
        assert len(api.entries()) == entries  # nothing changed, nothing recorded
        r = call(by_id)
        assert r.status_code == status, r.text
        assert r.json()["policy"]["subjects"] == ["u-1", "u-later"]


# --- scopes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "scope", "status", "code"),
    [
        (None, "all", 403, "scope_not_allowed"),
        (None, "chat all", 403, "scope_not_allowed"),
        (None, "chat models:read chats:read files read", 200, None),
        ({"scopes": ["chat"]}, "chat", 200, None),
        ({"scopes": ["chat"]}, "chat models:read", 403, "scope_not_allowed"),
        ({"scopes": ["chat"]}, None, 403, "scope_not_allowed"),  # the default needs models:read
        ({"scopes": ["all"]}, "all", 200, None),
        (None, "nonsense", 400, "invalid_scope"),
        (None, "chat nonsense", 400, "invalid_scope"),
        (None, "", 400, "invalid_scope"),
        (None, "   ", 400, "invalid_scope"),
        (None, ["chat"], 400, "invalid_request"),
    ],
)
def test_scope_policy(
    api: Api, policy: dict[str, Any] | None, scope: Any, status: int, code: str | None
) -> None:
    api.subject("u-1", "alice@example.com")
    principal_id, credential = api.principal("bot", "delegator", policy=policy)
    bot = Bot(api, principal_id, credential)
    extra = {} if scope is None else {"scope": scope}
    r = bot.token("u-1", **extra)
    if code is None:
        assert r.status_code == 200, r.text
        granted = segment(r.json()["access_token"].split(".")[1])["scope"]
        assert granted == r.json()["scope"] == scope
    else:
        assert_refused(bot, r, status, code, subject="u-1")
        denial = last_denial(api, principal_id)
        if isinstance(scope, str):
            assert denial["data"]["scope"] == scope
        # The entry names the subject, even when the refusal came before its lookup.
        assert denial["subject"] == "u-1"
        assert denial in api.entries(type="token.denied", subject="u-1")


def test_a_denial_names_a_subject_named_by_email_and_no_unknown_one(api: Api) -> None:
    api.subject("u-1", "alice@example.com")
    principal_id, credential = api.principal("bot", "delegator")
    bot = Bot(api, principal_id, credential)
    assert_refused(bot, bot.token("ALICE@example.com", scope="nonsense"), 400, "invalid_scope")
    assert last_denial(api, principal_id)["subject"] == "u-1"
    assert_refused(bot, bot.token("nobody@example.com", scope="nonsense"), 400, "invalid_scope")
    assert last_denial(api, principal_id)["subject"] is None
    assert_refused(bot, bot.token("u-1", scope="all"), 403, "scope_not_allowed")
    assert last_denial(api, principal_id)["subject"] == "u-1"


# --- callers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "roles", [("auditor",), ("verifier",), ("owner",), ("auditor", "verifier")]
)
def test_only_delegators_exchange(api: Api, roles: tuple[str, ...]) -> None:
    api.subject("u-1", "alice@example.com")
    principal_id, credential = api.principal("not-a-delegator", *roles)
    r = api.token(credential, "u-1", scope="chat", ttl_seconds=60)
    assert_refused(
        Bot(api, principal_id, credential), r, 403, "forbidden", subject="u-1", ttl_seconds=60
    )


def test_owner_credential_is_not_a_delegator(api: Api, initialized: InitResult) -> None:
    api.subject("u-1", "alice@example.com")
    r = api.token(api.owner, "u-1")
    assert_refused(Bot(api, initialized.owner_id, api.owner), r, 403, "forbidden", subject="u-1")


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Bearer garbage",
        "Bearer dv_" + "A" * 43,
        "Basic dXNlcjpwYXNz",
        "dv_" + "A" * 43,
    ],
)
def test_missing_or_wrong_credential_is_401(bot: Bot, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    body = {"subject": "u-1", "reason": "test"}
    r = bot.api.call("POST", "/v1/token", headers=headers, json=body)
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert bot.api.entries(type="token.issued") == []


def test_credential_of_another_kind_is_401(bot: Bot) -> None:
    # The raw credential with one character changed is just as unknown as garbage.
    changed = bot.credential[:-1] + ("A" if bot.credential[-1] != "A" else "B")
    r = bot.api.token(changed, "u-1")
    assert_error(r, 401, "unauthorized")
    assert bot.api.entries(type="token.issued") == []


def test_disabled_delegator_is_401(bot: Bot) -> None:
    assert bot.token("u-1").status_code == 200
    r = bot.api.call("POST", f"/v1/principals/{bot.id}/disable", bot.api.owner)
    assert r.status_code == 200, r.text
    refused = bot.token("u-1")
    assert_error(refused, 401, "unauthorized")
    assert "www-authenticate" in refused.headers
    assert len(bot.api.entries(type="token.issued")) == 1


# --- malformed requests from an authenticated delegator -----------------------------------------


@pytest.mark.parametrize(
    ("content", "expected_subject"),
    [
        (b"not json", None),
        (b"[1, 2]", None),
        (b'"u-1"', None),
        (b'{"reason": "x"}', None),
        (b'{"subject": "", "reason": "x"}', ""),
        (b'{"subject": 42, "reason": "x"}', 42),
        (b'{"subject": "u-1", "reason": "x", "extra": 1}', "u-1"),
        (b'{"subject": "u-1", "reason": "x", "audience": "elsewhere"}', "u-1"),
    ],
)
def test_malformed_token_request_is_400_and_audited(
    bot: Bot, content: bytes, expected_subject: Any
) -> None:
    r = bot.api.raw("POST", "/v1/token", bot.credential, content)
    assert_refused(bot, r, 400, "invalid_request", subject=expected_subject)


def test_a_body_over_the_limit_is_413_and_audited(bot: Bot) -> None:
    """Refused before it is read to the end, but refused to a known delegator: a denial."""
    body = json.dumps({"subject": "u-1", "reason": "x" * (65 * 1024)}).encode()
    r = bot.api.raw("POST", "/v1/token", bot.credential, body)
    entry = assert_refused(bot, r, 413, "request_too_large", subject=None, reason=None)
    assert entry["actor"] == bot.id
    assert entry["subject"] is None  # nothing of the body was read


def test_too_long_values_are_refused_saying_so(bot: Bot) -> None:
    r = bot.token("u-1", scope=" ".join(["chat"] * 300))  # 1,499 characters of known names
    assert_error(r, 400, "invalid_scope")
    assert "at most 1000 characters" in r.json()["error_description"]
    _, verifier = bot.api.principal("owui", "verifier")
    issued = bot.token("u-1", scope="chat")
    assert issued.status_code == 200, issued.text
    body = {"token": issued.json()["access_token"], "method": "GET", "path": "/" + "a" * 3000}
    r = bot.api.call("POST", "/v1/introspect", verifier, json=body)
    assert_error(r, 400, "invalid_request")
    assert r.json()["error_description"] == "path must be at most 2048 characters"


def test_a_name_never_means_two_subjects(api: Api, settings: Settings) -> None:
    """A subject is named by its id, or by its email case aside: an email that is another
    subject's id but for case is refused, and a pair written before that (held in the database)
    makes the name mean neither subject, never perhaps the wrong one."""
    api.subject("Eve@x.com", "eve-a@x.com")
    r = api.call(
        "PUT", "/v1/subjects/eve-b", api.owner, json={"email": "Eve@x.com", "role": "user"}
    )
    assert_error(r, 409, "conflict")
    r = api.call(
        "PUT", "/v1/subjects/eve-b", api.owner, json={"email": "EVE@X.COM", "role": "user"}
    )
    assert_error(r, 409, "conflict")
    api.subject("eve-b", "eve-b@x.com")  # any other email is fine

    # the pair as an earlier version could store it
    db = Database(settings.database_url)
    try:
        with db.write() as session:
            row = session.get(SubjectRow, "eve-b")
            assert row is not None
            row.email = "eve@x.com"
            session.add(row)
            meta_repo.restamp(session)
    finally:
        db.dispose()
    principal_id, credential = api.principal("bot", "delegator")
    bot = Bot(api, principal_id, credential)
    denial = assert_refused(bot, bot.token("Eve@x.com"), 409, "ambiguous_subject")
    assert denial["subject"] is None
    r = api.call("GET", "/v1/subjects/Eve@x.com", api.owner)
    assert_error(r, 409, "ambiguous_subject")
    r = api.call("POST", "/v1/revoke", api.owner, json={"subject": "Eve@x.com"})
    assert_error(r, 409, "ambiguous_subject")
    # the log stays searchable by each id: entries about A, none about B
    about = api.entries(subject="Eve@x.com")
    assert about
    assert {entry["subject"] for entry in about} == {"Eve@x.com"}
    # a name that is no subject's id is an email; and an id that is no email names its subject
    for name, subject_id in [("eve@x.com", "eve-b"), ("EVE@X.com", "eve-b"), ("eve-b", "eve-b")]:
        assert api.call("GET", f"/v1/subjects/{name}", api.owner).json()["id"] == subject_id
        token = bot.token(name).json()["access_token"]
        assert segment(token.split(".")[1])["sub"] == subject_id
