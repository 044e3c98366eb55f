"""Dependencies: the vault of this app, the authenticated caller, request bodies with a limit."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from vault.audit.appender import Job
from vault.domain import Principal
from vault.errors import Forbidden, InvalidRequest, RequestTooLarge
from vault.ops.credentials import authenticate
from vault.ops.runtime import Vault

T = TypeVar("T")


def get_vault(request: Request) -> Vault:
    vault: Vault = request.app.state.vault
    return vault


VaultDep = Annotated[Vault, Depends(get_vault)]


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


async def get_caller(request: Request, vault: VaultDep) -> Principal:
    return await run_in_threadpool(authenticate, vault.db, bearer(request))


CallerDep = Annotated[Principal, Depends(get_caller)]


def require(caller: Principal, *roles: str) -> None:
    if not any(caller.has(role) for role in roles):
        raise Forbidden(f"this needs the {' or '.join(roles)} role")


async def read_json(request: Request, vault: Vault) -> Any:
    """The request body as JSON, refusing more than ``max_body_bytes`` (413) and non-JSON (400)."""
    limit = vault.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"request body is over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise RequestTooLarge(f"request body is over {limit} bytes")
    if not body:
        raise InvalidRequest("a JSON body is required")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("body is not valid JSON") from None


async def commit(vault: Vault, job: Job[T]) -> T:
    """Hand a job to the appender; resume when its commit is durable (or has failed)."""
    return await asyncio.wrap_future(vault.appender.submit(job))


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None
