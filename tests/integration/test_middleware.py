"""The verifier middleware (SPEC §8, §9) on a real socket, in front of a stand-in for Open WebUI
0.12.4, against a real vault: a delegated request becomes the subject's own request, every refusal
happens before the app sees anything, the native credential never reaches the caller, and native
credentials (session JWTs, ``sk-`` keys, cookies) pass through untouched, even with the vault
down.

The stand-in is written here, not imported: it is Open WebUI's auth contract as read off the
0.12.4 wheel (``utils/auth.py``, ``routers/auths.py``, ``CompressMiddleware`` in ``main.py``; see
/work/shared/openwebui/README.md), and nothing of the vault.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import gzip
import hashlib
import hmac
import json
import logging
import math
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.sync.client import connect as ws_connect

from tests.support import Api, AsgiServer, LiveServer, MovableClock, cli_env, dvault, free_port
from vault.config import Settings
from vault.crypto.keys import thumbprint
from vault.middleware import (
    DelegationExpired,
    DelegationMiddleware,
    UnknownUser,
    VerifierConfig,
)
from vault.middleware.remote_keys import RemoteKeySet
from vault.middleware.vault_http import VaultHttp

JWKS_PATH = "/.well-known/jwks.json"
INTROSPECT_PATH = "/v1/introspect"
ERROR_MEMBERS = {"error", "error_description"}

# What Open WebUI's "who am I" carries besides the token: enough that the body is over
# starlette_compress's 500-byte minimum, as the real one (with the user's permissions) always is.
PERMISSIONS = {
    "workspace": {"models": False, "knowledge": False, "prompts": False, "tools": False},
    "sharing": {"public_models": False, "public_knowledge": False, "public_prompts": False},
    "chat": {
        "controls": True,
        "file_upload": True,
        "delete": True,
        "edit": True,
        "temporary": True,
        "temporary_enforced": False,
    },
    "features": {"api_keys": True, "web_search": True, "image_generation": True},
}
COMPRESSIBLE = (b"application/json", b"text/plain", b"text/event-stream")


# --- base64url and hand-made JWS ------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = token.split(".")
    return json.loads(unb64(head)), json.loads(unb64(body))


def encode(part: dict[str, Any]) -> str:
    return b64(json.dumps(part, separators=(",", ":")).encode())


def sign_ed25519(header: dict[str, Any], payload: dict[str, Any], key: Ed25519PrivateKey) -> str:
    signing_input = f"{encode(header)}.{encode(payload)}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


# --- a stand-in for Open WebUI 0.12.4 -------------------------------------------------------------


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


@dataclass
class Identity:
    user: str
    kind: str  # "api_key" | "session" | "automation" | "subagent"
    exp: int | None


@dataclass
class Seen:
    """One request as the app received it: what the middleware handed on."""

    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    user: str | None


@dataclass
class StandInOpenWebUI:
    """Open WebUI 0.12.4's auth contract, as far as the middleware meets it.

    - the credential comes from ``Authorization: Bearer``, else the ``token`` cookie, else
      ``x-api-key`` (``get_current_user`` and ``AppHTTPMiddleware``);
    - ``sk-…`` is an API key of a user; anything else is an HS256 JWT under the secret that must
      carry ``id``, the user's current ``session_stamp`` and ``typ`` session/automation/subagent;
    - ``GET /api/v1/auths/`` (``get_human_user``: ``typ=session`` only) echoes the bearer in its
      JSON ``token`` member and sets ``Set-Cookie: token=…``;
    - responses of 500 bytes or more are gzip-compressed when the client accepts gzip
      (``CompressMiddleware``, on by default);
    - other paths answer with the user id and the credential headers they saw.
    """

    secret: str = field(default_factory=lambda: "owui-" + secrets.token_urlsafe(32))
    stamps: dict[str, str] = field(default_factory=dict)
    api_keys: dict[str, str] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    lifespan: list[str] = field(default_factory=list)
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_request: Callable[[], None] | None = None  # called as an HTTP request enters the app

    def add_user(self, user_id: str) -> None:
        self.stamps[user_id] = secrets.token_hex(8)

    def session_token(self, user_id: str, *, exp: int, typ: str = "session") -> str:
        payload = {
            "id": user_id,
            "typ": typ,
            "session_stamp": self.stamps[user_id],
            "exp": exp,
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(payload, self.secret, algorithm="HS256")

    def api_key(self, user_id: str) -> str:
        key = "sk-" + secrets.token_hex(16)
        self.api_keys[key] = user_id
        return key

    def _credential(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        authorization = header(headers, b"authorization")
        if authorization:
            scheme, _, credential = authorization.partition(" ")
            if scheme.lower() == "bearer" and credential:
                return credential
        cookie = header(headers, b"cookie")
        if cookie:
            jar: SimpleCookie = SimpleCookie()
            jar.load(cookie)
            if "token" in jar:
                return jar["token"].value
        return header(headers, b"x-api-key")

    def _authenticate(self, credential: str | None) -> Identity | None:
        if not credential:
            return None
        if credential.startswith("sk-"):
            user = self.api_keys.get(credential)
            return Identity(user, "api_key", None) if user else None
        try:
            data = jwt.decode(credential, self.secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            return None
        user = data.get("id")
        if not isinstance(user, str) or data.get("session_stamp") != self.stamps.get(user):
            return None
        kind = data.get("typ", "session")
        if kind not in {"session", "automation", "subagent"}:
            return None
        return Identity(user, kind, data.get("exp"))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.lifespan.append("startup")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for callback in self.on_shutdown:
                    await callback()
                self.lifespan.append("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _websocket(self, scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        headers = list(scope["headers"])
        self.seen.append(Seen("WEBSOCKET", scope["path"], headers, None))
        await send({"type": "websocket.accept"})
        seen = {"authorization": header(headers, b"authorization")}
        await send({"type": "websocket.send", "text": json.dumps(seen)})
        await send({"type": "websocket.close", "code": 1000})

    async def _http(self, scope: Any, receive: Any, send: Any) -> None:
        if self.on_request is not None:
            self.on_request()
        while (await receive()).get("more_body", False):
            pass
        headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        credential = self._credential(headers)
        who = self._authenticate(credential)
        method, path = scope["method"], scope["path"]
        self.seen.append(Seen(method, path, headers, who.user if who else None))
        accepts_gzip = "gzip" in (header(headers, b"accept-encoding") or "")
        if who is None:
            body = {"detail": "Not authenticated"}
            await respond(send, 401, json.dumps(body).encode(), accepts_gzip=accepts_gzip)
            return
        assert credential is not None
        if method == "GET" and path == "/api/v1/auths/":
            await self._who_am_i(send, who, credential, accepts_gzip)
            return
        authorization = header(headers, b"authorization")
        if path == "/api/echo":  # a route that reflects the request headers, body and headers
            body = {"user": who.user, "headers": {k.decode(): v.decode() for k, v in headers}}
            extra = [(b"x-echo-authorization", (authorization or "").encode())]
            await respond(send, 200, json.dumps(body).encode(), extra, accepts_gzip=accepts_gzip)
            return
        if path == "/api/echo.txt":  # plain text with a Content-Length, as PlainTextResponse
            text = f"user={who.user}\nauthorization={authorization}\n".encode()
            await respond(send, 200, text, content_type=b"text/plain; charset=utf-8")
            return
        if path == "/api/echo.stream":  # server-sent events, the credential split across chunks
            await stream_split(send, f"data: {authorization}\n\n".encode())
            return
        body = {
            "user": who.user,
            "method": method,
            "path": path,
            "authorization": authorization,
            "cookie": header(headers, b"cookie"),
            "x-api-key": header(headers, b"x-api-key"),
        }
        await respond(send, 200, json.dumps(body).encode(), accepts_gzip=accepts_gzip)

    async def _who_am_i(self, send: Any, who: Identity, credential: str, gz: bool) -> None:
        if who.kind != "session":  # get_human_user
            body = {"detail": "Only human sessions may do this"}
            await respond(send, 403, json.dumps(body).encode(), accepts_gzip=gz)
            return
        document = {
            "token": credential,
            "token_type": "Bearer",
            "expires_at": who.exp,
            "id": who.user,
            "email": f"{who.user}@example.com",
            "name": who.user,
            "role": "user",
            "profile_image_url": "/user.png",
            "permissions": PERMISSIONS,
        }
        cookie = f"token={credential}; HttpOnly; Max-Age=60; Path=/; SameSite=lax".encode()
        extra = [(b"set-cookie", cookie), (b"set-cookie", b"theme=dark; Path=/")]
        await respond(send, 200, json.dumps(document).encode(), extra, accepts_gzip=gz)


async def respond(
    send: Any,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
    *,
    content_type: bytes = b"application/json",
    accepts_gzip: bool = False,
) -> None:
    headers = [(b"content-type", content_type), *(extra or [])]
    if accepts_gzip and len(body) >= 500 and content_type.startswith(COMPRESSIBLE):
        body = gzip.compress(body)
        headers += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def stream_split(send: Any, payload: bytes) -> None:
    """Chunked text/event-stream whose chunks cut the payload in the middle of the token."""
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    middle = len(payload) // 2
    await send({"type": "http.response.body", "body": payload[:middle], "more_body": True})
    await send({"type": "http.response.body", "body": payload[middle:], "more_body": True})
    await send({"type": "http.response.body", "body": b""})


class StandInMapper:
    """``vault.middleware.UserMapper`` for the stand-in: mints its HS256 session token."""

    def __init__(self, app: StandInOpenWebUI) -> None:
        self.app = app
        self.minted: list[str] = []
        self._reuse: dict[tuple[str, int], str] = {}

    def resolved_role(self, state: Any) -> str | None:
        return None  # the middleware then checks the user through native_token

    async def native_token(
        self, user_id: str, *, not_after: int, role: str | None = None, checked: bool = True
    ) -> str:
        """As the real mapper: checks the user on every call, reuses what it minted."""
        if user_id not in self.app.stamps:
            raise UnknownUser("no such active user")
        reused = self._reuse.get((user_id, not_after))
        if reused is not None:
            return reused
        token = self.app.session_token(user_id, exp=min(int(time.time()) + 60, not_after))
        self.minted.append(token)
        self._reuse[(user_id, not_after)] = token
        return token


class CountingKeys(RemoteKeySet):
    """The real key set, counting key lookups: one lookup per signature verification."""

    lookups = 0

    def cached(self, kid: str) -> Any:
        self.lookups += 1
        return super().cached(kid)


# --- the stack: vault <- middleware <- client ---------------------------------------------------


@dataclass
class Stack:
    api: Api
    settings: Settings
    app: StandInOpenWebUI
    mapper: StandInMapper
    middleware: DelegationMiddleware
    keys: CountingKeys
    vault_calls: list[str]  # paths the middleware requested from the vault, in order
    offset: list[float]  # added to the middleware's clock
    server: AsgiServer
    client: httpx.Client
    delegator_id: str
    delegator: str

    @property
    def jwks_fetches(self) -> int:
        return self.vault_calls.count(JWKS_PATH)

    def issue(self, subject: str = "u-1", scope: str = "chat models:read", ttl: int = 300) -> str:
        r = self.api.token(self.delegator, subject, scope=scope, ttl_seconds=ttl)
        assert r.status_code == 200, r.text
        token: str = r.json()["access_token"]
        return token

    def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.request(method, path, headers=headers, **kw)

    def used(self, token: str) -> list[dict[str, Any]]:
        jti = segments(token)[1]["jti"]
        return [e for e in self.api.entries(type="token.used") if e["data"]["jti"] == jti]


@contextlib.contextmanager
def build_stack(
    api: Api,
    settings: Settings,
    *,
    vault_url: str | None = None,
    min_refresh: float = 10.0,
    overlap: bool = False,  # as shipped: the vault decides before the app starts
) -> Iterator[Stack]:
    for sid, email in (("u-1", "alice@example.com"), ("u-2", "bob@example.com")):
        api.subject(sid, email)
    api.subject("u-ghost", "ghost@example.com")  # known to the vault, not to the app
    delegator_id, delegator = api.principal("bot", "delegator")
    _, verifier = api.principal("owui", "verifier")
    app = StandInOpenWebUI()
    app.add_user("u-1")
    app.add_user("u-2")
    mapper = StandInMapper(app)
    vault_calls: list[str] = []

    async def record(request: httpx.Request) -> None:
        vault_calls.append(request.url.path)

    url = vault_url or api.url
    http = httpx.AsyncClient(timeout=5, event_hooks={"request": [record]})
    app.on_shutdown.append(http.aclose)
    offset = [0.0]
    config = VerifierConfig(
        vault_url=url,
        credential=verifier,
        issuer=settings.issuer,
        audience=settings.audience,
        overlap_safe_methods=overlap,
    )
    introspection = VaultHttp(url, timeout=5, on_request=vault_calls.append)
    app.on_shutdown.append(introspection.aclose)
    middleware = DelegationMiddleware(
        app,
        config=config,
        mapper=mapper,
        http=http,
        introspection=introspection,
        now=lambda: time.time() + offset[0],
    )
    keys = CountingKeys(http, url + JWKS_PATH, min_refresh_seconds=min_refresh)
    middleware.keys = keys
    with AsgiServer(middleware) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield Stack(
            api=api,
            settings=settings,
            app=app,
            mapper=mapper,
            middleware=middleware,
            keys=keys,
            vault_calls=vault_calls,
            offset=offset,
            server=server,
            client=client,
            delegator_id=delegator_id,
            delegator=delegator,
        )


@pytest.fixture
def stack(api: Api, settings: Settings) -> Iterator[Stack]:
    with build_stack(api, settings) as built:
        yield built


@pytest.fixture
def overlapping(api: Api, settings: Settings) -> Iterator[Stack]:
    """``stack`` with ``overlap_safe_methods`` on (``VAULT_OVERLAP_SAFE_METHODS=true``)."""
    with build_stack(api, settings, overlap=True) as built:
        yield built


def assert_refused(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == ERROR_MEMBERS, body
    assert body["error"] == code, body
    assert body["error_description"]
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
    # failing closed: the client is told to try again shortly; no other refusal says so
    assert r.headers.get("retry-after") == ("1" if status == 503 else None), r.headers


def headers_of(seen: Seen) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for key, value in seen.headers:
        result.setdefault(key.decode(), []).append(value.decode("latin-1"))
    return result


def assert_nowhere(secret: str, r: httpx.Response) -> None:
    assert secret not in r.text, f"{r.request.url.path}: native token in the body"
    for key, value in r.headers.raw:
        assert secret.encode() not in value, f"{r.request.url.path}: native token in {key!r}"


# --- a delegated request is the subject's request -------------------------------------------------


def test_delegated_request_reaches_the_app_as_the_subject(stack: Stack) -> None:
    token = stack.issue("u-1", scope="chats:read")
    other_session = stack.app.session_token("u-2", exp=int(time.time()) + 3600)
    other_key = stack.app.api_key("u-2")
    r = stack.call(
        "GET",
        "/api/v1/chats/",
        token,
        headers={"Cookie": f"token={other_session}; theme=dark", "x-api-key": other_key},
    )
    assert r.status_code == 200, r.text
    assert r.json()["user"] == "u-1"
    assert r.json()["cookie"] is None
    assert r.json()["x-api-key"] is None

    [seen] = stack.app.seen
    assert seen.user == "u-1"
    received = headers_of(seen)
    assert "cookie" not in received
    assert "x-api-key" not in received
    [native] = stack.mapper.minted
    assert received["authorization"] == [f"Bearer {native}"]
    claims = jwt.decode(native, stack.app.secret, algorithms=["HS256"])
    assert claims["id"] == "u-1"
    assert claims["exp"] <= min(int(time.time()) + 60, segments(token)[1]["exp"])
    assert all(token not in value for values in received.values() for value in values)


@pytest.mark.parametrize("accept_encoding", ["identity", "gzip"])
def test_who_am_i_returns_no_token_and_sets_no_token_cookie(
    stack: Stack, accept_encoding: str
) -> None:
    # Natively, the stand-in does echo the credential: the delegated check below can fail.
    session = stack.app.session_token("u-1", exp=int(time.time()) + 3600)
    native = stack.call("GET", "/api/v1/auths/", session, headers={"Accept-Encoding": "gzip"})
    assert native.status_code == 200
    assert native.headers.get("content-encoding") == "gzip"
    assert native.json()["token"] == session
    assert native.headers.get_list("set-cookie")[0].startswith(f"token={session};")

    token = stack.issue("u-1", scope="chat")
    r = stack.call("GET", "/api/v1/auths/", token, headers={"Accept-Encoding": accept_encoding})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "u-1"
    assert "token" not in body
    assert body["permissions"] == PERMISSIONS
    assert r.headers.get_list("set-cookie") == ["theme=dark; Path=/"]
    [minted] = stack.mapper.minted
    assert_nowhere(minted, r)


ECHOING_PATHS = ("/api/v1/auths/", "/api/echo", "/api/echo.txt", "/api/echo.stream", "/api/models")


@pytest.mark.parametrize("accept_encoding", ["identity", "gzip"])
def test_native_token_appears_nowhere_in_a_response(stack: Stack, accept_encoding: str) -> None:
    token = stack.issue("u-1", scope="read")
    for path in ECHOING_PATHS:
        r = stack.call("GET", path, token, headers={"Accept-Encoding": accept_encoding})
        assert r.status_code == 200, (path, r.text)
        minted = stack.mapper.minted[-1]
        # the app did get it (and echoed it in its own way), the caller does not
        assert headers_of(stack.app.seen[-1])["authorization"] == [f"Bearer {minted}"]
        assert_nowhere(minted, r)
        assert_nowhere(minted.rsplit(".", 1)[1], r)  # not even its signature
    assert len(stack.mapper.minted) == 1  # reused across requests, as the real mapper does


# --- refusals before the app, and before the vault for forgeries ----------------------------------


def test_forged_token_with_our_kid_is_401_and_leaves_no_audit_entry(stack: Stack) -> None:
    real = stack.issue()
    header_, payload = segments(real)
    forged = sign_ed25519(header_, {**payload, "sub": "u-2"}, Ed25519PrivateKey.generate())
    before = len(stack.api.entries())

    r = stack.call("POST", "/api/chat/completions", forged, json={"model": "m"})

    assert_refused(r, 401, "bad_signature")
    assert len(stack.api.entries()) == before
    assert INTROSPECT_PATH not in stack.vault_calls
    assert stack.app.seen == []
    assert stack.mapper.minted == []


@pytest.mark.parametrize("alg", ["EdDSA", "RS256", "none"])
def test_another_issuers_at_jwt_passes_through_untouched(
    api: Api, settings: Settings, alg: str
) -> None:
    """SPEC §8: a delegation token is ``typ=at+jwt`` *from this issuer*; another issuer's
    access token is the app's to judge (the stand-in refuses it, as Open WebUI would), and the
    middleware neither refuses it nor asks the vault. (Key refreshes 0.2 s apart at most: the
    last request, with an unknown kid, waits for one after the first request's.)"""
    with build_stack(api, settings, min_refresh=0.2) as stack:
        _another_issuers_at_jwt(stack, alg)


def test_another_issuers_token_does_not_wait_out_an_unreachable_vaults_keys(
    api: Api, settings: Settings
) -> None:
    """Until the vault's keys were fetched once, a token naming another issuer waits briefly for
    them (to tell whether it is the vault's); with the vault unreachable (a socket that never
    answers) it passes on to the app after that brief wait, not after the fetch's 5 s timeout."""
    with socket.create_server(("127.0.0.1", 0)) as hole:
        unreachable = f"http://127.0.0.1:{hole.getsockname()[1]}"
        with build_stack(api, settings, vault_url=unreachable) as stack:
            header_, payload = segments(stack.issue())
            key = Ed25519PrivateKey.generate()
            theirs = {**payload, "iss": "https://login.example.com"}
            token = sign_ed25519({**header_, "kid": thumbprint(key.public_key())}, theirs, key)
            with httpx.Client(base_url=stack.server.url, timeout=2.5) as client:
                r = client.get("/api/models", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, r.text
            assert r.json() == {"detail": "Not authenticated"}  # the app's own answer


def _another_issuers_at_jwt(stack: Stack, alg: str) -> None:
    header_, payload = segments(stack.issue())
    theirs = {**payload, "iss": "https://login.example.com", "sub": "u-2"}
    key = Ed25519PrivateKey.generate()
    token = sign_ed25519({**header_, "alg": alg, "kid": thumbprint(key.public_key())}, theirs, key)
    calls = len(stack.vault_calls)

    r = stack.call("GET", "/api/models", token)

    assert r.status_code == 401, r.text
    assert r.json() == {"detail": "Not authenticated"}  # the app's own answer
    assert stack.app.seen[-1].user is None
    assert (b"authorization", f"Bearer {token}".encode()) in stack.app.seen[-1].headers
    # never introspected; the vault's keys fetched once at most (never fetched before: then
    # they are, to tell whether the token is the vault's under another issuer's name)
    assert INTROSPECT_PATH not in stack.vault_calls[calls:]
    assert stack.vault_calls[calls:].count(JWKS_PATH) <= 1
    again = len(stack.vault_calls)
    assert stack.call("GET", "/api/models", token).status_code == 401
    assert len(stack.vault_calls) == again  # and only once
    # The same token naming this vault as its issuer is judged here, and refused here.
    ours = sign_ed25519({**header_, "kid": thumbprint(key.public_key())}, payload, key)
    assert_refused(stack.call("GET", "/api/models", ours), 401, "unknown_key")


def test_a_token_of_the_vaults_key_naming_another_issuer_is_refused_not_passed(
    stack: Stack,
) -> None:
    """A token signed with one of the vault's keys is the vault's whatever its iss says: with a
    mismatched VAULT_ISSUER, genuine tokens are refused (wrong_issuer), never handed to the app
    unchecked."""
    token = stack.issue()
    assert stack.call("GET", "/api/models", token).status_code == 200  # the key set is loaded
    header_, payload = segments(token)
    jwks = stack.api.call("GET", JWKS_PATH).json()
    assert header_["kid"] in {key["kid"] for key in jwks["keys"]}
    elsewhere = encode({**payload, "iss": "https://elsewhere.example.com"})
    renamed = f"{token.split('.')[0]}.{elsewhere}.{token.split('.')[2]}"  # signature now wrong
    seen = len(stack.app.seen)
    r = stack.call("GET", "/api/models", renamed)
    assert_refused(r, 401, "bad_signature")
    assert len(stack.app.seen) == seen


def test_a_mismatched_issuer_is_seen_from_the_first_token_not_passed_through(
    stack: Stack,
) -> None:
    """VAULT_ISSUER set otherwise than the vault's: every genuine token names "another" issuer.
    The middleware has not fetched the vault's keys yet; it fetches them to ask whether the
    token is the vault's, and refuses it (401, ``wrong_issuer``) instead of handing it to the
    app unchecked."""
    stack.middleware.config = dataclasses.replace(
        stack.middleware.config, issuer="http://vault.elsewhere.example:8787"
    )
    assert not stack.keys.loaded
    token = stack.issue()

    r = stack.call("GET", "/api/models", token)

    assert_refused(r, 401, "wrong_issuer")
    assert stack.app.seen == []
    assert INTROSPECT_PATH not in stack.vault_calls


def _alg_none(token: str, jwks: dict[str, Any]) -> str:
    header_, payload = segments(token)
    return f"{encode({**header_, 'alg': 'none'})}.{encode(payload)}."


def _hs256_with_public_key(token: str, jwks: dict[str, Any]) -> str:
    header_, payload = segments(token)
    [jwk] = [k for k in jwks["keys"] if k["kid"] == header_["kid"]]
    signing_input = f"{encode({**header_, 'alg': 'HS256'})}.{encode(payload)}"
    mac = hmac.new(unb64(jwk["x"]), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def _payload_changed(token: str, **members: Any) -> str:
    """``token`` with members added to its payload, and its signature as it was."""
    head, _, signature = token.split(".")
    _, payload = segments(token)
    return f"{head}.{encode({**payload, **members})}.{signature}"


def _tampered_payload(token: str, jwks: dict[str, Any]) -> str:
    return _payload_changed(token, scope="all")


def _flipped_signature_bit(token: str, jwks: dict[str, Any]) -> str:
    head, body, signature = token.split(".")
    raw = bytearray(unb64(signature))
    raw[7] ^= 0x01
    return f"{head}.{body}.{b64(bytes(raw))}"


def _unknown_kid(token: str, jwks: dict[str, Any]) -> str:
    key = Ed25519PrivateKey.generate()
    header_, payload = segments(token)
    return sign_ed25519({**header_, "kid": thumbprint(key.public_key())}, payload, key)


def _oversized_header(token: str, jwks: dict[str, Any]) -> str:
    _, body, signature = token.split(".")
    header_, _ = segments(token)
    return f"{encode({**header_, 'pad': 'A' * 9000})}.{body}.{signature}"


def _oversized_payload(token: str, jwks: dict[str, Any]) -> str:
    return _payload_changed(token, pad="A" * 9000)


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (_alg_none, "disallowed_algorithm"),
        (_hs256_with_public_key, "disallowed_algorithm"),
        (_tampered_payload, "bad_signature"),
        (_flipped_signature_bit, "bad_signature"),
        (_unknown_kid, "unknown_key"),
        (_oversized_header, "token_too_large"),
        (_oversized_payload, "token_too_large"),
    ],
    ids=[
        "alg-none",
        "hs256-key-confusion",
        "tampered-payload",
        "flipped-bit",
        "unknown-kid",
        "oversized-header",
        "oversized-payload",
    ],
)
def test_bad_tokens_get_401_with_the_exact_code(
    stack: Stack, make: Callable[[str, dict[str, Any]], str], code: str
) -> None:
    jwks = stack.api.call("GET", JWKS_PATH).json()
    bad = make(stack.issue(), jwks)
    before = len(stack.api.entries())

    r = stack.call("GET", "/api/models", bad)

    assert_refused(r, 401, code)
    assert len(stack.api.entries()) == before
    assert INTROSPECT_PATH not in stack.vault_calls
    assert stack.app.seen == []


@pytest.mark.parametrize("past", [-0.5, 1, 31])  # its last second, within the leeway, beyond
@pytest.mark.parametrize("seen", [True, False])
def test_expired_token_gets_401_and_nothing_is_recorded(
    stack: Stack, clock: MovableClock, past: float, seen: bool
) -> None:
    """Past ``exp`` a token is refused by the middleware's own clock, before the vault is asked:
    the leeway is for clocks apart, and a use the vault recorded as allowed would be one the app
    never served (its session for the subject ends at ``exp``). So is a token in its last
    second: Open WebUI's tokens live whole seconds, and the mapper mints none then."""
    token = stack.issue(ttl=120)
    if seen:
        assert stack.call("GET", "/api/models", token).status_code == 200  # now in the cache
    beyond = segments(token)[1]["exp"] + past - time.time()
    stack.offset[0] = beyond
    clock.advance(beyond)
    before = len(stack.api.entries())

    r = stack.call("GET", "/api/models", token)

    assert_refused(r, 401, "expired_token")
    assert len(stack.api.entries()) == before
    assert len(stack.app.seen) == (1 if seen else 0)


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/api/models"), ("POST", "/api/chat/completions")]
)
def test_delegation_expiring_before_the_app_acts_is_401_expired_token(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, method: str, path: str
) -> None:
    """The race after the middleware's own ``exp`` check: the mapper finds the delegation over
    (``DelegationExpired``). The caller is told the token expired, not that the user is unknown,
    and nothing of the app's is served."""

    async def expired(user_id: str, **_: Any) -> str:
        raise DelegationExpired("the delegation has expired")

    monkeypatch.setattr(stack.mapper, "native_token", expired)
    token = stack.issue()

    r = stack.call(method, path, token, json={"model": "m"} if method == "POST" else None)

    assert_refused(r, 401, "expired_token")
    assert stack.app.seen == []


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/api/models"), ("POST", "/api/chat/completions")]
)
def test_a_user_gone_from_the_app_is_refused_and_the_refusal_is_logged(
    stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
) -> None:
    """The vault allowed the use (its subject is still active: no sync since), the app no
    longer has the user: 401 ``unknown_user``, nothing of the app's served, and a warning
    that names the jti of the vault's ``token.used`` entry, so that the two can be matched."""

    async def gone(user_id: str, **_: Any) -> str:
        raise UnknownUser("no such active Open WebUI user")

    monkeypatch.setattr(stack.mapper, "native_token", gone)
    token = stack.issue()
    jti = segments(token)[1]["jti"]
    caplog.set_level(logging.WARNING, logger="vault.middleware")

    r = stack.call(method, path, token, json={"model": "m"} if method == "POST" else None)

    assert_refused(r, 401, "unknown_user")
    assert stack.app.seen == []
    [used] = stack.used(token)
    assert used["data"]["outcome"] == "allowed"  # the vault's decision, as it was made
    [warning] = [rec for rec in caplog.records if rec.name == "vault.middleware"]
    assert warning.levelno == logging.WARNING
    assert jti in warning.getMessage()
    assert "unknown_user" in warning.getMessage()
    assert token not in warning.getMessage()


