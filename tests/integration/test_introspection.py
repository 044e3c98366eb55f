"""POST /v1/introspect over HTTP (SPEC §5, §6, §9): who may ask, the active answer and its
``token.used`` entry, scope outcomes, and what an expired, revoked, forged or foreign token gets."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support import Api, MovableClock, escaped
from vault.config import Settings
from vault.ops.runtime import open_vault

ACTIVE_MEMBERS = {"active", "sub", "act", "scope", "exp", "jti", "client_id"}
USED_MEMBERS = {"jti", "method", "path", "client_ip", "outcome"}
CHAT = ("POST", "/api/chat/completions")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def segment(part: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(unb64(part))
    return value


@dataclass
class Setup:
    api: Api
    delegator_id: str
    delegator: str
    verifier: str

    def issue(self, **extra: Any) -> dict[str, Any]:
        r = self.api.token(self.delegator, "u-1", **extra)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def introspect(
        self,
        token: str,
        method: str | None = CHAT[0],
        path: str | None = CHAT[1],
        credential: str | None = None,
        client_ip: str = "10.0.0.7",
    ) -> Any:
        body = {"token": token, "method": method, "path": path, "client_ip": client_ip}
        return self.api.call("POST", "/v1/introspect", credential or self.verifier, json=body)

    def head(self) -> int:
        r = self.api.call("GET", "/v1/audit/verify", self.api.owner)
        assert r.status_code == 200, r.text
        assert r.json()["ok"] is True, r.json()
        head: int = r.json()["head_seq"]
        return head


@pytest.fixture
def setup(api: Api) -> Setup:
    api.subject("u-1", "alice@example.com")
    delegator_id, delegator = api.principal("bot", "delegator")
    _, verifier = api.principal("owui", "verifier")
    return Setup(api, delegator_id, delegator, verifier)


# --- who may introspect --------------------------------------------------------------------------


@pytest.mark.parametrize("roles", [("owner",), ("delegator",), ("auditor",), None])
def test_only_the_verifier_introspects(setup: Setup, roles: tuple[str, ...] | None) -> None:
    token = setup.issue()["access_token"]
    if roles is None:
        credential = setup.api.owner
    else:
        _, credential = setup.api.principal("other", *roles)
    r = setup.introspect(token, credential=credential)
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "forbidden"
    assert setup.api.entries(type="token.used") == []


def test_introspection_needs_a_credential(setup: Setup) -> None:
    token = setup.issue()["access_token"]
    body = {"token": token, "method": "POST", "path": "/api/chat/completions"}
    for headers in ({}, {"Authorization": f"Bearer {token}"}):
        r = setup.api.call("POST", "/v1/introspect", headers=headers, json=body)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert setup.api.entries(type="token.used") == []


# --- active tokens and their use -----------------------------------------------------------------


def test_active_answer_and_use_entry(setup: Setup) -> None:
    issued = setup.issue(scope="chat models:read", ttl_seconds=600)
    claims = segment(issued["access_token"].split(".")[1])
    r = setup.introspect(issued["access_token"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= ACTIVE_MEMBERS
    assert body["active"] is True
    assert body["sub"] == "u-1"
    assert body["act"] == {"sub": setup.delegator_id}
    assert body["client_id"] == setup.delegator_id
    assert body["scope"] == "chat models:read"
    assert body["exp"] == claims["exp"]
    assert body["jti"] == issued["jti"]
    assert "no-store" in r.headers["cache-control"]

    used = setup.api.entries(type="token.used")
    assert len(used) == 1
    entry = used[0]
    assert entry["actor"] == setup.delegator_id
    assert entry["subject"] == "u-1"
    assert set(entry["data"]) >= USED_MEMBERS
    assert entry["data"]["jti"] == issued["jti"]
    assert entry["data"]["method"] == "POST"
    assert entry["data"]["path"] == "/api/chat/completions"
    assert entry["data"]["client_ip"] == "10.0.0.7"
    assert entry["data"]["outcome"] == "allowed"
    assert issued["access_token"] not in json.dumps(entry)

    setup.introspect(issued["access_token"], "GET", "/api/models")
    assert len(setup.api.entries(type="token.used")) == 2, "every use is recorded"


@pytest.mark.parametrize(
    ("scope", "method", "path", "outcome"),
    [
        ("chat", "POST", "/api/chat/completions", "allowed"),
        ("chat", "post", "/api/chat/completions", "allowed"),
        ("chat", "DELETE", "/api/v1/users/x", "denied_scope"),
        ("chat", "GET", "/api/models", "denied_scope"),
        ("chat", "GET", "/api/v1/chats/", "denied_scope"),
        ("chat", "POST", "/api/chat/completions/../../v1/users/x", "denied_scope"),
        ("models:read", "GET", "/api/models", "allowed"),
        ("models:read", "POST", "/api/chat/completions", "denied_scope"),
        ("chat models:read", "GET", "/api/models", "allowed"),
        ("read", "GET", "/api/v1/users/", "allowed"),
        ("read", "DELETE", "/api/v1/chats/1", "denied_scope"),
        ("files", "GET", "/api/v1/files/abc", "allowed"),
        ("all", "DELETE", "/api/v1/users/x", "allowed"),
        ("chat", "GET", "/api/v1/auths/", "allowed"),
        ("models:read", "GET", "/api/v1/auths/", "allowed"),
        ("chats:read", "GET", "/api/v1/auths/", "allowed"),
        ("files", "GET", "/api/v1/auths/", "allowed"),
        ("read", "GET", "/api/v1/auths/", "allowed"),
        ("chat", "POST", "/api/v1/auths/", "denied_scope"),
        ("chat", "GET", "/api/v1/auths", "allowed"),  # Open WebUI redirects it to the route
        ("chat", "HEAD", "/api/v1/auths/", "allowed"),
        ("models:read", "HEAD", "/api/models", "allowed"),  # a GET rule is a HEAD rule
        ("chat", "HEAD", "/api/chat/completions", "denied_scope"),
        ("models:read", "GET", "/api/models?id=x", "denied_scope"),  # exact rules, closed
        ("read", "GET", "/api/v1/auths/api_key?x=1", "denied_scope"),  # never, in any spelling
    ],
)
def test_use_outcome_follows_the_scopes(
    api: Api, scope: str, method: str, path: str, outcome: str
) -> None:
    api.subject("u-1", "alice@example.com")
    delegator_id, delegator = api.principal("bot", "delegator", policy={"scopes": scope.split()})
    _, verifier = api.principal("owui", "verifier")
    setup = Setup(api, delegator_id, delegator, verifier)
    issued = setup.issue(scope=scope)
    r = setup.introspect(issued["access_token"], method, path)
    assert r.status_code == 200, r.text
    assert r.json()["active"] is True
    (entry,) = api.entries(type="token.used")
    assert entry["data"]["outcome"] == outcome, entry
    assert entry["data"]["path"] == path


@pytest.mark.parametrize(
    "body",
    [{}, {"method": "GET"}, {"path": "/api/models"}, {"method": None, "path": None}],
    ids=["token-only", "no-path", "no-method", "nulls"],
)
def test_a_use_naming_no_request_is_recorded_as_allowing_nothing(
    setup: Setup, body: dict[str, Any]
) -> None:
    """Without a method and a path there is no request whose scope could be checked: the token
    is active (it verifies, is live, was issued), but the use is recorded ``denied_scope``, so
    the log never says "allowed" of what nobody checked."""
    issued = setup.issue(scope="chat models:read")
    r = setup.api.call(
        "POST", "/v1/introspect", setup.verifier, json={"token": issued["access_token"], **body}
    )
    assert r.status_code == 200, r.text
    assert r.json()["active"] is True
    assert r.json()["outcome"] == "denied_scope"
    (used,) = setup.api.entries(type="token.used")
    assert used["data"]["outcome"] == "denied_scope"
    assert (used["data"]["method"], used["data"]["path"]) == (
        body.get("method"),
        body.get("path"),
    )
    assert setup.api.call("GET", "/v1/audit/verify", setup.api.owner).json()["ok"] is True


# --- tokens that are no longer good --------------------------------------------------------------


@pytest.mark.parametrize("past", [0, 1, 31])  # at exp, within the 30 s leeway, beyond it
def test_expired_token_is_inactive_and_rejected(
    setup: Setup, clock: MovableClock, past: int
) -> None:
    """From exp on by the vault's own clock: the leeway is for other clocks (nbf, iat)."""
    issued = setup.issue(ttl_seconds=60)
    clock.advance(50)
    assert setup.introspect(issued["access_token"]).json()["active"] is True
    clock.advance(60 - 50 + past)
    r = setup.introspect(issued["access_token"])
    assert r.status_code == 200, r.text
    assert r.json() == {"active": False}
    (rejected,) = setup.api.entries(type="token.rejected")
    assert rejected["data"]["jti"] == issued["jti"]
    assert rejected["actor"] == setup.delegator_id
    assert rejected["subject"] == "u-1"
    assert issued["access_token"] not in json.dumps(rejected)
    assert len(setup.api.entries(type="token.used")) == 1, "the expired use is not a use"


