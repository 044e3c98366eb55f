"""``VaultHttp``, the middleware's introspection client, against raw HTTP servers on 127.0.0.1.

Each server here answers with exact bytes, so the protocol cases the vault (or a proxy in front
of it) may produce are all reached: keep-alive, a closed idle connection, chunked bodies, missing
lengths, oversized answers, a partial answer, silence.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from vault.middleware.vault_http import MAX_RESPONSE_BYTES, VaultHttp, VaultHttpError

Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]


@dataclass
class RawServer:
    """Counts connections and requests; ``reply`` answers one request, returns keep-open."""

    reply: Reply
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                if not await self.reply(reader, writer, len(self.requests)):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def run(reply: Reply, scenario: Callable[[VaultHttp, RawServer], Awaitable[None]]) -> RawServer:
    server = RawServer(reply)

    async def main() -> None:
        listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = listening.sockets[0].getsockname()[1]
        client = VaultHttp(f"http://127.0.0.1:{port}/prefix", timeout=2)
        try:
            await scenario(client, server)
        finally:
            await client.aclose()
            listening.close()
            await listening.wait_closed()

    asyncio.run(main())
    return server


def ok(body: dict[str, object], *extra: bytes) -> bytes:
    payload = json.dumps(body).encode()
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    head += b"".join(extra) + b"content-length: %d\r\n\r\n" % len(payload)
    return head + payload


def answering(raw: bytes, *, keep: bool = True) -> Reply:
    async def reply(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> bool:
        writer.write(raw)
        await writer.drain()
        return keep

    return reply


async def post(client: VaultHttp) -> tuple[int, bytes]:
    return await client.post_json("/v1/introspect", {"token": "t"}, bearer="dv_secret")


def test_posts_json_with_the_credential_and_reuses_the_connection() -> None:
    async def scenario(client: VaultHttp, _server: RawServer) -> None:
        for _ in range(3):
            assert await post(client) == (200, b'{"active": true}')

    server = run(answering(ok({"active": True})), scenario)
    assert server.connections == 1
    assert len(server.requests) == 3
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /prefix/v1/introspect HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer dv_secret" in head
    assert b"\r\nContent-Type: application/json" in head
    assert json.loads(body) == {"token": "t"}


def test_a_connection_the_vault_closed_while_idle_is_retried_once_on_a_new_one() -> None:
    async def scenario(client: VaultHttp, server: RawServer) -> None:
        assert (await post(client))[0] == 200
        await asyncio.sleep(0.05)  # the server has closed its side by now
        assert (await post(client))[0] == 200

    server = run(answering(ok({}), keep=False), scenario)
    assert server.connections == 2
    assert len(server.requests) == 2  # never sent twice


def test_connection_close_is_honoured() -> None:
    async def scenario(client: VaultHttp, _server: RawServer) -> None:
        for _ in range(2):
            assert (await post(client))[0] == 200

    server = run(answering(ok({}, b"connection: close\r\n")), scenario)
    assert server.connections == 2


def test_a_chunked_answer_is_read_whole() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b'5\r\n{"a":\r\n3;ext=1\r\n 1}\r\n0\r\n\r\n'
    )

    async def scenario(client: VaultHttp, _server: RawServer) -> None:
        for _ in range(2):  # and the connection is still in step afterwards
            assert await post(client) == (200, b'{"a": 1}')

    assert run(answering(chunked), scenario).connections == 1


def test_a_non_200_status_is_returned_as_is() -> None:
    raw = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}"

    async def scenario(client: VaultHttp, _server: RawServer) -> None:
        assert await post(client) == (401, b"{}")

    run(answering(raw), scenario)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\n\r\n{}", id="no length"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n{}", id="bad length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (MAX_RESPONSE_BYTES + 1),
            id="too large",
        ),
        pytest.param(b"SSH-2.0-OpenSSH\r\n\r\n", id="not http"),
        pytest.param(b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n", id="bad header"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-1\r\n", id="bad chunk"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0x5\r\n", id="hex prefix"
        ),
    ],
)
def test_a_malformed_answer_is_an_error_and_never_reused(raw: bytes) -> None:
    async def scenario(client: VaultHttp, _server: RawServer) -> None:
        for _ in range(2):
            with pytest.raises(VaultHttpError):
                await post(client)

    server = run(answering(raw), scenario)
    assert server.connections == 2  # a connection in an unknown state is closed


def test_a_partial_answer_is_an_error_and_the_request_is_not_repeated() -> None:
    async def scenario(client: VaultHttp, server: RawServer) -> None:
        assert (await post(client))[0] == 200
        with pytest.raises(VaultHttpError):
            await post(client)  # on the reused connection, the answer breaks off
        assert len(server.requests) == 2

    async def reply(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(ok({}) if n == 1 else b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{")
        await writer.drain()
        return n == 1

    run(reply, scenario)


def test_silence_is_a_timeout_error() -> None:
    async def reply(_r: asyncio.StreamReader, _w: asyncio.StreamWriter, _n: int) -> bool:
        await asyncio.sleep(10)
        return False

    async def scenario(client: VaultHttp, _server: RawServer) -> None:
        with pytest.raises(VaultHttpError, match="in time"):
            await post(client)

    run(reply, scenario)


def test_nothing_listening_is_an_error() -> None:
    async def main() -> None:
        listening = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = listening.sockets[0].getsockname()[1]
        listening.close()
        await listening.wait_closed()
        with pytest.raises(VaultHttpError, match="cannot be reached"):
            await post(VaultHttp(f"http://127.0.0.1:{port}", timeout=2))

    asyncio.run(main())


@pytest.mark.parametrize("bearer", ["dv_a\r\nX-Evil: 1", "dv_é"])
def test_a_credential_that_is_not_a_header_value_is_refused(bearer: str) -> None:
    async def main() -> None:
        with pytest.raises(VaultHttpError, match="not a valid header value"):
            await VaultHttp("http://127.0.0.1:9", timeout=1).post_json("/x", {}, bearer=bearer)

    asyncio.run(main())


@pytest.mark.parametrize("url", ["ftp://vault", "vault:8787", "http://"])
def test_only_http_and_https_urls(url: str) -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        VaultHttp(url, timeout=1)