def test_token_not_yet_valid_gets_401(stack: Stack) -> None:
    token = stack.issue()
    stack.offset[0] = -35  # the middleware's clock is behind the token's nbf by more than leeway
    before = len(stack.api.entries())

    r = stack.call("GET", "/api/models", token)

    assert_refused(r, 401, "token_not_yet_valid")
    assert len(stack.api.entries()) == before
    assert stack.app.seen == []


# --- scopes, introspection, revocation ------------------------------------------------------------


def test_request_outside_the_scope_is_403_and_recorded_as_denied(stack: Stack) -> None:
    token = stack.issue(scope="chat")

    r = stack.call("GET", "/api/v1/chats/", token)

    assert_refused(r, 403, "scope_not_allowed")
    [entry] = stack.used(token)
    assert entry["data"]["outcome"] == "denied_scope"
    assert (entry["data"]["method"], entry["data"]["path"]) == ("GET", "/api/v1/chats/")
    assert (entry["actor"], entry["subject"]) == (stack.delegator_id, "u-1")
    assert stack.app.seen == []
    assert stack.mapper.minted == []


def test_request_inside_the_scope_is_recorded_as_allowed(stack: Stack) -> None:
    token = stack.issue(scope="chat")

    r = stack.call("POST", "/api/chat/completions?stream=false", token, json={"model": "m"})

    assert r.status_code == 200, r.text
    assert r.json()["user"] == "u-1"
    [entry] = stack.used(token)
    recorded = {k: entry["data"].get(k) for k in ("jti", "method", "path", "client_ip", "outcome")}
    assert recorded == {
        "jti": segments(token)[1]["jti"],
        "method": "POST",
        "path": "/api/chat/completions",
        "client_ip": "127.0.0.1",
        "outcome": "allowed",
    }
    assert (entry["actor"], entry["subject"]) == (stack.delegator_id, "u-1")


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "strict"])
def test_revoked_token_is_refused_on_the_next_request(
    api: Api, settings: Settings, overlap: bool
) -> None:
    with build_stack(api, settings, overlap=overlap) as stack:
        _revoked_token_is_refused_on_the_next_request(stack, overlap)


