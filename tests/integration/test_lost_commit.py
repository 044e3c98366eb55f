"""A COMMIT whose answer is lost: each request is answered as the log says its batch ended.

Between the vault and PostgreSQL sits a relay (the network, which is outside the project: it
passes every byte as it is) that can cut a connection at a COMMIT: before the COMMIT reaches the
server (nothing commits), or after the server answered it (the transaction committed, and the
vault never hears so). The vault must answer 200 in the second case, with the entry once in the
log; 503 "nothing was done" in the first, with nothing in the log; and, when it cannot read
which happened, a 503 that does not claim nothing was done.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import Api, LiveServer, MovableClock, make_settings, postgres_database
from vault.ops.setup import init_vault

pytestmark = pytest.mark.postgres

COMMIT_SENT = b"COMMIT\x00"  # the query text, in the client's Parse (or Query) message
COMMIT_DONE = b"C\x00\x00\x00\x0bCOMMIT\x00"  # the server's CommandComplete for it


class CommitCutter:
    """A TCP relay to PostgreSQL on 127.0.0.1:5432. ``arm("before")`` cuts the next connection
    that sends a COMMIT, dropping it; ``arm("after")`` cuts the next one whose COMMIT the server
    answered, dropping the answer. ``refusing`` makes it close new connections at once."""

    def __init__(self, upstream: int = 5432) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._mode: str | None = None
        self.cuts = 0
        self.refusing = False
        self._open: list[socket.socket] = []
        self._closed = False

    def arm(self, mode: str) -> None:
        with self._lock:
            self._mode = mode

    def __enter__(self) -> CommitCutter:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.upstream))
            with self._lock:
                self._open += [client, server]
            pair = (client, server)
            threading.Thread(
                target=self._pump, args=(client, server, "before", pair), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(server, client, "after", pair), daemon=True
            ).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, cuts_at: str, pair: tuple[Any, ...]
    ) -> None:
        marker = COMMIT_SENT if cuts_at == "before" else COMMIT_DONE
        try:
            while data := source.recv(65536):
                if self._take(cuts_at, marker, data):
                    break  # cut: this chunk never arrives, nor anything after it
                sink.sendall(data)
        except OSError:
            pass
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _take(self, cuts_at: str, marker: bytes, data: bytes) -> bool:
        with self._lock:
            if self._mode == cuts_at and marker in data:
                self._mode = None
                self.cuts += 1
                return True
        return False


@dataclass
class Relayed:
    api: Api
    cutter: CommitCutter
    delegator_id: str
    delegator: str

    def issued(self) -> list[str]:
        return [e["data"]["jti"] for e in self.api.entries(type="token.issued")]

    def verified(self) -> dict[str, Any]:
        report: dict[str, Any] = self.api.call("GET", "/v1/audit/verify", self.api.owner).json()
        return report


@pytest.fixture
def relayed(tmp_path: Path) -> Iterator[Relayed]:
    with postgres_database() as url, CommitCutter() as cutter:
        through = url.replace("127.0.0.1:5432", f"127.0.0.1:{cutter.port}") + "?sslmode=disable"
        settings = make_settings(tmp_path / "home", through)
        owner = init_vault(settings).credential
        with LiveServer(settings, MovableClock()) as server:
            api = Api(server.url, owner)
            try:
                api.subject("u-1", "alice@example.com")
                delegator_id, delegator = api.principal("bot", "delegator")
                first = api.token(delegator, "u-1", scope="chat")  # the appender now knows
                assert first.status_code == 200, first.text  # the head: guarded batches next
                yield Relayed(api, cutter, delegator_id, delegator)
            finally:
                api.close()


@pytest.mark.parametrize("batches", ["guarded", "locked first"])
def test_a_commit_whose_answer_was_lost_is_answered_as_committed(
    relayed: Relayed, batches: str
) -> None:
    if batches == "locked first":  # a change first: the next read-only batch reads under the lock
        relayed.api.subject("u-2", "bob@example.com")
    before = relayed.issued()
    relayed.cutter.arm("after")

    r = relayed.api.token(relayed.delegator, "u-1", scope="chat")

    assert relayed.cutter.cuts == 1, "the relay never cut a COMMIT's answer"
    assert r.status_code == 200, r.text
    assert relayed.issued() == [*before, r.json()["jti"]]  # in the log, once
    assert relayed.verified()["ok"] is True


def test_a_change_whose_commit_answer_was_lost_is_answered_as_committed(relayed: Relayed) -> None:
    relayed.cutter.arm("after")

    r = relayed.api.call(
        "PUT", "/v1/subjects/u-3", relayed.api.owner, json={"email": "c@example.com"}
    )

    assert relayed.cutter.cuts == 1
    assert r.status_code in {200, 201}, r.text
    upserted = relayed.api.entries(type="subject.upserted", subject="u-3")
    assert len(upserted) == 1, upserted
    assert relayed.verified()["ok"] is True


def test_a_commit_that_never_reached_the_database_did_nothing(relayed: Relayed) -> None:
    before = relayed.issued()
    head = relayed.verified()["head_seq"]
    relayed.cutter.arm("before")

    r = relayed.api.token(relayed.delegator, "u-1", scope="chat")

    assert relayed.cutter.cuts == 1
    assert r.status_code == 503, r.text
    assert r.json() == {
        "error": "audit_unavailable",
        "error_description": "the audit log cannot be written; nothing was done",
    }
    assert relayed.issued() == before
    assert relayed.verified()["head_seq"] == head
    again = relayed.api.token(relayed.delegator, "u-1", scope="chat")  # back by itself
    assert again.status_code == 200, again.text


def test_when_the_log_cannot_say_the_refusal_does_not_claim_nothing_was_done(
    relayed: Relayed,
) -> None:
    before = relayed.issued()
    relayed.cutter.arm("after")
    original = relayed.cutter._take

    def cut_then_refuse(cuts_at: str, marker: bytes, data: bytes) -> bool:
        cut = original(cuts_at, marker, data)
        if cut:
            relayed.cutter.refusing = True  # the database is unreachable from now on
        return cut

    relayed.cutter._take = cut_then_refuse  # type: ignore[method-assign]
    try:
        r = relayed.api.token(relayed.delegator, "u-1", scope="chat")
    finally:
        relayed.cutter.refusing = False

    assert relayed.cutter.cuts == 1
    assert r.status_code == 503, r.text
    assert "access_token" not in r.text
    assert r.json()["error"] == "audit_unavailable"
    assert "nothing was done" not in r.json()["error_description"]
    # And indeed the database had committed it: the log holds an entry for a token nobody got.
    [jti] = [j for j in relayed.issued() if j not in before]
    assert jti
    assert relayed.verified()["ok"] is True
