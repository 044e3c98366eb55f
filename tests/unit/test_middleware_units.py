"""The verifier middleware's pure parts: which requests are delegated, the seen-token cache, and
how the native credential is kept out of responses. The whole middleware on a socket is tested in
tests/integration/test_middleware.py."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import jwt
import pytest

from vault.middleware.seen import SeenTokens
from vault.middleware.verifier import (
    _as_subject,
    _scrub,
    _secret_prefix_at_end,
    _without_secret,
    bearer_token,
    is_delegation_token,
)
from vault.tokens.claims import MAX_TOKEN_BYTES
from vault.tokens.jws import MAX_ROUTED_HEADER_BYTES, TokenTooLarge

SECRET = "eyJhbGciOiJIUzI1NiJ9.eyJpZCI6InUtMSJ9.c2lnbmF0dXJlLW9mLXRoZS1uYXRpdmUtdG9rZW4"


def http_scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/api/models", "headers": list(headers)}


# --- bearer_token ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"Bearer abc.def.ghi", "abc.def.ghi"),
        (b"bearer abc", "abc"),
        (b"BEARER  abc ", "abc"),
        (b"Basic dXNlcjpwdw==", None),
        (b"Bearer", None),
        (b"Bearer    ", None),
        (b"abc", None),
    ],
)
def test_bearer_token_reads_the_authorization_header(value: bytes, expected: str | None) -> None:
    assert bearer_token(http_scope((b"authorization", value))) == expected


def test_bearer_token_ignores_other_headers_and_missing_ones() -> None:
    assert bearer_token(http_scope()) is None
    assert bearer_token({"type": "http"}) is None
    assert bearer_token(http_scope((b"x-authorization", b"Bearer abc"))) is None
    assert bearer_token(http_scope((b"cookie", b"token=abc"), (b"x-api-key", b"sk-1"))) is None


def test_the_first_authorization_header_decides_as_in_the_app() -> None:
    # Starlette's request.headers["authorization"] is the first one: the middleware must agree.
    basic_first = http_scope((b"authorization", b"Basic eA=="), (b"authorization", b"Bearer t"))
    bearer_first = http_scope((b"authorization", b"Bearer t"), (b"authorization", b"Basic eA=="))
    assert bearer_token(basic_first) is None
    assert bearer_token(bearer_first) == "t"


# --- is_delegation_token --------------------------------------------------------------------------


def test_our_tokens_are_delegation_tokens(kit: Any) -> None:
    assert is_delegation_token(kit.token())
    for typ in ("application/at+jwt", "AT+JWT"):
        assert is_delegation_token(kit.forge(kit.header(typ=typ), kit.payload(), kit.ours))


def test_routing_is_by_typ_so_bad_algorithms_still_reach_verification(kit: Any) -> None:
    # alg=none with our typ must be refused by verification, not handed to the app as foreign.
    assert is_delegation_token(kit.forge(kit.header(alg="none"), kit.payload(), None))
    assert is_delegation_token(kit.forge(kit.header(alg="HS256"), kit.payload(), kit.theirs))


@pytest.mark.parametrize(
    "token",
    [
        jwt.encode(
            {"id": "u-1", "typ": "session"}, "owui-secret-key-of-32-bytes-or-more!", "HS256"
        ),
        "sk-0123456789abcdef",
        "sk-a.b.c",
        "abc.def",
        "a.b.c.d",
        "!!!.e30.",
        "W10.e30.",  # header [] is not an object
        "",
    ],
    ids=["owui-session", "sk-key", "sk-dotted", "2-parts", "4-parts", "bad-b64", "array", "empty"],
)
def test_foreign_credentials_are_not_delegation_tokens(token: str) -> None:
    assert not is_delegation_token(token)


def test_a_header_without_typ_or_with_another_typ_is_foreign(kit: Any) -> None:
    assert not is_delegation_token(kit.forge(kit.header(typ=...), kit.payload(), kit.ours))
    assert not is_delegation_token(kit.forge(kit.header(typ="JWT"), kit.payload(), kit.ours))
    assert not is_delegation_token(kit.forge(kit.header(typ=7), kit.payload(), kit.ours))


def test_an_oversized_header_is_read_for_routing_up_to_a_bound(kit: Any) -> None:
    # Ours, though too large: recognized, so that verification refuses it (token_too_large)
    # instead of passing it to the app.
    huge = kit.forge(kit.header(pad="x" * MAX_TOKEN_BYTES), kit.payload(), kit.ours)
    assert is_delegation_token(huge)
    with pytest.raises(TokenTooLarge):
        kit.verify(huge)
    # Beyond the bound it is not even parsed.
    vast = kit.forge(kit.header(pad="x" * MAX_ROUTED_HEADER_BYTES), kit.payload(), kit.ours)
    assert not is_delegation_token(vast)


# --- SeenTokens -----------------------------------------------------------------------------------


def test_seen_tokens_answers_until_exp_then_forgets(kit: Any) -> None:
    seen = SeenTokens()
    claims = kit.claims()
    assert seen.get("t", kit.now) is None
    seen.put("t", claims)
    assert seen.get("t", kit.now) is claims
    assert seen.get("t", claims.exp - 1) is claims
    assert seen.get("t", claims.exp) is None
    assert seen.get("t", kit.now) is None  # evicted, not merely hidden


def test_seen_tokens_is_bounded_and_drops_the_oldest(kit: Any) -> None:
    seen = SeenTokens(capacity=2)
    for name in ("a", "b", "c"):
        seen.put(name, kit.claims(jti=f"jti-{name}-0123456789abcdefghijkl"))
    assert seen.get("a", kit.now) is None
    assert seen.get("b", kit.now) is not None
    assert seen.get("c", kit.now) is not None


# --- _without_secret and _scrub -------------------------------------------------------------------


def test_without_secret_leaves_a_body_without_it_untouched() -> None:
    body = b'{"id": "u-1",   "token": "another"}'
    assert _without_secret(body, SECRET.encode()) is body


def test_without_secret_drops_the_echoed_token_member_and_redacts_the_rest() -> None:
    body = json.dumps(
        {
            "token": SECRET,
            "token_type": "Bearer",
            "id": "u-1",
            "nested": {"seen": f"Bearer {SECRET}"},
        }
    ).encode()
    cleaned = json.loads(_without_secret(body, SECRET.encode()))
    assert cleaned == {"token_type": "Bearer", "id": "u-1", "nested": {"seen": "Bearer [redacted]"}}


def test_without_secret_keeps_a_token_member_that_is_something_else() -> None:
    body = json.dumps({"token": "other", "echo": SECRET}).encode()
    assert json.loads(_without_secret(body, SECRET.encode())) == {
        "token": "other",
        "echo": "[redacted]",
    }


@pytest.mark.parametrize(
    "body",
    [f"not json {SECRET} at all".encode(), json.dumps([SECRET, 1]).encode()],
    ids=["text", "json-array"],
)
def test_without_secret_redacts_other_bodies(body: bytes) -> None:
    cleaned = _without_secret(body, SECRET.encode())
    assert SECRET.encode() not in cleaned
    assert b"[redacted]" in cleaned


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"data: ", 0),
        (b"data: e", 1),
        (b"data: eyJhbGci", 8),
        (b"data: " + SECRET.encode()[:-1], len(SECRET) - 1),
        (b"eyJ... and then x", 0),
        (b"", 0),
    ],
)
def test_secret_prefix_at_end(data: bytes, expected: int) -> None:
    assert _secret_prefix_at_end(data, SECRET.encode()) == expected


def run_scrub(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def play() -> None:
        wrapped = _scrub(send, SECRET)
        for message in messages:
            await wrapped(message)

    asyncio.run(play())
    return sent


def start(content_type: bytes, *extra: tuple[bytes, bytes]) -> dict[str, Any]:
    headers = [(b"content-type", content_type), *extra]
    return {"type": "http.response.start", "status": 200, "headers": headers}


def body_of(sent: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_scrub_buffers_json_drops_the_token_and_fixes_content_length() -> None:
    document = json.dumps({"token": SECRET, "id": "u-1"}).encode()
    cut = document.index(SECRET.encode()) + 5
    sent = run_scrub(
        [
            start(b"application/json", (b"content-length", str(len(document)).encode())),
            {"type": "http.response.body", "body": document[:cut], "more_body": True},
            {"type": "http.response.body", "body": document[cut:]},
        ]
    )
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert json.loads(body_of(sent)) == {"id": "u-1"}
    lengths = [v for k, v in sent[0]["headers"] if k == b"content-length"]
    assert lengths == [str(len(body_of(sent))).encode()]


def test_scrub_drops_session_cookies_and_masks_the_secret_in_any_header() -> None:
    sent = run_scrub(
        [
            start(
                b"application/json",
                (b"set-cookie", f"token={SECRET}; HttpOnly".encode()),
                (b"Set-Cookie", b"oauth_session_id=abc; Path=/"),
                (b"set-cookie", b"theme=dark"),
                (b"x-echo", f"Bearer {SECRET}".encode()),
            ),
            {"type": "http.response.body", "body": b"{}"},
        ]
    )
    headers = sent[0]["headers"]
    assert [v for k, v in headers if k.lower() == b"set-cookie"] == [b"theme=dark"]
    assert all(SECRET.encode() not in v for _, v in headers)
    [echo] = [v for k, v in headers if k == b"x-echo"]
    assert echo.startswith(b"Bearer [redacted]")


def test_scrub_streams_other_bodies_and_catches_a_secret_cut_across_chunks() -> None:
    payload = f"data: {SECRET}\n\ndata: done\n\n".encode()
    cuts = [0, 9, 20, 40, len(payload)]
    chunks = [payload[a:b] for a, b in itertools.pairwise(cuts)]
    messages = [start(b"text/event-stream")] + [
        {"type": "http.response.body", "body": chunk, "more_body": True} for chunk in chunks
    ]
    messages.append({"type": "http.response.body", "body": b""})
    sent = run_scrub(messages)
    assert sent[0]["type"] == "http.response.start"  # not buffered: sent before any body
    streamed = body_of(sent)
    assert SECRET.encode() not in streamed
    assert len(streamed) == len(payload)  # a Content-Length sent with the start stays true
    assert streamed.startswith(b"data: [redacted]")
    assert streamed.endswith(b"\n\ndata: done\n\n")
    assert sent[1]["body"] == b"data: "  # only the possible start of the secret is held back


def test_as_subject_replaces_credentials_and_leaves_the_original_scope_alone(kit: Any) -> None:
    original = http_scope(
        (b"authorization", b"Bearer delegation"),
        (b"cookie", b"token=other"),
        (b"x-api-key", b"sk-other"),
        (b"accept-encoding", b"gzip"),
        (b"accept", b"application/json"),
    )
    original["state"] = {"kept": 1}
    before = json.loads(json.dumps(original, default=repr))
    claims = kit.claims()

    changed = _as_subject(original, SECRET, claims)

    assert dict(changed["headers"]) == {
        b"accept": b"application/json",
        b"accept-encoding": b"identity",
        b"authorization": f"Bearer {SECRET}".encode(),
    }
    assert len(changed["headers"]) == 3
    assert changed["state"]["kept"] == 1
    assert changed["state"]["delegation"] == {
        "sub": claims.sub,
        "act": claims.actor,
        "jti": claims.jti,
        "scope": claims.scope_text,
    }
    assert json.loads(json.dumps(original, default=repr)) == before