def _revoked_token_is_refused_on_the_next_request(stack: Stack, overlap: bool) -> None:
    token = stack.issue()
    assert stack.call("GET", "/api/models", token).status_code == 200
    jti = segments(token)[1]["jti"]
    r = stack.api.call("POST", "/v1/revoke", stack.api.owner, json={"jti": jti})
    assert r.json() == {"revoked": 1}

    r = stack.call("GET", "/api/models", token)

    assert_refused(r, 401, "revoked_token")  # the app's answer (a model list) never came out
    # Strict: the app never saw the request. Overlapped (a GET): it may have prepared an answer,
    # which was withheld.
    assert len(stack.app.seen) == (2 if overlap else 1)
    assert stack.keys.lookups == 1  # the seen cache answered; the vault still said no
    rejected = [e for e in stack.api.entries(type="token.rejected") if e["data"]["jti"] == jti]
    assert [e["data"]["reason"] for e in rejected] == ["revoked_token"]


def test_an_overlapped_request_asks_the_vault_before_the_app_starts(overlapping: Stack) -> None:
    """The introspection is on its way before the app's first instruction, so the vault's work
    overlaps all of the app's. (Started only when the app first waited, it overlapped the app's
    database phase instead, where Open WebUI already keeps two threads busy: on the real Open
    WebUI, delegation went from 1.21-1.27x the session JWT to 1.05-1.12x with this.)"""
    stack = overlapping
    token = stack.issue()
    before = stack.vault_calls.count(INTROSPECT_PATH)
    asked: list[int] = []
    stack.app.on_request = lambda: asked.append(stack.vault_calls.count(INTROSPECT_PATH) - before)
    assert stack.call("GET", "/api/models", token).status_code == 200
    assert asked == [1]


