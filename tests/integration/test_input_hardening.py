"""Input the databases or the audit log cannot hold is the caller's 400, and harms no one else.

A lone surrogate cannot be encoded as UTF-8 (so it cannot be canonicalized or audited) and
PostgreSQL text cannot hold NUL: either, let through, would fail the shared group commit for every
caller of the batch. They are refused at the edge, as are absurd nesting and out-of-range values.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import Api


@pytest.mark.parametrize(
    "body",
    [
        '{"subject": "u-1", "reason": "ticket \\ud800"}',
        '{"subject": "u-1", "reason": "ticket \\u0000 x"}',
        '{"subject": "u-\\udfff", "reason": "ticket"}',
        '{"subject": "u-1", "scope": "chat\\u0000", "reason": "ticket"}',
        "[" * 30_000 + "]" * 30_000,
    ],
    ids=["surrogate-reason", "nul-reason", "surrogate-subject", "nul-scope", "deep-nesting"],
)
def test_unstorable_token_requests_are_a_400_and_the_service_goes_on(api: Api, body: str) -> None:
    api.subject("u-1", "u1@example.com")
    _, delegator = api.principal("bot", "delegator")

    refused = api.raw("POST", "/v1/token", delegator, body.encode())

    assert refused.status_code == 400, refused.text
    assert set(refused.json()) == {"error", "error_description"}
    assert refused.json()["error_description"] == (  # what is wrong, as every endpoint says it
        "body is not valid JSON"
        if body.startswith("[")
        else "body holds a NUL character or invalid Unicode"
    )
    denied = api.entries(type="token.denied")
    assert denied
    assert denied[-1]["data"]["error"] == "invalid_request"
    assert api.token(delegator, "u-1").status_code == 200  # nothing was poisoned


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/subjects/u-1"),
        ("POST", "/v1/principals"),
    ],
)
def test_unstorable_admin_bodies_are_a_400(api: Api, method: str, path: str) -> None:
    body = '{"email": "a@b.c", "name": "bad \\ud800", "roles": ["auditor"]}'
    if path == "/v1/principals":
        body = '{"name": "bad \\u0000", "roles": ["auditor"]}'
    refused = api.raw(method, path, api.owner, body.encode())
    assert refused.status_code == 400, refused.text


@pytest.mark.parametrize(
    "params",
    [
        {"after_seq": str(2**63)},
        {"since": "0001-01-01T00:00:00+05:00"},
        {"until": "9999-12-31T23:59:59-05:00"},
        {"actor": "p_\x00"},
    ],
)
def test_out_of_range_audit_queries_are_a_400(api: Api, params: dict[str, str]) -> None:
    response = api.call("GET", "/v1/audit/entries", api.owner, params=params)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error", "error_description"}


def test_names_that_look_like_secrets_never_reach_the_audit_log(api: Api) -> None:
    _, credential = api.principal("bot", "auditor")
    delegator, _ = api.principal("app", "delegator")
    for method, path, body in [
        ("POST", "/v1/principals", {"name": f"copy of {credential}", "roles": ["auditor"]}),
        ("PUT", "/v1/subjects/u-9", {"email": "u9@example.com", "name": credential}),
        ("PUT", f"/v1/subjects/{credential}", {"email": "u10@example.com"}),
        ("PUT", f"/v1/subjects/id-{credential}", {"email": "u11@example.com"}),
        (
            "POST",
            "/v1/principals",
            {"name": "d", "roles": ["delegator"], "policy": {"subjects": ["u-1", credential]}},
        ),
        ("PUT", f"/v1/principals/{delegator}/policy", {"subjects": [f"u {credential}"]}),
    ]:
        refused = api.call(method, path, api.owner, json=body)
        assert refused.status_code == 400, refused.text
        assert credential not in refused.text
    exported = api.call("GET", "/v1/audit/export", api.owner)
    assert credential not in exported.text


@pytest.mark.parametrize(
    "body",
    [
        {"principal": {"name": "a\u001b[2Jb", "roles": ["auditor"]}},
        {"principal": {"name": "a\nb", "roles": ["auditor"]}},
        {"principal": {"name": "a\u009bb", "roles": ["auditor"]}},
        {"subject": {"email": "c@example.com", "name": "a\u0007b"}},
        {"subject": {"email": "c\u001b@example.com"}},
        {"principal": {"name": "d", "roles": ["delegator"], "policy": {"subjects": ["u\n1"]}}},
        {"principal": {"name": "d", "roles": ["delegator"], "policy": {"subjects": ["u" * 321]}}},
    ],
)
def test_names_with_control_characters_are_refused(api: Api, body: dict[str, Any]) -> None:
    before = len(api.entries())
    if "principal" in body:
        refused = api.call("POST", "/v1/principals", api.owner, json=body["principal"])
    else:
        refused = api.call("PUT", "/v1/subjects/u-c", api.owner, json=body["subject"])
    assert refused.status_code == 400, refused.text
    assert set(refused.json()) == {"error", "error_description"}
    assert len(api.entries()) == before


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/subjects/a%00b", {"email": "nul@example.com"}),
        ("PUT", "/v1/subjects/a%01b", {"email": "ctl@example.com"}),
        ("PUT", "/v1/subjects/a%7Fb", {"email": "del@example.com"}),
        ("GET", "/v1/subjects/a%00b", None),
        ("PUT", "/v1/principals/p%00x/policy", {"scopes": ["chat"]}),
        ("POST", "/v1/principals/p%00x/disable", None),
        ("POST", "/v1/principals/p%00x/credentials", None),
    ],
    ids=[
        "put-nul",
        "put-control",
        "put-delete-char",
        "get-nul",
        "policy",
        "disable",
        "credentials",
    ],
)
def test_unstorable_ids_in_the_path_are_refused_and_the_service_goes_on(
    api: Api, method: str, path: str, body: object
) -> None:
    before = len(api.entries())
    refused = api.call(method, path, api.owner, json=body)
    assert refused.status_code in (400, 404), refused.text
    assert set(refused.json()) == {"error", "error_description"}
    assert len(api.entries()) == before
    api.subject("u-ok", "ok@example.com")  # nothing was poisoned


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/token", '{"subject": "admin-1", "subject": "u-1", "reason": "TICKET-1"}'),
        ("/v1/token", '{"subject": "u-1", "reason": "TICKET-1", "reason": "other"}'),
        ("/v1/introspect", '{"token": "a.b.c", "token": "d.e.f"}'),
    ],
)
def test_a_body_naming_a_member_twice_is_a_400(api: Api, path: str, body: str) -> None:
    """Which of two members counts would depend on the parser (a proxy's, a logger's, ours):
    neither does."""
    api.subject("u-1", "u1@example.com")
    _, delegator = api.principal("bot", "delegator")
    _, verifier = api.principal("owui", "verifier")
    credential = delegator if path == "/v1/token" else verifier
    refused = api.raw("POST", path, credential, body.encode())
    assert refused.status_code == 400, refused.text
    assert refused.json() == {
        "error": "invalid_request",
        "error_description": "body names a member more than once",
    }
    if path == "/v1/token":
        assert api.entries(type="token.denied")[-1]["data"]["error"] == "invalid_request"
    assert not api.entries(type="token.issued")
    subject = api.raw(
        "PUT",
        "/v1/subjects/u-2",
        api.owner,
        b'{"email": "a@example.com", "email": "b@example.com", "name": "x"}',
    )
    assert subject.status_code == 400, subject.text
    assert subject.json()["error_description"] == "body names a member more than once"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(api: Api, constant: str) -> None:
    api.subject("u-1", "u1@example.com")
    _, delegator = api.principal("bot", "delegator")
    body = f'{{"subject": "u-1", "reason": "TICKET-1", "ttl_seconds": {constant}}}'
    refused = api.raw("POST", "/v1/token", delegator, body.encode())
    assert refused.status_code == 400, refused.text
    assert refused.json()["error_description"] == "body is not valid JSON"


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/token"), ("POST", "/v1/introspect"), ("GET", "/v1/subjects")],
)
def test_two_authorization_headers_are_no_credential(api: Api, method: str, path: str) -> None:
    """With two, which one counts would depend on who reads them: neither does, in either
    order, on the hot paths (served from ASGI) and on the others (FastAPI) alike."""
    api.subject("u-1", "u1@example.com")
    _, delegator = api.principal("bot", "delegator")
    _, verifier = api.principal("owui", "verifier")
    right = {"/v1/token": delegator, "/v1/introspect": verifier}.get(path, api.owner)
    body = {"/v1/token": {"subject": "u-1", "reason": "TICKET-1"}, "/v1/introspect": {"token": "x"}}
    for pair in ((right, "wrong"), ("wrong", right), (right, right)):
        headers = [("Authorization", f"Bearer {value}") for value in pair]
        answer = api.http.request(method, path, headers=headers, json=body.get(path))
        assert answer.status_code == 401, (pair, answer.text)
        assert answer.json()["error"] == "unauthorized"
    alone = api.call(method, path, right, json=body.get(path))
    assert alone.status_code == 200, alone.text