def test_a_token_past_exp_that_revocation_no_longer_takes_is_not_honoured(
    setup: Setup, clock: MovableClock
) -> None:
    """Revocation takes the tokens still live (exp in the future); introspection must not
    honour one that revocation no longer takes, or an owner's revoke would do nothing to it."""
    issued = setup.issue(ttl_seconds=60)
    clock.advance(61)
    revoked = setup.api.call("POST", "/v1/revoke", setup.api.owner, json={"jti": issued["jti"]})
    assert revoked.json() == {"revoked": 0}
    assert setup.introspect(issued["access_token"]).json() == {"active": False}
    assert setup.api.entries(type="token.used") == []
    (rejected,) = setup.api.entries(type="token.rejected")
    assert rejected["data"]["reason"] == "expired_token"


def test_revoked_token_is_inactive_and_rejected(setup: Setup) -> None:
    issued = setup.issue()
    other = setup.issue()
    r = setup.api.call("POST", "/v1/revoke", setup.api.owner, json={"jti": issued["jti"]})
    assert r.json() == {"revoked": 1}
    answer = setup.introspect(issued["access_token"])
    assert answer.status_code == 200
    assert answer.json() == {"active": False}
    (rejected,) = setup.api.entries(type="token.rejected")
    assert rejected["data"]["jti"] == issued["jti"]
    assert setup.api.entries(type="token.used") == []
    assert setup.introspect(other["access_token"]).json()["active"] is True