def test_by_default_the_vault_has_answered_before_the_app_starts(stack: Stack) -> None:
    """As shipped (``VAULT_OVERLAP_SAFE_METHODS`` off), a GET reaches the app only once the
    vault has answered: its use is already committed when the app starts on it."""
    token = stack.issue()
    committed: list[int] = []
    stack.app.on_request = lambda: committed.append(len(stack.used(token)))
    assert stack.call("GET", "/api/models", token).status_code == 200
    assert stack.call("GET", "/api/models", token).status_code == 200  # seen before: the same
    assert committed == [1, 2]


def test_unknown_user_is_401(stack: Stack) -> None:
    token = stack.issue("u-ghost")

    r = stack.call("GET", "/api/models", token)

    assert_refused(r, 401, "unknown_user")
    assert stack.app.seen == []


def test_seen_token_is_not_verified_again_but_is_introspected_every_time(stack: Stack) -> None:
    token = stack.issue()
    assert stack.call("GET", "/api/models", token).status_code == 200
    assert stack.keys.lookups == 1

    assert stack.call("GET", "/api/models", token).status_code == 200

    assert stack.keys.lookups == 1
    assert stack.vault_calls.count(INTROSPECT_PATH) == 2
    assert [e["data"]["outcome"] for e in stack.used(token)] == ["allowed", "allowed"]
    assert stack.call("GET", "/api/models", stack.issue()).status_code == 200
    assert stack.keys.lookups == 2  # a new token is verified


