"""Over HTTP: who may call what (SPEC §3, §6), the error contract (JSON bodies, status codes,
never a stack trace), the OpenAPI document, and that no secret ever reaches the audit log, an
error body or the operational log."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support import Api, LiveServer, MovableClock, escaped
from vault.config import Settings
from vault.ops.runtime import open_vault
from vault.ops.setup import InitResult

CREDENTIAL_SHAPE = re.compile(r"dv_[A-Za-z0-9_-]{43}")
JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
STACK_TRACE = ("Traceback", 'File "')
PINNED_PATHS = {
    "/v1/token",
    "/v1/introspect",
    "/v1/revoke",
    "/.well-known/jwks.json",
    "/.well-known/audit-keys.json",
    "/v1/principals",
    "/v1/principals/{}/policy",
    "/v1/principals/{}/disable",
    "/v1/principals/{}/credentials",
    "/v1/subjects",
    "/v1/subjects/{}",
    "/v1/audit/entries",
    "/v1/audit/export",
    "/v1/audit/checkpoint",
    "/v1/audit/verify",
    "/healthz",
    "/readyz",
}


def assert_error_body(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].split(";")[0] == "application/json", r.headers
    body = r.json()
    assert set(body) == {"error", "error_description"}, body
    assert isinstance(body["error"], str)
    assert body["error"]
    assert isinstance(body["error_description"], str)
    assert body["error_description"]
    if code is not None:
        assert body["error"] == code, body
    for marker in STACK_TRACE:
        assert marker not in r.text
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")


@dataclass
class Cast:
    """One principal of each role, and a subject, on a live vault."""

    api: Api
    ids: dict[str, str]
    credentials: dict[str, str]


@pytest.fixture
def cast(api: Api, initialized: InitResult) -> Cast:
    api.subject("u-1", "alice@example.com")
    ids = {"owner": initialized.owner_id}
    credentials = {"owner": api.owner}
    for role in ("delegator", "auditor", "verifier"):
        ids[role], credentials[role] = api.principal(role + "-1", role)
    ids["victim"], credentials["victim"] = api.principal("victim", "auditor")
    r = api.call("POST", "/v1/audit/checkpoint", api.owner)
    assert r.status_code == 201, r.text
    return Cast(api, ids, credentials)


# --- who may call what ---------------------------------------------------------------------------

MATRIX: list[tuple[str, str, Any, set[str]]] = [
    ("GET", "/v1/principals", None, {"owner"}),
    ("POST", "/v1/principals", {"name": "n", "roles": ["auditor"]}, {"owner"}),
    ("PUT", "/v1/principals/{delegator}/policy", {"scopes": ["chat"]}, {"owner"}),
    ("POST", "/v1/principals/{delegator}/credentials", None, {"owner"}),
    ("POST", "/v1/principals/{victim}/disable", None, {"owner"}),
    ("PUT", "/v1/subjects/u-9", {"email": "u9@example.com"}, {"owner"}),
    ("GET", "/v1/subjects", None, {"owner", "delegator"}),
    ("GET", "/v1/subjects/u-1", None, {"owner", "delegator"}),
    ("GET", "/v1/audit/entries", None, {"owner", "auditor"}),
    ("GET", "/v1/audit/export", None, {"owner", "auditor"}),
    ("GET", "/v1/audit/checkpoint", None, {"owner", "auditor"}),
    ("POST", "/v1/audit/checkpoint", None, {"owner"}),
    ("GET", "/v1/audit/verify", None, {"owner", "auditor"}),
    ("POST", "/v1/introspect", {"token": "a.b.c"}, {"verifier"}),
    ("POST", "/v1/revoke", {"jti": "no-such-token"}, {"owner", "delegator"}),
    ("POST", "/v1/token", {"subject": "u-1", "reason": "TICKET-1"}, {"delegator"}),
    ("POST", "/v1/keys/rotate", None, {"owner"}),
]


@pytest.mark.parametrize("role", ["owner", "delegator", "auditor", "verifier"])
def test_role_matrix(cast: Cast, role: str) -> None:
    wrong: list[str] = []
    for method, template, body, allowed in MATRIX:
        path = template.format(**cast.ids)
        kw = {} if body is None else {"json": body}
        r = cast.api.call(method, path, cast.credentials[role], **kw)
        if role in allowed:
            if not 200 <= r.status_code < 300:
                wrong.append(f"{method} {path}: {role} allowed but got {r.status_code} {r.text}")
        elif r.status_code != 403:
            wrong.append(f"{method} {path}: {role} not allowed but got {r.status_code}")
        else:
            assert_error_body(r, 403)
    assert not wrong, "\n".join(wrong)


def test_every_private_endpoint_needs_a_credential(cast: Cast) -> None:
    for method, template, body, _ in MATRIX:
        path = template.format(**cast.ids)
        kw = {} if body is None else {"json": body}
        for headers in ({}, {"Authorization": "Bearer dv_" + "x" * 43}, {"Authorization": "x"}):
            r = cast.api.call(method, path, headers=dict(headers), **kw)
            assert_error_body(r, 401, "unauthorized")
    # the victim was never disabled by any of those calls
    assert cast.api.call("GET", "/v1/audit/verify", cast.credentials["victim"]).status_code == 200


@pytest.mark.parametrize(
    "path", ["/.well-known/jwks.json", "/.well-known/audit-keys.json", "/healthz", "/readyz"]
)
def test_public_endpoints_need_no_credential(api: Api, path: str) -> None:
    r = api.call("GET", path)
    assert r.status_code == 200, r.text
    for key in r.json().get("keys", []):
        assert "d" not in key, "a public key set must hold no private key material"


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/jwks.json",
        "/.well-known/audit-keys.json",
        "/healthz",
        "/readyz",
        "/openapi.json",
    ],
)
def test_public_endpoints_answer_head_as_get_without_a_body(api: Api, path: str) -> None:
    got = api.call("GET", path)
    head = api.call("HEAD", path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    for name in ("content-type", "content-length", "cache-control"):
        assert head.headers.get(name) == got.headers.get(name), name


def test_key_sets_are_apart(api: Api, initialized: InitResult) -> None:
    tokens = api.call("GET", "/.well-known/jwks.json").json()
    audit = api.call("GET", "/.well-known/audit-keys.json").json()
    assert [k["kid"] for k in tokens["keys"]] == [initialized.token_kid]
    assert initialized.audit_kid in [k["kid"] for k in audit["keys"]]
    assert initialized.token_kid not in [k["kid"] for k in audit["keys"]]
    for key in tokens["keys"] + audit["keys"]:
        assert set(key) <= {"kty", "crv", "x", "kid", "alg", "use"}, key


# --- the error contract --------------------------------------------------------------------------


def _chunks(total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(8192, total - sent)
        sent += 8192


OVER_LIMIT = 64 * 1024 + 1


def test_an_email_and_an_id_never_name_two_subjects(cast: Cast) -> None:
    api = cast.api
    api.subject("carol@example.com", "carol.work@example.com")  # an id that is an email
    r = api.call(
        "PUT", "/v1/subjects/u-4", api.owner, json={"email": "Carol@Example.com", "name": "c"}
    )
    assert_error_body(r, 409, "conflict")
    r = api.call("GET", "/v1/subjects/carol@example.com", api.owner)
    assert r.status_code == 200
    assert r.json()["email"] == "carol.work@example.com"
    assert api.call("GET", "/v1/subjects/u-4", api.owner).status_code == 404
    # and a subject may still take its own id as its email
    r = api.call(
        "PUT", "/v1/subjects/carol@example.com", api.owner, json={"email": "carol@example.com"}
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("method", "path", "role", "kw", "status", "code"),
    [
        ("GET", "/v1/nope", "owner", {}, 404, "not_found"),
        ("GET", "/nope", None, {}, 404, "not_found"),
        ("POST", "/healthz", None, {}, 405, "method_not_allowed"),
        ("GET", "/v1/token", "delegator", {}, 405, "method_not_allowed"),
        ("DELETE", "/v1/principals", "owner", {}, 405, "method_not_allowed"),
        ("POST", "/v1/principals", "owner", {"content": b"{not json"}, 400, "invalid_request"),
        ("POST", "/v1/principals", "owner", {"content": b""}, 400, "invalid_request"),
        ("POST", "/v1/principals", "owner", {"content": b"\xff\xfe"}, 400, "invalid_request"),
        ("POST", "/v1/principals", "owner", {"json": {"name": "x", "roles": ["root"]}}, 400, None),
        ("POST", "/v1/principals", "owner", {"json": {"name": "x", "roles": []}}, 400, None),
        ("POST", "/v1/principals", "owner", {"json": {"roles": ["auditor"], "x": 1}}, 400, None),
        (
            "POST",
            "/v1/principals",
            "owner",
            {"json": {"name": "x", "roles": ["delegator"], "policy": {"max_ttl_seconds": 3601}}},
            400,
            None,
        ),
        (
            "POST",
            "/v1/principals",
            "owner",
            {"json": {"name": "x", "roles": ["delegator"], "policy": {"scopes": ["nope"]}}},
            400,
            None,
        ),
        ("PUT", "/v1/principals/p_none/policy", "owner", {"json": {}}, 404, "not_found"),
        ("PUT", "/v1/subjects/u-1", "owner", {"json": {"email": "not-an-email"}}, 400, None),
        ("PUT", "/v1/subjects/u-2", "owner", {"json": {"email": "alice@example.com"}}, 409, None),
        # a subject is named by id or by email: neither may come to name two subjects
        (
            "PUT",
            "/v1/subjects/Alice@example.com",
            "owner",
            {"json": {"email": "a@x.io"}},
            409,
            None,
        ),
        ("GET", "/v1/subjects/nobody", "owner", {}, 404, "unknown_subject"),
        # a path segment clients resolve: no subject may be named by it
        ("PUT", "/v1/subjects/%2E", "owner", {"json": {"email": "x@example.com"}}, 400, None),
        ("PUT", "/v1/subjects/%2E%2E", "owner", {"json": {"email": "x@example.com"}}, 400, None),
        # calls that take no body refuse one with members, as an unknown member anywhere else
        ("POST", "/v1/principals/p_none/credentials", "owner", {"json": {"x": 1}}, 400, None),
        ("POST", "/v1/principals/p_none/disable", "owner", {"json": {"x": 1}}, 400, None),
        ("POST", "/v1/principals/p_none/disable", "owner", {"content": b"[]"}, 400, None),
        ("POST", "/v1/principals/p_none/disable", "owner", {"json": {}}, 404, "not_found"),
        ("POST", "/v1/audit/checkpoint", "owner", {"json": {"seq": 1}}, 400, None),
        ("GET", "/v1/audit/entries?limit=5000", "owner", {}, 400, None),
        ("GET", "/v1/audit/entries?after_seq=-1", "owner", {}, 400, None),
        ("GET", "/v1/audit/entries?since=yesterday", "owner", {}, 400, None),
        ("POST", "/v1/token", "delegator", {"content": b"{"}, 400, "invalid_request"),
        ("POST", "/v1/token", "delegator", {"content": b" " * OVER_LIMIT}, 413, None),
        ("POST", "/v1/principals", "owner", {"content": b" " * OVER_LIMIT}, 413, None),
        ("POST", "/v1/introspect", "verifier", {"content": b" " * OVER_LIMIT}, 413, None),
        ("POST", "/v1/revoke", "owner", {"content": _chunks}, 413, None),
        ("POST", "/v1/token", "delegator", {"content": _chunks}, 413, None),
        ("POST", "/v1/keys/rotate", "owner", {"content": _chunks}, 413, None),
        ("POST", "/v1/keys/rotate", "owner", {"content": b"null"}, 400, "invalid_request"),
        # a trailing slash is not one of the vault's paths: 404, no redirect built from Host
        ("POST", "/v1/token/", "delegator", {"json": {}}, 404, "not_found"),
        ("GET", "/v1/subjects/", "owner", {}, 404, "not_found"),
        # a path the server can only decode with U+FFFD in it would name another subject
        ("PUT", "/v1/subjects/%FF", "owner", {"json": {"email": "x@example.com"}}, 400, None),
        (
            "PUT",
            "/v1/subjects/u%ED%A0%80",
            "owner",
            {"json": {"email": "x@example.com"}},
            400,
            None,
        ),
        ("POST", "/v1/token%C0", "delegator", {"json": {}}, 400, "invalid_request"),
    ],
)
def test_errors_are_json_with_a_code(
    cast: Cast,
    method: str,
    path: str,
    role: str | None,
    kw: dict[str, Any],
    status: int,
    code: str | None,
) -> None:
    kw = dict(kw)
    if kw.get("content") is _chunks:  # streamed, no Content-Length: the limit still holds
        kw["content"] = _chunks(OVER_LIMIT)
    elif "content" in kw:
        kw["headers"] = {"Content-Type": "application/json"}
    credential = None if role is None else cast.credentials[role]
    r = cast.api.call(method, path, credential, **kw)
    assert_error_body(r, status, code)
    if status == 413:
        assert r.json()["error"] == "request_too_large"


def test_body_at_the_limit_is_read(cast: Cast) -> None:
    body = json.dumps({"name": "n", "roles": ["auditor"]}).encode()
    padded = body + b" " * (64 * 1024 - len(body))
    r = cast.api.raw("POST", "/v1/principals", cast.api.owner, padded)
    assert r.status_code == 201, r.text


def test_openapi_lists_the_pinned_paths(api: Api) -> None:
    r = api.call("GET", "/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    document = r.json()
    assert document["openapi"].startswith("3.")
    paths = {re.sub(r"\{[^}]+\}", "{}", p) for p in document["paths"]}
    assert paths >= PINNED_PATHS, sorted(PINNED_PATHS - paths)
    token = document["paths"]["/v1/token"]["post"]
    assert "requestBody" in token
    assert "200" in token["responses"]
    # A status a route answers with is in its document: a new subject is 201, a known one 200.
    assert {"200", "201"} <= set(document["paths"]["/v1/subjects/{subject_id}"]["put"]["responses"])
    assert "201" in document["paths"]["/v1/principals"]["post"]["responses"]


# --- secrets never leak --------------------------------------------------------------------------


@dataclass
class Run:
    """What a busy session handed out (secrets) and every error body it received."""

    secrets: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    errors: list[httpx.Response] = field(default_factory=list)


def _record(run: Run, r: httpx.Response) -> httpx.Response:
    if r.status_code >= 400:
        run.errors.append(r)
    return r


def busy_session(api: Api, clock: MovableClock) -> Run:
    """Create principals, issue, use, refuse, revoke, disable: every kind of entry."""
    run = Run(secrets=[api.owner])
    api.subject("u-1", "alice@example.com")
    api.subject("u-2", "bob@example.com", active=False)
    delegator_id, delegator = api.principal("bot", "delegator")
    _, verifier = api.principal("owui", "verifier")
    _, auditor = api.principal("reviewer", "auditor")
    victim_id, victim = api.principal("victim", "delegator")
    r = api.call("POST", f"/v1/principals/{delegator_id}/credentials", api.owner)
    extra = r.json()["credential"]
    run.secrets += [delegator, verifier, auditor, victim, extra]

    for credential, scope, ttl in ((delegator, "chat", 60), (extra, "chats:read", 600)):
        r = api.token(credential, "u-1", scope=scope, ttl_seconds=ttl)
        assert r.status_code == 200, r.text
        run.tokens.append(r.json()["access_token"])
    r = api.token(victim, "u-1")
    run.tokens.append(r.json()["access_token"])
    token, other, victims = run.tokens

    def introspect(tok: str, method: str, path: str) -> httpx.Response:
        body = {"token": tok, "method": method, "path": path, "client_ip": "10.1.2.3"}
        return _record(run, api.call("POST", "/v1/introspect", verifier, json=body))

    assert introspect(token, "POST", "/api/chat/completions").json()["active"] is True
    assert introspect(token, "DELETE", "/api/v1/users/x").json()["active"] is True
    revoked = api.call("POST", "/v1/revoke", delegator, json={"jti": _jti(other)})
    assert revoked.json() == {"revoked": 1}
    assert introspect(other, "GET", "/api/v1/chats/").json() == {"active": False}
    assert introspect(token + "x", "GET", "/api/v1/auths/").json() == {"active": False}

    # refusals, each carrying a secret somewhere the vault must not keep it
    for body in (
        {"subject": "u-1", "reason": f"ticket {extra}"},
        {"subject": "u-1", "reason": f"see {token}"},
        {"subject": "u-1", "reason": "sk-" + "a1B2" * 8},
        {"subject": victim, "reason": "TICKET-2"},
        {"subject": "u-1", "scope": token, "reason": "TICKET-3"},
        {"subject": "u-1", "scope": f"chat {extra}", "reason": "TICKET-4"},
        {"subject": "u-2", "reason": "TICKET-5"},
        {"subject": "u-1", "reason": "TICKET-6", "ttl_seconds": 99999},
    ):
        r = _record(run, api.call("POST", "/v1/token", delegator, json=body))
        assert r.status_code in (400, 403, 404), r.text
    for credential in (token, victim[:-1] + "x", api.owner + "x"):
        _record(run, api.call("GET", "/v1/principals", credential))
    _record(run, api.call("GET", "/v1/principals", verifier))
    _record(run, api.call("POST", "/v1/principals", api.owner, json={"name": token, "roles": []}))

    assert api.call("POST", f"/v1/principals/{victim_id}/disable", api.owner).status_code == 200
    assert introspect(victims, "GET", "/api/models").json() == {"active": False}
    clock.advance(60 + 31)
    assert introspect(token, "POST", "/api/chat/completions").json() == {"active": False}
    assert api.call("POST", "/v1/audit/checkpoint", api.owner).status_code == 201
    return run


def _jti(token: str) -> str:
    payload = token.split(".")[1]
    jti: str = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]
    return jti


def _at_rest(settings: Settings) -> list[str]:
    """Key material as stored and as used: sealed envelopes, raw private keys, the master key."""
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            sealed = [
                row[0] for row in conn.execute(text("SELECT private_sealed FROM signing_keys"))
            ]
    finally:
        engine.dispose()
    assert sealed
    assert all(s.startswith("dv1.") for s in sealed)
    vault = open_vault(settings)
    try:
        pairs = [vault.keys.token_signing(), vault.keys.audit_signing()]
    finally:
        vault.close()
    raw = [
        base64.urlsafe_b64encode(p.private_key.private_bytes_raw()).rstrip(b"=").decode()
        for p in pairs
    ]
    assert settings.master_key
    return [*sealed, *raw, settings.master_key]


def assert_no_secret(text_: str, run: Run, where: str) -> None:
    for secret in [*run.secrets, *run.tokens]:
        assert secret not in text_, f"a credential or token leaked into {where}"
    assert not CREDENTIAL_SHAPE.search(text_), f"a dv_ credential leaked into {where}"
    assert not JWT_SHAPE.search(text_), f"a JWT leaked into {where}"
    # a token split at its dots (e.g. only its signature) is still a leak
    for token in run.tokens:
        for part in token.split("."):
            assert part not in text_, f"part of a token leaked into {where}"


def test_no_secret_in_the_audit_log_or_error_bodies(
    api: Api, settings: Settings, clock: MovableClock
) -> None:
    run = busy_session(api, clock)
    r = api.call("GET", "/v1/audit/export", api.owner)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    export = r.text
    lines = [json.loads(line) for line in export.splitlines()]
    kinds = [line.get("type") for line in lines]
    # the session really did everything whose entries could leak
    for kind in (
        "principal.created",
        "credential.created",
        "token.issued",
        "token.used",
        "token.denied",
        "token.rejected",
        "token.revoked",
        "principal.disabled",
        "key.created",
        "audit.checkpoint",
    ):
        assert kind in kinds, kind
    assert kinds.count("token.denied") >= 8
    assert any(line.get("kind") == "checkpoint" for line in lines)

    assert_no_secret(export, run, "the audit export")
    assert "dv1." not in export, "a sealed key envelope leaked into the audit export"
    for material in _at_rest(settings):
        assert material not in export, "key material leaked into the audit export"

    assert len(run.errors) == 13
    for error in run.errors:
        assert set(error.json()) == {"error", "error_description"}
        assert_no_secret(error.text, run, f"an error body ({error.status_code})")
        for material in _at_rest(settings)[-1:]:
            assert material not in error.text


@pytest.mark.parametrize("times", [0, 1, 2], ids=["plain", "escaped", "escaped-twice"])
@pytest.mark.parametrize("kind", ["credential", "jwt", "sk-key"])
def test_reason_holding_a_secret_is_refused_and_not_kept(api: Api, kind: str, times: int) -> None:
    api.subject("u-1", "alice@example.com")
    delegator_id, delegator = api.principal("bot", "delegator")
    issued = api.token(delegator, "u-1")
    assert issued.status_code == 200
    secret = {
        "credential": delegator,
        "jwt": issued.json()["access_token"],
        "sk-key": "sk-" + "0123456789abcdef" * 2,
    }[kind]
    reason = f"TICKET-7 user pasted {escaped(secret, times)} into the form"
    r = api.call("POST", "/v1/token", delegator, json={"subject": "u-1", "reason": reason})
    assert_error_body(r, 400, "invalid_request")
    tail = secret[-12:]  # random in every kind: no escaping changes it
    assert tail not in r.text
    denial = api.entries(type="token.denied", actor=delegator_id)[-1]
    assert denial["data"]["error"] == "invalid_request"
    assert tail not in json.dumps(denial)
    assert "TICKET-7" not in json.dumps(denial), "the whole reason must be withheld"
    assert len(api.entries(type="token.issued")) == 1


@pytest.fixture
def logged_server(
    settings: Settings,
    clock: MovableClock,
    initialized: InitResult,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Api]:
    """A live vault whose operational log (``vault`` and ``uvicorn``, access log included) is
    captured at DEBUG."""
    caplog.set_level(logging.DEBUG, logger="vault")
    server = LiveServer(settings, clock)  # uvicorn configures its loggers here
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
    saved = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    for name in ("uvicorn", "uvicorn.access"):
        logging.getLogger(name).addHandler(caplog.handler)
    try:
        with server:
            client = Api(server.url, initialized.credential)
            try:
                yield client
            finally:
                client.close()
    finally:
        for name in ("uvicorn", "uvicorn.access"):
            logging.getLogger(name).removeHandler(caplog.handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def test_no_secret_in_the_operational_log(
    logged_server: Api,
    settings: Settings,
    clock: MovableClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = busy_session(logged_server, clock)
    records = [*caplog.get_records("setup"), *caplog.get_records("call")]
    messages = [r.getMessage() for r in records]
    # the capture works: the vault's own log and the access log were both seen
    assert any(r.name.startswith("vault") for r in records), messages
    assert any("/v1/token" in m for m in records_of(records, "uvicorn.access")), messages
    logged = "\n".join([*messages, *(caplog.handler.format(r) for r in records)])
    assert_no_secret(logged, run, "the operational log")
    for material in _at_rest(settings):
        assert material not in logged, "key material leaked into the operational log"
    for marker in STACK_TRACE:
        assert marker not in logged, "an error in the run was unexpected"


def records_of(records: list[logging.LogRecord], name: str) -> list[str]:
    return [r.getMessage() for r in records if r.name == name]


def test_a_method_not_allowed_says_which_are(api: Api) -> None:
    r = api.call("DELETE", "/healthz")
    assert_error_body(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, HEAD"
    r = api.call("HEAD", "/v1/audit/export", api.owner)  # HEAD only where it costs nothing
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"
    r = api.call("PUT", "/v1/token", api.owner)
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    # Several routes share these paths: the header names every method served there.
    r = api.call("DELETE", "/v1/principals", api.owner)
    assert_error_body(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, POST"
    r = api.call("DELETE", "/v1/subjects/s-1", api.owner)
    assert_error_body(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, PUT"


def test_a_path_in_utf8_is_taken_as_it_is(cast: Cast) -> None:
    r = cast.api.call("PUT", "/v1/subjects/%C3%A9-1", cast.api.owner, json={"email": "e@x.io"})
    assert r.status_code == 201, r.text
    assert r.json()["id"] == "é-1"


def test_the_last_enabled_owner_cannot_be_disabled(cast: Cast) -> None:
    """A vault without an enabled owner could never be administered again."""
    api, owner = cast.api, cast.ids["owner"]
    refused = api.call("POST", f"/v1/principals/{owner}/disable", api.owner)
    assert_error_body(refused, 409, "conflict")
    assert "last enabled owner" in refused.json()["error_description"]
    assert api.call("GET", "/v1/principals", api.owner).status_code == 200  # still an owner
    second, credential = api.principal("second-owner", "owner")
    done = api.call("POST", f"/v1/principals/{owner}/disable", credential)
    assert done.status_code == 200, done.text
    again = api.call("POST", f"/v1/principals/{second}/disable", credential)
    assert_error_body(again, 409, "conflict")