# --- tokens that were never ours: inactive, and the log is not touched ---------------------------


def _forge(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(claims).encode())
    return f"{head}.{body}.{b64(sign(f'{head}.{body}'.encode()))}"


def _attacker(token: str) -> str:
    head, body, _ = token.split(".")
    return _forge(segment(head), segment(body), Ed25519PrivateKey.generate().sign)


def _alg_none(token: str) -> str:
    head, body, _ = token.split(".")
    header = {**segment(head), "alg": "none"}
    return f"{b64(json.dumps(header).encode())}.{body}."


def _hmac_with_public_key(token: str, x: str) -> str:
    head, body, _ = token.split(".")
    header = {**segment(head), "alg": "HS256"}
    return jwt.encode(segment(body), unb64(x) * 2, algorithm="HS256", headers=header)


def _tampered_payload(token: str) -> str:
    head, body, sig = token.split(".")
    claims = {**segment(body), "scope": "all"}
    return f"{head}.{b64(json.dumps(claims).encode())}.{sig}"


def _flipped_signature(token: str) -> str:
    head, body, sig = token.split(".")
    raw = bytearray(unb64(sig))
    raw[0] ^= 1
    return f"{head}.{body}.{b64(bytes(raw))}"


def _unknown_kid(token: str) -> str:
    head, body, _ = token.split(".")
    header = {**segment(head), "kid": b64(secrets.token_bytes(32))}
    return _forge(header, segment(body), Ed25519PrivateKey.generate().sign)


def _wrong_typ(token: str) -> str:
    head, body, _ = token.split(".")
    header = {**segment(head), "typ": "JWT"}
    return _forge(header, segment(body), Ed25519PrivateKey.generate().sign)


