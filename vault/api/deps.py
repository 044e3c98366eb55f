"""Dependencies: the vault of this app, the authenticated caller, request bodies with a limit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from vault.audit.appender import Job, Read
from vault.crypto.canonical import (
    DuplicateMember,
    is_utf8_text,
    refuse_constant,
    unique_members,
)
from vault.domain import Principal
from vault.errors import Forbidden, InvalidRequest, RequestTooLarge
from vault.ops.credentials import authenticate
from vault.ops.runtime import Vault

T = TypeVar("T")


async def get_vault(request: Request) -> Vault:
    # async: FastAPI runs a plain ``def`` dependency in the threadpool, a hop on every request
    vault: Vault = request.app.state.vault
    return vault


VaultDep = Annotated[Vault, Depends(get_vault)]


def bearer(request: Request) -> str | None:
    return bearer_value(sole_authorization(request.headers.getlist("authorization")))


def sole_authorization(values: list[str]) -> str | None:
    """The ``Authorization`` header, if the request has exactly one: with two, which one
    counts would depend on who reads them (a proxy, a framework), so neither does (401)."""
    return values[0] if len(values) == 1 else None


def bearer_value(header: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer ...`` header, if it is one."""
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


async def get_caller(request: Request, vault: VaultDep) -> Principal:
    return await run_in_threadpool(authenticate, vault.db, bearer(request))


CallerDep = Annotated[Principal, Depends(get_caller)]


@dataclass(frozen=True, slots=True)
class Call:
    """What the two hot endpoints need of a request, from FastAPI's ``Request`` or straight from
    the ASGI scope (``vault.api.hot``): the ``Authorization`` header, the client's address, and
    the body, read on demand up to a limit."""

    authorization: str | None
    client_ip: str | None
    read_body: Callable[[int], Awaitable[bytes]]

    async def json(self, vault: Vault) -> Any:
        return decode_json(await self.read_body(vault.settings.max_body_bytes))


def request_call(request: Request) -> Call:
    async def read_body(limit: int) -> bytes:
        declared = request.headers.get("content-length")
        return await read_limited(request.stream(), declared, limit)

    authorization = sole_authorization(request.headers.getlist("authorization"))
    return Call(authorization, client_ip(request), read_body)


async def hot_caller(vault: Vault, authorization: str | None) -> Principal:
    """The caller of token exchange or introspection, from the credential cache when it can be:
    those jobs check their caller again under the chain lock (``CredentialCache``)."""
    credential = bearer_value(authorization)
    cached = vault.credentials.get(credential)
    if cached is not None:
        return cached
    principal = await run_in_threadpool(authenticate, vault.db, credential)
    if credential is not None:
        vault.credentials.put(credential, principal)
    return principal


def require(caller: Principal, *roles: str) -> None:
    if not any(caller.has(role) for role in roles):
        raise Forbidden(f"this needs the {' or '.join(roles)} role")


async def read_body(request: Request, vault: Vault) -> bytes:
    """The request body, refusing more than ``max_body_bytes`` (413); read whatever the headers
    say of it (a chunked body has no ``Content-Length``)."""
    declared = request.headers.get("content-length")
    return await read_limited(request.stream(), declared, vault.settings.max_body_bytes)


async def read_json(request: Request, vault: Vault) -> Any:
    """The request body as JSON, refusing more than ``max_body_bytes`` (413) and non-JSON (400)."""
    return decode_json(await read_body(request, vault))


async def no_body(request: Request, vault: Vault) -> None:
    """For a call that takes no body: none, or ``{}``; anything else is a 400, as an unknown
    member is anywhere else (a client that sends options expects them to be read)."""
    body = await read_body(request, vault)
    if body.strip() and decode_json(body) != {}:
        raise InvalidRequest("this call takes no body (none, or {})")


async def read_limited(chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The whole body, or ``RequestTooLarge`` as soon as it (or its declared length) is over
    ``limit`` bytes."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"request body is over {limit} bytes")
    body = bytearray()
    async for chunk in chunks:
        body.extend(chunk)
        if len(body) > limit:
            raise RequestTooLarge(f"request body is over {limit} bytes")
    return bytes(body)


# ``json.loads`` with hooks would build a decoder per call: one for every body.
_BODY_DECODER = json.JSONDecoder(object_pairs_hook=unique_members, parse_constant=refuse_constant)


def decode_json(body: bytes) -> Any:
    """A request body as JSON: 400 if it is empty, not JSON (NaN and Infinity are not), names
    a member twice (which one counts would depend on the parser: a proxy's, a logger's, ours),
    or holds text nothing can store."""
    if not body:
        raise InvalidRequest("a JSON body is required")
    try:  # the text as ``json.loads`` finds it in bytes (UTF-8, -16 or -32; a BOM is dropped)
        value = _BODY_DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except DuplicateMember:
        raise InvalidRequest("body names a member more than once") from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("body is not valid JSON") from None
    _refuse_unstorable(value)
    return value


def _refuse_unstorable(value: Any) -> None:
    """Text the audit log and the databases cannot hold (a lone surrogate: no UTF-8; NUL: not in
    PostgreSQL text) is refused here, as the caller's error, before any job can carry it into a
    commit that other callers share."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item or not is_utf8_text(item):
                raise InvalidRequest("body holds a NUL character or invalid Unicode")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


async def commit(
    vault: Vault, job: Job[T], *, read_only: bool = False, reads: tuple[Read, ...] = ()
) -> T:
    """Hand a job to the appender; resume when its commit is durable (or has failed).

    A commit that takes longer than a minute is answered 503 (the appender's ``answer_within``);
    if the job has not started by then it never will, otherwise whatever it commits is in the
    audit log.
    """
    return await vault.appender.submit_async(job, read_only=read_only, reads=reads)


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None