# --- fail closed, pass through -------------------------------------------------------------------


def native_requests(app: StandInOpenWebUI) -> list[tuple[str, dict[str, str]]]:
    session = app.session_token("u-2", exp=int(time.time()) + 3600)
    key = app.api_key("u-2")
    return [
        ("/api/v1/auths/", {"Authorization": f"Bearer {session}"}),
        ("/api/models", {"Authorization": f"bearer {session}", "Cookie": "theme=dark"}),
        ("/api/models", {"Authorization": f"Bearer {key}", "x-api-key": key}),
        ("/api/v1/chats/", {"Cookie": f"token={session}; theme=dark"}),
        ("/api/v1/chats/", {"x-api-key": key}),
    ]


def assert_passes_through(stack: Stack) -> None:
    sent: list[list[tuple[bytes, bytes]]] = []

    def capture(request: httpx.Request) -> None:
        sent.append([(k.lower(), v) for k, v in request.headers.raw])

    stack.client.event_hooks["request"] = [capture]
    for path, headers in native_requests(stack.app):
        r = stack.client.get(path, headers=headers)
        assert r.status_code == 200, (path, r.text)
        assert r.json().get("user", r.json().get("id")) == "u-2"
        assert stack.app.seen[-1].headers == sent[-1]  # byte for byte
        if path == "/api/v1/auths/":  # untouched: Open WebUI's own echo reaches its own client
            credential = headers["Authorization"].split(" ")[1]
            assert r.json()["token"] == credential
            assert r.headers.get_list("set-cookie")[0].startswith(f"token={credential};")


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "strict"])
def test_vault_unreachable_fails_closed_while_native_credentials_pass_through(
    api: Api, settings: Settings, clock: MovableClock, overlap: bool
) -> None:
    vault = LiveServer(settings, clock)  # a second vault on the same database, ours to stop
    with vault, build_stack(api, settings, vault_url=vault.url, overlap=overlap) as stack:
        seen_token = stack.issue()
        assert stack.call("GET", "/api/models", seen_token).status_code == 200
        fresh_token = stack.issue()
        vault.server.should_exit = True
        vault.thread.join(timeout=30)
        assert not vault.thread.is_alive()
        introspections = stack.vault_calls.count(INTROSPECT_PATH)

        for token in (seen_token, fresh_token):
            assert_refused(stack.call("GET", "/api/models", token), 503, "vault_unavailable")
        assert stack.vault_calls.count(INTROSPECT_PATH) == introspections + 2
        assert len(stack.app.seen) == (3 if overlap else 1)  # overlapped GETs: answers withheld
        posted = stack.call("POST", "/api/chat/completions", seen_token, json={})
        assert_refused(posted, 503, "vault_unavailable")
        assert len(stack.app.seen) == (3 if overlap else 1)  # never a POST before the verdict
        assert_passes_through(stack)