FORGERIES: dict[str, Callable[[str, str], str]] = {
    "other-ed25519-key-with-our-kid": lambda t, _x: _attacker(t),
    "alg-none": lambda t, _x: _alg_none(t),
    "hs256-key-confusion": _hmac_with_public_key,
    "tampered-payload": lambda t, _x: _tampered_payload(t),
    "flipped-signature": lambda t, _x: _flipped_signature(t),
    "unknown-kid": lambda t, _x: _unknown_kid(t),
    "wrong-typ": lambda t, _x: _wrong_typ(t),
    "truncated": lambda t, _x: t.rsplit(".", 1)[0],
    "trailing-garbage": lambda t, _x: t + ".x",
    "garbage": lambda _t, _x: "garbage",
    "three-garbage-parts": lambda _t, _x: "a.b.c",
    "oversized": lambda t, _x: t + "A" * 9000,
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_foreign_token_is_inactive_and_not_audited(setup: Setup, name: str) -> None:
    issued = setup.issue()
    jwks = setup.api.call("GET", "/.well-known/jwks.json").json()
    (jwk,) = jwks["keys"]
    forged = FORGERIES[name](issued["access_token"], jwk["x"])
    assert forged != issued["access_token"]
    before = setup.head()
    r = setup.introspect(forged)
    assert r.status_code == 200, r.text
    assert r.json() == {"active": False}
    assert setup.head() == before, "an unauthenticated forgery must not add to the audit log"
    # and the genuine token is still fine
    assert setup.introspect(issued["access_token"]).json()["active"] is True


# --- signed by the vault's own key, but wrong: inactive, and recorded ----------------------------


@pytest.fixture
def vault_key(settings: Settings, api: Api) -> Iterator[Any]:
    """The vault's current token-signing key, opened in-process with the master key (the HTTP
    API never hands it out): to mint tokens that verify but break another rule."""
    vault = open_vault(settings)
    try:
        yield vault.keys.token_signing()
    finally:
        vault.close()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"aud": "another-app"}, "wrong_audience"),
        ({"iss": "https://elsewhere.example"}, "wrong_issuer"),
        ({"jti": "never-issued-" + "x" * 22}, "unknown_token"),
        ({"exp": 2**31}, "unknown_token"),  # an issued jti, not as issued
        ({"client_id": "p_someone_else"}, "invalid_claim"),
        ({"scope": None}, "missing_claim"),
        ({"exp": None}, "missing_claim"),
    ],
)
def test_vault_signed_but_invalid_token_is_rejected(
    setup: Setup, vault_key: Any, change: dict[str, Any], reason: str
) -> None:
    issued = setup.issue()
    head, body, _ = issued["access_token"].split(".")
    claims = {**segment(body), **change}
    claims = {k: v for k, v in claims.items() if v is not None}
    token = jwt.encode(claims, vault_key.private_key, algorithm="EdDSA", headers=segment(head))
    assert setup.introspect(issued["access_token"]).json()["active"] is True  # the key is right
    r = setup.introspect(token)
    assert r.status_code == 200, r.text
    assert r.json() == {"active": False}
    (rejected,) = setup.api.entries(type="token.rejected")
    assert rejected["data"]["reason"] == reason, rejected
    assert token not in json.dumps(rejected)
    assert len(setup.api.entries(type="token.used")) == 1


def test_a_revoked_tokens_claims_re_signed_otherwise_are_an_unknown_token(
    setup: Setup, vault_key: Any
) -> None:
    """A holder of the signing key re-signs a revoked token's claims with a later exp: the jti
    was issued, but not as this. The record says ``unknown_token`` (a leaked key), not
    ``revoked_token``; the genuine revoked token is still ``revoked_token``."""
    issued = setup.issue()
    revoked = setup.api.call("POST", "/v1/revoke", setup.api.owner, json={"jti": issued["jti"]})
    assert revoked.json() == {"revoked": 1}
    head, body, _ = issued["access_token"].split(".")
    claims = {**segment(body), "exp": segment(body)["exp"] + 600}
    forged = jwt.encode(claims, vault_key.private_key, algorithm="EdDSA", headers=segment(head))

    assert setup.introspect(forged).json() == {"active": False}
    assert setup.introspect(issued["access_token"]).json() == {"active": False}

    reasons = [e["data"]["reason"] for e in setup.api.entries(type="token.rejected")]
    assert reasons == ["unknown_token", "revoked_token"]


def _typ(header: dict[str, Any], claims: dict[str, Any]) -> tuple[Any, Any]:
    return {**header, "typ": "JWT"}, claims


def _no_typ(header: dict[str, Any], claims: dict[str, Any]) -> tuple[Any, Any]:
    return {k: v for k, v in header.items() if k != "typ"}, claims


def _crit(header: dict[str, Any], claims: dict[str, Any]) -> tuple[Any, Any]:
    return {**header, "crit": ["exp"]}, claims


def _oversized(header: dict[str, Any], claims: dict[str, Any]) -> tuple[Any, Any]:
    return header, {**claims, "padding": "x" * 9000}


def _payload_not_json(header: dict[str, Any], claims: dict[str, Any]) -> tuple[Any, Any]:
    return header, None


FORM_REFUSALS = {
    "typ-JWT": (_typ, "wrong_token_type"),
    "no-typ": (_no_typ, "wrong_token_type"),
    "crit": (_crit, "malformed_token"),
    "over-8-KiB": (_oversized, "token_too_large"),
    "payload-not-json": (_payload_not_json, "malformed_token"),
}


def _signed(header: dict[str, Any], claims: Any, sign: Callable[[bytes], bytes]) -> str:
    head = b64(json.dumps(header).encode())
    body = b64(b"not json" if claims is None else json.dumps(claims).encode())
    return f"{head}.{body}.{b64(sign(f'{head}.{body}'.encode()))}"


