"""``vault.api.hot``: token exchange and introspection answered straight from ASGI.

The server answers ``POST /v1/token`` and ``POST /v1/introspect`` before FastAPI's machinery;
the FastAPI routes of the same paths remain (the OpenAPI document describes them). Both must
answer every request alike: the same status, the same pinned body, the same headers. One real
server here serves both ways: ``/via-fastapi/...`` goes through ``FastAPI.__call__``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.support import AsgiServer, LiveServer, add_principal, make_settings
from vault.api.app import SWITCH_INTERVAL_SECONDS, create_app
from vault.api.hot import VaultApp
from vault.config import Settings
from vault.domain import DELEGATOR, VERIFIER
from vault.ops import subjects
from vault.ops.runtime import Vault, open_vault
from vault.ops.setup import init_vault
from vault.storage import audit_repo

VIA_FASTAPI = "/via-fastapi"
TOKEN_BODY = {"subject": "u-1", "scope": "chat", "ttl_seconds": 300, "reason": "HOT-1 test"}


class BothWays:
    """The vault's app, and under ``/via-fastapi`` the same app entered through FastAPI."""

    def __init__(self, app: VaultApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(VIA_FASTAPI + "/"):
            path = scope["path"][len(VIA_FASTAPI) :]
            scope = {**scope, "path": path, "raw_path": path.encode()}
            await FastAPI.__call__(self.app, scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _setup(vault: Vault) -> tuple[str, str]:
    subject = subjects.parse_subject(
        "u-1", {"email": "u1@example.com", "name": "U", "role": "user"}
    )
    vault.appender.run(subjects.upsert_job(subject, actor=None))
    policy = {"scopes": ["chat"], "max_ttl_seconds": 900}
    delegator = add_principal(vault, "bot", DELEGATOR, policy).credential
    return delegator, add_principal(vault, "owui", VERIFIER).credential


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[httpx.Client, str, str, Settings]]:
    init_vault(settings)
    opened = open_vault(settings)
    try:
        delegator, verifier = _setup(opened)
    finally:
        opened.close()
    with (
        AsgiServer(BothWays(create_app(settings))) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        yield client, delegator, verifier, settings


def _both(client: httpx.Client, path: str, **kw: Any) -> tuple[httpx.Response, httpx.Response]:
    return client.post(path, **kw), client.post(VIA_FASTAPI + path, **kw)


def _same_headers(hot: httpx.Response, routed: httpx.Response) -> None:
    for name in ("content-type", "cache-control", "pragma", "www-authenticate"):
        assert hot.headers.get(name) == routed.headers.get(name), name
    assert hot.headers["content-length"] == str(len(hot.content))


def _auth(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def test_an_issued_token_is_answered_alike_and_each_is_audited(served: Any) -> None:
    client, delegator, _verifier, settings = served
    hot, routed = _both(client, "/v1/token", json=TOKEN_BODY, headers=_auth(delegator))
    assert hot.status_code == routed.status_code == 200, (hot.text, routed.text)
    _same_headers(hot, routed)
    assert hot.headers["cache-control"] == "no-store"
    first, second = hot.json(), routed.json()
    assert first.keys() == second.keys()
    assert first["jti"] != second["jti"]
    assert {k: v for k, v in first.items() if k not in ("jti", "access_token")} == {
        k: v for k, v in second.items() if k not in ("jti", "access_token")
    }
    opened = open_vault(settings)
    try:
        issued = _issued(opened)
    finally:
        opened.close()
    assert sorted(e.data["jti"] for e in issued) == sorted([first["jti"], second["jti"]])
    assert all(e.data["client_ip"] == "127.0.0.1" for e in issued)


@pytest.mark.parametrize(
    ("path", "who", "body", "status", "code"),
    [
        ("/v1/token", None, json.dumps(TOKEN_BODY), 401, "unauthorized"),
        ("/v1/token", "garbage", json.dumps(TOKEN_BODY), 401, "unauthorized"),
        ("/v1/token", "verifier", json.dumps(TOKEN_BODY), 403, "forbidden"),
        ("/v1/token", "delegator", "{not json", 400, "invalid_request"),
        (
            "/v1/token",
            "delegator",
            json.dumps({**TOKEN_BODY, "subject": "nobody"}),
            404,
            "unknown_subject",
        ),
        ("/v1/token", "delegator", "x" * 70_000, 413, "request_too_large"),
        ("/v1/introspect", "delegator", json.dumps({"token": "a.b.c"}), 403, "forbidden"),
        ("/v1/introspect", "verifier", json.dumps({"method": "GET"}), 400, "invalid_request"),
        ("/v1/introspect", "verifier", "", 400, "invalid_request"),
        ("/v1/introspect", "verifier", '{"token": "a\\u0000b"}', 400, "invalid_request"),
    ],
)
def test_refusals_are_answered_alike(
    served: Any, path: str, who: str | None, body: str, status: int, code: str
) -> None:
    client, delegator, verifier, _settings = served
    credential = {"delegator": delegator, "verifier": verifier, "garbage": "dv_x"}.get(who or "")
    headers = {"Content-Type": "application/json", **(_auth(credential) if credential else {})}
    hot, routed = _both(client, path, content=body.encode(), headers=headers)
    assert hot.status_code == routed.status_code == status, (hot.text, routed.text)
    assert hot.json() == routed.json()
    assert set(hot.json()) == {"error", "error_description"}
    assert hot.json()["error"] == code
    _same_headers(hot, routed)
    assert ("www-authenticate" in hot.headers) == (status == 401)


def test_introspection_is_answered_alike(served: Any) -> None:
    client, delegator, verifier, _settings = served
    token = client.post("/v1/token", json=TOKEN_BODY, headers=_auth(delegator)).json()
    use = {"token": token["access_token"], "method": "GET", "path": "/api/v1/chats/"}
    hot, routed = _both(client, "/v1/introspect", json=use, headers=_auth(verifier))
    assert hot.status_code == routed.status_code == 200
    assert hot.json() == routed.json()
    assert hot.json()["active"] is True
    assert hot.json()["jti"] == token["jti"]
    _same_headers(hot, routed)
    forged = {**use, "token": token["access_token"][:-4] + "AAAA"}
    hot, routed = _both(client, "/v1/introspect", json=forged, headers=_auth(verifier))
    assert hot.json() == routed.json() == {"active": False}


def test_other_methods_and_paths_still_go_through_fastapi(served: Any) -> None:
    client, delegator, _verifier, _settings = served
    wrong_method = client.get("/v1/token", headers=_auth(delegator))
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"
    trailing = client.post("/v1/token/", json=TOKEN_BODY, headers=_auth(delegator))
    assert trailing.status_code in (307, 404)  # never answered as the hot path
    assert client.get("/healthz").json() == {"status": "ok"}


# --- in process: what a socket cannot easily show --------------------------------------------


async def _call(app: VaultApp, scope: dict[str, Any], messages: list[dict[str, Any]]) -> list[Any]:
    sent: list[Any] = []
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _scope(path: str, credential: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {credential}".encode())],
        "client": ("10.0.0.7", 5555),
        **extra,
    }


@pytest.fixture
def in_process(tmp_path: Any) -> Iterator[tuple[VaultApp, Vault, str]]:
    settings = make_settings(tmp_path / "home", f"sqlite:///{tmp_path / 'home' / 'vault.db'}")
    init_vault(settings)
    app = create_app(settings)
    assert isinstance(app, VaultApp)
    vault = open_vault(settings, background=True)
    app.state.vault = vault
    try:
        delegator, _verifier = _setup(vault)
        yield app, vault, delegator
    finally:
        vault.close()


def _entries(vault: Vault) -> int:
    with vault.db.read() as session:
        return audit_repo.count_entries(session)


def test_a_client_gone_before_its_body_gets_no_answer_and_nothing_is_recorded(
    in_process: tuple[VaultApp, Vault, str],
) -> None:
    app, vault, delegator = in_process
    before = _entries(vault)
    partial = {"type": "http.request", "body": b'{"subject": ', "more_body": True}
    sent = asyncio.run(_call(app, _scope("/v1/token", delegator), [partial]))
    assert sent == []
    assert _entries(vault) == before


def test_the_hot_path_is_found_under_a_root_path(in_process: tuple[VaultApp, Vault, str]) -> None:
    app, vault, delegator = in_process
    body = {"type": "http.request", "body": json.dumps(TOKEN_BODY).encode()}
    scope = _scope("/vault/v1/token", delegator, root_path="/vault")
    start, answer = asyncio.run(_call(app, scope, [body]))
    assert start["status"] == 200, answer
    assert json.loads(answer["body"])["token_type"] == "Bearer"
    issued = _issued(vault)
    assert [e.data["client_ip"] for e in issued] == ["10.0.0.7"]


def _issued(vault: Vault) -> list[Any]:
    return audit_repo.query_entries(vault.db, audit_repo.EntryFilter(type="token.issued"))


def test_the_two_hot_paths_never_enter_fastapi(in_process: tuple[VaultApp, Vault, str]) -> None:
    app, _vault, delegator = in_process
    entered: list[str] = []

    async def fastapi_stack(scope: Any, receive: Any, send: Any) -> None:
        entered.append(scope["path"])
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app.middleware_stack = fastapi_stack  # what FastAPI.__call__ runs
    body = {"type": "http.request", "body": json.dumps(TOKEN_BODY).encode()}
    start, _answer = asyncio.run(_call(app, _scope("/v1/token", delegator), [body]))
    assert start["status"] == 200
    introspect = {"type": "http.request", "body": b"{}"}
    start, _answer = asyncio.run(_call(app, _scope("/v1/introspect", delegator), [introspect]))
    assert start["status"] == 403
    assert entered == []
    start, _answer = asyncio.run(_call(app, _scope("/v1/revoke", delegator), [body]))
    assert start["status"] == 418
    assert entered == ["/v1/revoke"]


def test_a_head_of_a_public_path_is_its_get_without_the_body(
    in_process: tuple[VaultApp, Vault, str],
) -> None:
    """Whatever server runs the app: uvicorn drops a HEAD's body itself, others may not."""
    app, _vault, _delegator = in_process
    get = asyncio.run(
        _call(app, _scope("/.well-known/jwks.json", "-", method="GET", query_string=b""), [])
    )
    head = asyncio.run(
        _call(app, _scope("/.well-known/jwks.json", "-", method="HEAD", query_string=b""), [])
    )
    assert head[0] == get[0]  # the status and the headers, Content-Length the GET's
    assert get[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in get[1:]) != b""
    assert [m for m in head[1:] if m.get("body")] == []
    assert head[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_the_server_shortens_the_gil_switch_interval_while_it_serves(tmp_path: Any) -> None:
    settings = make_settings(tmp_path / "home", f"sqlite:///{tmp_path / 'home' / 'vault.db'}")
    init_vault(settings)
    # Another server of this test process (the end-to-end stack) may be serving: start from
    # CPython's default, 5 ms, and put back what was there.
    found = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    try:
        assert sys.getswitchinterval() > SWITCH_INTERVAL_SECONDS
        with LiveServer(settings):
            assert sys.getswitchinterval() == SWITCH_INTERVAL_SECONDS
        assert sys.getswitchinterval() == 0.005
    finally:
        sys.setswitchinterval(found)
