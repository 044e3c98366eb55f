"""``dvault serve --workers 2``: a socket per worker on one port, supervised (real processes).

Which worker holds a connection is read from ``/proc``: the established TCP connections to the
server's port (``/proc/net/tcp``) and the socket descriptors each worker holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support import ServedVault, cli_env, dvault, free_port

ESTABLISHED = "01"
LISTEN = "0A"


def _ok(result: object) -> None:
    assert getattr(result, "returncode", 1) == 0, getattr(result, "stderr", result)


def socket_inodes(port: int, state: str) -> set[str]:
    """Inodes of the TCP sockets in ``state`` whose local port is ``port`` (the server's)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == state and int(fields[1].split(":")[1], 16) == port:
            found.add(fields[9])
    return found


def held_sockets(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if m := re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}")):
                found.add(m[1])
    return found


def connections_by_worker(vault: ServedVault) -> Counter[int]:
    served = socket_inodes(vault.port, ESTABLISHED)
    return Counter({pid: len(held_sockets(pid) & served) for pid in workers_of(vault)})


def workers_of(vault: ServedVault) -> list[int]:
    """The worker processes (spawned children; not multiprocessing's resource tracker)."""
    found = []
    for pid in vault.live_group():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing.spawn" in command:
            found.append(pid)
    return found


def wait_for_workers(vault: ServedVault, count: int) -> None:
    deadline = time.monotonic() + 30
    while vault.stderr().count("Application startup complete") < count:
        assert time.monotonic() < deadline, vault.stderr()
        time.sleep(0.1)


def test_each_worker_listens_on_a_socket_of_its_own(tmp_path: Path) -> None:
    """uvicorn's supervisor shares one listening socket, so whichever worker wakes first accepts
    a burst of connections (seen under load: 16/0, 15/1, 2/14); a socket each, bound with
    SO_REUSEPORT, lets the kernel spread them by a hash of their addresses."""
    env = cli_env(tmp_path / "home")
    _ok(dvault(env, "init"))
    with ServedVault(env, "--workers", "2") as vault:
        wait_for_workers(vault, 2)
        listening = socket_inodes(vault.port, LISTEN)
        by_worker = {pid: held_sockets(pid) & listening for pid in workers_of(vault)}
        assert vault.proc is not None
        parent = held_sockets(vault.proc.pid) & listening
    assert len(by_worker) == 2, by_worker
    assert all(len(own) == 1 for own in by_worker.values()), by_worker
    first, second = by_worker.values()
    assert first != second, "the workers share one listening socket"
    assert parent == set(), "the parent holds a listening socket nobody accepts from"


def test_connections_opened_at_once_reach_both_workers(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home")
    _ok(dvault(env, "init"))
    with ServedVault(env, "--workers", "2") as vault:
        wait_for_workers(vault, 2)
        # Sixteen connections made at once (the kernel completes them before any accept), as a
        # load generator or a client's pool opens them; then a request on each.
        clients = [socket.create_connection(("127.0.0.1", vault.port)) for _ in range(16)]
        try:
            for client in clients:
                client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            for client in clients:
                assert client.recv(65536).startswith(b"HTTP/1.1 200")
            held = connections_by_worker(vault)
        finally:
            for client in clients:
                client.close()
    assert sum(held.values()) == 16, held
    assert len(held) == 2, held
    assert min(held.values()) >= 1, held  # (by the hash: all on one side is 2 in 65,536)


def test_a_worker_that_dies_is_replaced(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home")
    _ok(dvault(env, "init"))
    with ServedVault(env, "--workers", "2") as vault:
        wait_for_workers(vault, 2)
        first = workers_of(vault)
        assert len(first) == 2, first
        os.kill(first[0], signal.SIGKILL)
        wait_for_workers(vault, 3)  # its replacement has started
        now = workers_of(vault)
        assert len(now) == 2, now
        assert first[0] not in now
        for _ in range(20):  # new connections, spread over both sockets: all answered
            with httpx.Client(base_url=vault.url, timeout=10) as client:
                assert client.get("/healthz").status_code == 200
    assert vault.live_group() == []


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_already_in_use_is_one_clear_error(tmp_path: Path, workers: str) -> None:
    env = cli_env(tmp_path / "home")
    _ok(dvault(env, "init"))
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = dvault(env, "serve", "--port", str(port), "--workers", workers)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"dvault: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_a_host_that_does_not_resolve_is_one_clear_error(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home")
    _ok(dvault(env, "init"))
    done = dvault(env, "serve", "--host", "no-such-host.invalid", "--port", str(free_port()))
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("dvault: error: cannot listen on no-such-host.invalid:"), line


def test_a_restart_on_the_same_port_is_not_refused(tmp_path: Path) -> None:
    """Stopping with a keep-alive connection open leaves the server's side of it in TIME_WAIT;
    the port check must not take that for a listener."""
    env = cli_env(tmp_path / "home")
    _ok(dvault(env, "init"))
    port = free_port()
    with ServedVault(env, "--workers", "2", port=port) as vault:
        wait_for_workers(vault, 2)
        idle = socket.create_connection(("127.0.0.1", port))
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
    idle.close()
    with ServedVault(env, "--workers", "2", port=port) as again:
        assert httpx.get(f"{again.url}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize("count", [1, 2])
def test_the_access_log_never_shows_a_secret_put_in_a_path(tmp_path: Path, count: int) -> None:
    """uvicorn logs each request's path and query as they came: a credential or a token a
    caller put there is redacted in the access log of every worker, and the line stays."""
    env = cli_env(tmp_path / "home")
    _ok(dvault(env, "init"))
    credential = "dv_" + "Q" * 43
    jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1LTEifQ.c2lnbmF0dXJlLWJ5dGVz"
    with ServedVault(env, "--workers", str(count)) as vault:
        if count > 1:
            wait_for_workers(vault, count)
        for _ in range(4 * count):  # over several connections: each worker gets some
            with httpx.Client(base_url=vault.url, timeout=10) as client:
                assert client.put(f"/v1/subjects/{credential}", json={}).status_code == 401
                assert client.get("/v1/audit/entries", params={"jti": jwt}).status_code == 401
                assert client.get("/healthz", params={"q": "plain"}).status_code == 200
                escaped = client.get(f"/v1/audit/entries?jti=dv%5F{credential[3:]}")
                assert escaped.status_code == 401  # logged as the server read it: escaped
        deadline = time.monotonic() + 10
        while vault.stdout().count("[redacted]") < 8 * count and time.monotonic() < deadline:
            time.sleep(0.1)
        logged = vault.stdout() + vault.stderr()
    assert credential not in logged
    assert "Q" * 20 not in logged
    assert jwt.split(".")[1] not in logged
    assert logged.count('"PUT /v1/subjects/[redacted] HTTP/1.1" 401') == 4 * count
    assert logged.count('"GET /v1/audit/entries?jti=[redacted] HTTP/1.1" 401') == 8 * count
    assert "/healthz?q=plain" in logged  # the rest of the log is as it was


def test_the_workers_log_lines_carry_their_level_and_logger(tmp_path: Path) -> None:
    """A spawned worker starts with no logging configured: its lines (here the appender's, on a
    database that refuses audit inserts) must read as the single process's do."""
    env = cli_env(tmp_path / "home")
    made = dvault(env, "init", "--json")
    _ok(made)
    owner = json.loads(made.stdout)["credential"]
    with ServedVault(env, "--workers", "2") as vault:
        wait_for_workers(vault, 2)
        with sqlite3.connect(tmp_path / "home" / "vault.db") as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON audit_entries "
                "BEGIN SELECT RAISE(ABORT, 'simulated outage'); END"
            )
        headers = {"Authorization": f"Bearer {owner}"}
        for n in range(6):  # over several connections: each worker gets some
            with httpx.Client(base_url=vault.url, headers=headers, timeout=10) as client:
                refused = client.put(f"/v1/subjects/u-{n}", json={"email": f"u{n}@example.com"})
                assert refused.status_code == 503, refused.text
        deadline = time.monotonic() + 10
        while vault.stderr().count("audit append failed") < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        lines = [line for line in vault.stderr().splitlines() if "audit append failed" in line]
    assert len(lines) == 6, lines
    assert all(line.startswith("ERROR vault.audit: audit append failed") for line in lines), lines