@pytest.mark.parametrize("name", sorted(FORM_REFUSALS))
def test_a_token_refused_by_its_form_is_recorded_when_the_vault_signed_it(
    setup: Setup, vault_key: Any, name: str
) -> None:
    """Its header or size is refused before its signature is checked; a token that verifies
    with the vault's key is then recorded all the same (SPEC §6), a forgery never."""
    change, reason = FORM_REFUSALS[name]
    issued = setup.issue()
    head, body, _ = issued["access_token"].split(".")
    header, claims = change(segment(head), segment(body))
    forged = _signed(header, claims, Ed25519PrivateKey.generate().sign)  # our kid, not our key
    no_kid = _signed({k: v for k, v in header.items() if k != "kid"}, claims, vault_key.sign)
    before = setup.head()
    for token in (forged, no_kid):
        r = setup.introspect(token)
        assert r.status_code == 200, r.text
        assert r.json() == {"active": False}
    assert setup.head() == before, "only a token one of our keys signed is recorded"

    token = _signed(header, claims, vault_key.sign)
    r = setup.introspect(token)
    assert r.status_code == 200, r.text
    assert r.json() == {"active": False}
    (rejected,) = setup.api.entries(type="token.rejected")
    assert rejected["data"]["reason"] == reason, rejected
    assert rejected["data"]["jti"] == (None if claims is None else issued["jti"])
    assert rejected["subject"] == (None if claims is None else "u-1")
    assert rejected["data"]["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in json.dumps(rejected)
    assert len(setup.api.entries(type="token.used")) == 0


# --- the request itself --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"token": ""}',
        b'{"token": 5}',
        b'{"token": "a.b.c", "method": 5}',
        b'{"token": "a.b.c", "path": ["x"]}',
        b'{"token": "a.b.c", "method": "GET", "path": "/api/models", "extra": 1}',
    ],
)
def test_bad_introspection_request_is_400(setup: Setup, content: bytes) -> None:
    before = setup.head()
    r = setup.api.raw("POST", "/v1/introspect", setup.verifier, content)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error", "error_description"}
    assert r.json()["error"] == "invalid_request"
    assert setup.head() == before


# --- what the verifier says of the request is audited, never a secret in it ---------------------


@pytest.mark.parametrize("times", [0, 1, 2], ids=["plain", "escaped", "escaped-twice"])
def test_a_secret_in_the_request_never_reaches_the_log(setup: Setup, times: int) -> None:
    """SPEC §7: no entry ever contains a token or a credential. A credential or a token inside
    the path (or the method, or the client address) the verifier reports is replaced in the
    ``token.used`` and ``token.rejected`` entries, also percent-escaped once or twice (``%2E``
    for the token's dots); the scope is still decided on the real path, and the log still
    verifies with its semantics."""
    issued = setup.issue(scope="models:read")
    token = issued["access_token"]
    secrets_in = [setup.delegator, setup.api.owner, token, "sk-" + "a1" * 12]
    sent = [escaped(secret, times) for secret in secrets_in]
    path = f"/api/models/{sent[0]}?key={sent[1]}&t={sent[2]}"
    r = setup.introspect(token, "GET", path, client_ip=sent[3])
    assert r.status_code == 200, r.text
    assert r.json()["active"] is True
    (used,) = setup.api.entries(type="token.used")
    assert used["data"]["path"] == "/api/models/[redacted]?key=[redacted]&t=[redacted]"
    assert used["data"]["client_ip"] == "[redacted]"
    assert used["data"]["outcome"] == "allowed"

    # Outside the scope: refused, recorded as such, still without the secret.
    r = setup.introspect(token, "DELETE", f"/api/v1/users/{setup.verifier}")
    assert r.json()["active"] is True
    denied = setup.api.entries(type="token.used")[-1]
    assert denied["data"]["outcome"] == "denied_scope"
    assert denied["data"]["path"] == "/api/v1/users/[redacted]"

    # A rejected use (revoked) is recorded without it too.
    revoked = setup.api.call("POST", "/v1/revoke", setup.delegator, json={"jti": issued["jti"]})
    assert revoked.status_code == 200, revoked.text
    assert setup.introspect(token, "GET", path).json() == {"active": False}
    (rejected,) = setup.api.entries(type="token.rejected")
    assert rejected["data"]["path"] == used["data"]["path"]

    log = json.dumps(setup.api.entries())
    for secret in [*secrets_in, setup.verifier]:
        assert secret[-12:] not in log  # random in every kind: no escaping changes it
    verified = setup.api.call("GET", "/v1/audit/verify", setup.api.owner).json()
    assert verified["ok"] is True, verified
