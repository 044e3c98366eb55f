"""``POST /v1/token`` and ``POST /v1/introspect`` served straight from ASGI.

These two are the vault's hot paths: every delegated request in Open WebUI is one introspection.
FastAPI's per-request machinery (its middleware stack, routing, ``Request`` object, dependency
resolution, response classes) cost about as much CPU on them as the vault's own work
(``benchmarks/README.md``), so ``VaultApp`` answers them before that machinery. What they do is
not duplicated: the same ``answer_*`` functions serve the FastAPI routes of the same paths, which
stay for the OpenAPI document. Errors get the pinned body through the same ``classify``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI

from vault.api.deps import Call, read_limited, sole_authorization
from vault.api.errors import HEAD_AS_GET, classify, error_body, error_headers
from vault.api.routes.tokens import NO_STORE, answer_exchange, answer_introspect
from vault.ops.runtime import Vault

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Answer = Callable[[Vault, Call], Awaitable[dict[str, Any]]]

HOT: dict[str, Answer] = {"/v1/token": answer_exchange, "/v1/introspect": answer_introspect}


class ClientGone(Exception):
    """The client disconnected before its body arrived: there is no one to answer."""


class VaultApp(FastAPI):
    """The vault's FastAPI app, with its two hot paths answered without FastAPI in the way
    (and a path that is not UTF-8 refused before any route sees it)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path")
            if raw and b"%" in raw and not _utf8_path(raw):
                # the server decoded it with U+FFFD in place of what is not UTF-8: an id, say,
                # would be stored as another one
                body = error_body("invalid_request", "the path is not valid UTF-8")
                await respond(send, 400, body, {})
                return
            if scope["method"] == "POST":
                answer = HOT.get(route_path(scope))
                if answer is not None:
                    await serve(self.state.vault, answer, scope, receive, send)
                    return
            elif scope["method"] == "HEAD" and route_path(scope) in HEAD_AS_GET:
                get = {**scope, "method": "GET"}
                await super().__call__(get, receive, _headers_only(send))
                return
        await super().__call__(scope, receive, send)


def _headers_only(send: Send) -> Send:
    """``send`` for a HEAD answered as a GET: the status and headers (``Content-Length`` the
    GET's), then an empty body."""

    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return send_head


def _utf8_path(raw: bytes) -> bool:
    try:
        unquote_to_bytes(raw.split(b"?", 1)[0]).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def route_path(scope: Scope) -> str:
    """The path the app's routes see: without the ``root_path`` it is mounted under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def serve(vault: Vault, answer: Answer, scope: Scope, receive: Receive, send: Send) -> None:
    try:
        status, payload, headers = 200, await answer(vault, call_of(scope, receive)), NO_STORE
    except ClientGone:
        return
    except Exception as exc:  # answered as the FastAPI routes answer it, never a traceback
        status, code, description = classify(exc)
        payload, headers = error_body(code, description), error_headers(status)
    await respond(send, status, payload, headers)


def call_of(scope: Scope, receive: Receive) -> Call:
    authorizations: list[str] = []
    declared = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorizations.append(value.decode("latin-1"))
        elif name == b"content-length":
            declared = value.decode("latin-1")
    authorization = sole_authorization(authorizations)
    client = scope.get("client")

    async def read_body(limit: int) -> bytes:
        return await read_limited(_chunks(receive), declared, limit)

    return Call(authorization, client[0] if client else None, read_body)


async def _chunks(receive: Receive) -> Any:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


# Starlette's ``JSONResponse.render``: ``json.dumps`` with these arguments, one encoder for all.
_RENDER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))


async def respond(send: Send, status: int, payload: Any, headers: dict[str, str]) -> None:
    """``payload`` as JSON, rendered as Starlette's ``JSONResponse`` renders it."""
    body = _RENDER.encode(payload).encode("utf-8")
    raw = [
        (b"content-length", str(len(body)).encode("latin-1")),
        (b"content-type", b"application/json"),
        *(
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.items()
        ),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