def test_vault_never_reached_is_503_not_a_verdict_on_the_token(
    api: Api, settings: Settings
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with build_stack(api, settings, vault_url=closed) as stack:
        token = stack.issue()

        r = stack.call("GET", "/api/models", token)

        assert_refused(r, 503, "vault_unavailable")
        assert stack.vault_calls == [JWKS_PATH]
        assert stack.app.seen == []
        assert_passes_through(stack)


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "strict"])
def test_a_refused_verifier_credential_fails_closed_and_says_so(
    api: Api, settings: Settings, caplog: pytest.LogCaptureFixture, overlap: bool
) -> None:
    """The vault refusing this service's own credential is no verdict on the token: 503, the
    app's answer withheld, and a log line that names what to fix."""
    with build_stack(api, settings, overlap=overlap) as stack:
        token = stack.issue()
        listed = api.call("GET", "/v1/principals", api.owner).json()["principals"]
        (verifier,) = [p for p in listed if p["name"] == "owui"]
        disabled = api.call("POST", f"/v1/principals/{verifier['id']}/disable", api.owner)
        assert disabled.status_code == 200, disabled.text
        with caplog.at_level(logging.ERROR, logger="vault"):
            r = stack.call("GET", "/api/models", token)
        assert_refused(r, 503, "vault_unavailable")
        assert "credential" in r.json()["error_description"]
        assert any("VAULT_VERIFIER_CREDENTIAL" in rec.getMessage() for rec in caplog.records)
        assert len(stack.app.seen) == (1 if overlap else 0)  # an overlapped GET: withheld
        assert_passes_through(stack)


