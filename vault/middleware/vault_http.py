"""The middleware's client for ``POST /v1/introspect``: HTTP/1.1 over asyncio streams, keep-alive.

Every delegated request waits for one introspection, so its cost is on every request's path.
Measured here, an ``httpx.AsyncClient`` POST costs about 3 ms of CPU in the calling process (its
transport and event machinery), ten times the exchange itself; this client does the same exchange
for the one request shape it needs — a JSON POST answered with a JSON body — in about 0.3 ms.
(``httpx`` stays for the key set, fetched rarely.)

It speaks only what that exchange needs, and refuses the rest: ``Content-Length`` or chunked
bodies, at most ``MAX_RESPONSE_BYTES``; no redirects, no proxies, no compression, no cookies.
``https://`` URLs use TLS with the system's default verification. A connection is reused only
after a complete response that did not ask to close it; one that fails is closed. A request is
retried once, on a fresh connection, only when a *reused* connection failed before a single byte
of the answer came back (the vault had closed the idle connection).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_IDLE = 32
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}")


class VaultHttpError(Exception):
    """The vault could not be reached, or did not answer in HTTP/1.1 as expected."""


class _Stale(Exception):
    """A reused connection failed before any byte of the answer: safe to retry once."""


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class VaultHttp:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"the vault URL must be http:// or https://, not {base_url!r}")
        self._tls = ssl.create_default_context() if parts.scheme == "https" else None
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._host_header = parts.netloc.rpartition("@")[2].encode("idna")  # ASCII stays as is
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._on_request = on_request
        self._idle: list[_Connection] = []

    async def post_json(self, path: str, body: dict[str, Any], *, bearer: str) -> tuple[int, bytes]:
        """``(status, body)`` of ``POST path`` with ``body`` as JSON; ``VaultHttpError`` when
        there is no complete HTTP answer within the timeout."""
        if not bearer.isascii() or not bearer.isprintable():
            raise VaultHttpError("the verifier credential is not a valid header value")
        payload = json.dumps(body, separators=(",", ":")).encode()
        request = b"".join(
            (
                b"POST ",
                (self._prefix + path).encode("ascii"),
                b" HTTP/1.1\r\nHost: ",
                self._host_header,
                b"\r\nAuthorization: Bearer ",
                bearer.encode("ascii"),
                b"\r\nContent-Type: application/json\r\nAccept: application/json\r\n",
                b"Content-Length: ",
                str(len(payload)).encode(),
                b"\r\n\r\n",
                payload,
            )
        )
        if self._on_request is not None:
            self._on_request(path)
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    return await self._exchange(request, reuse=True)
                except _Stale:
                    return await self._exchange(request, reuse=False)
        except TimeoutError:
            raise VaultHttpError("the vault did not answer in time") from None

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()

    async def _exchange(self, request: bytes, *, reuse: bool) -> tuple[int, bytes]:
        reused = reuse and bool(self._idle)
        reader, writer = self._idle.pop() if reused else await self._connect()
        answered = False
        try:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            answered = True
            status, length, chunked, keep = _parse_head(head)
            body = await (_read_chunked(reader) if chunked else _read_exactly(reader, length))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            writer.close()
            partial = isinstance(exc, asyncio.IncompleteReadError) and bool(exc.partial)
            if reused and not answered and not partial:
                raise _Stale from None
            raise VaultHttpError(f"the vault connection failed: {type(exc).__name__}") from None
        except BaseException:
            writer.close()  # a malformed answer or a cancellation: never reused
            raise
        if keep and len(self._idle) < MAX_IDLE:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return status, body

    async def _connect(self) -> _Connection:
        try:
            return await asyncio.open_connection(
                self._host,
                self._port,
                ssl=self._tls,
                server_hostname=self._host if self._tls else None,
                limit=MAX_HEAD_BYTES,
            )
        except OSError as exc:
            raise VaultHttpError(f"the vault cannot be reached: {type(exc).__name__}") from None


def _parse_head(head: bytes) -> tuple[int, int, bool, bool]:
    """``(status, content length, chunked, keep-alive)`` of a response head."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if version not in {"HTTP/1.1", "HTTP/1.0"} or not code.isdigit():
        raise VaultHttpError("the vault's answer is not HTTP/1.1")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise VaultHttpError("the vault's answer has a malformed header")
            headers[name.strip().lower()] = value.strip()
    chunked = headers.get("transfer-encoding", "").lower() == "chunked"
    declared = headers.get("content-length", "")
    if not chunked and not declared.isdigit():
        raise VaultHttpError("the vault's answer has no length")
    length = 0 if chunked else int(declared)
    if length > MAX_RESPONSE_BYTES:
        raise VaultHttpError("the vault's answer is too large")
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return int(code), length, chunked, keep


async def _read_exactly(reader: asyncio.StreamReader, length: int) -> bytes:
    return await reader.readexactly(length)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size_text = size_line.split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise VaultHttpError("the vault's answer has a malformed chunk")
        size = int(size_text, 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the end
                pass
            return bytes(body)
        if len(body) + size > MAX_RESPONSE_BYTES:
            raise VaultHttpError("the vault's answer is too large")
        body.extend(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise VaultHttpError("the vault's answer has a malformed chunk")