def test_native_credentials_pass_through_with_the_vault_up(stack: Stack) -> None:
    assert_passes_through(stack)
    assert stack.vault_calls == []


def test_lifespan_and_websocket_pass_through(stack: Stack) -> None:
    assert stack.app.lifespan == ["startup"]
    token = stack.issue()
    url = stack.server.url.replace("http://", "ws://") + "/ws"
    with ws_connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        message = json.loads(ws.recv(timeout=5))
    assert message == {"authorization": f"Bearer {token}"}
    [seen] = stack.app.seen
    assert seen.method == "WEBSOCKET"
    assert stack.vault_calls == []

    stack.server.stop()
    assert stack.app.lifespan == ["startup", "shutdown"]


# --- the JWKS cache -------------------------------------------------------------------------------


def test_jwks_refresh_on_unknown_kid_is_rate_limited(api: Api, settings: Settings) -> None:
    window = 1.5
    with build_stack(api, settings, min_refresh=window) as stack:
        old = stack.issue()

        async def flood(count: int) -> list[httpx.Response]:
            def forged() -> str:
                return _unknown_kid(old, {})

            async with httpx.AsyncClient(base_url=stack.server.url, timeout=10) as client:
                calls = [
                    client.get("/api/models", headers={"Authorization": f"Bearer {forged()}"})
                    for _ in range(count)
                ]
                return await asyncio.gather(*calls)

        started = time.monotonic()
        for _ in range(3):
            responses = asyncio.run(flood(20))
            assert {r.json()["error"] for r in responses} == {"unknown_key"}
        # Unknown kids wait for the next fetch and share it: one fetch per window at most.
        windows = (time.monotonic() - started) / window
        assert 1 <= stack.jwks_fetches <= 1 + math.ceil(windows), (stack.jwks_fetches, windows)
        assert INTROSPECT_PATH not in stack.vault_calls  # forgeries never reach introspection
        assert stack.call("GET", "/api/models", old).status_code == 200
        fetched = stack.jwks_fetches

        # A key rotated in just now: its first token waits for the next fetch, not refused.
        rotated = stack.api.call("POST", "/v1/keys/rotate", stack.api.owner)
        assert rotated.status_code == 200, rotated.text
        new = stack.issue()
        assert segments(new)[0]["kid"] == rotated.json()["kid"] != segments(old)[0]["kid"]
        r = stack.call("GET", "/api/models", new)
        assert r.status_code == 200, r.text
        assert r.json()["user"] == "u-1"
        assert stack.jwks_fetches == fetched + 1
        assert stack.call("GET", "/api/models", stack.issue()).status_code == 200
        assert stack.jwks_fetches == fetched + 1  # a known kid needs no fetch


def test_a_token_refused_by_its_header_alone_causes_no_key_fetch(stack: Stack) -> None:
    token = stack.issue()
    assert stack.call("GET", "/api/models", token).status_code == 200
    fetched = stack.jwks_fetches
    header_, payload = segments(_unknown_kid(token, {}))  # a kid no one publishes
    for bad, code in (
        (f"{encode({**header_, 'alg': 'none'})}.{encode(payload)}.", "disallowed_algorithm"),
        (f"{encode({**header_, 'crit': ['x']})}.{encode(payload)}.c2ln", "malformed_token"),
        (
            f"{encode(header_)}.{encode({**payload, 'pad': 'A' * 9000})}.c2ln",
            "token_too_large",
        ),
    ):
        assert_refused(stack.call("GET", "/api/models", bad), 401, code)
    assert stack.jwks_fetches == fetched


def test_a_key_rotated_in_by_another_process_is_published_and_accepted_at_once(
    api: Api, settings: Settings
) -> None:
    """The CLI rotates (another process): the server signs with the new key within its key
    refresh interval, and publishes it in its JWKS no later than the middleware asks."""
    with build_stack(api, settings, min_refresh=1.0) as stack:
        old = stack.issue()
        assert stack.call("GET", "/api/models", old).status_code == 200
        assert settings.master_key is not None
        env = cli_env(
            settings.home,
            VAULT_DATABASE_URL=settings.database_url,
            VAULT_MASTER_KEY=settings.master_key,
        )
        done = dvault(env, "keys", "rotate")
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 30
        while segments(new := stack.issue())[0]["kid"] == segments(old)[0]["kid"]:
            assert time.monotonic() < deadline, "the server never signed with the new key"
            time.sleep(0.2)
        r = stack.call("GET", "/api/models", new)
        assert r.status_code == 200, r.text
