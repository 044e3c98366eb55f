"""Real vaults to measure: initialized with ``init_vault``, principals made by the same jobs the
CLI runs, PostgreSQL databases created and dropped for the run, ``dvault serve`` subprocesses."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support import add_principal
from tests.support import postgres_database as test_database
from vault.config import Settings, load_settings
from vault.crypto.b64 import b64url_encode
from vault.domain import DELEGATOR, VERIFIER
from vault.ops import subjects
from vault.ops.runtime import open_vault
from vault.ops.setup import init_vault

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
SUBJECT_ID = "bench-user"
SUBJECT_EMAIL = "bench-user@example.com"


def postgres_reachable() -> bool:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A dedicated database for this run, dropped afterwards (the tests' own helper); yields its
    psycopg URL."""
    with test_database() as url:
        yield url.replace("postgresql+psycopg://", "postgresql://", 1)


def postgres_settings(url: str) -> str:
    """One line on the server measured: version and what makes a commit durable."""
    import psycopg

    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        found = {
            name: conn.execute(f"SHOW {name}").fetchone()
            for name in ("fsync", "synchronous_commit", "wal_sync_method")
        }
    shown = ", ".join(f"{name}={row[0] if row else '?'}" for name, row in found.items())
    return (
        f"PostgreSQL {version[0] if version else '?'} on 127.0.0.1:5432 ({shown}); "
        "a database per configuration, created for this run and dropped after it"
    )


def sqlalchemy_url(psycopg_url: str) -> str:
    return psycopg_url.replace("postgresql://", "postgresql+psycopg://", 1)


@dataclass(frozen=True)
class BenchVault:
    """An initialized vault with a delegator, a verifier and one subject."""

    env: dict[str, str]  # the full environment for `dvault` subprocesses
    settings: Settings
    delegator: str  # credentials
    verifier: str
    delegator_id: str

    @property
    def home(self) -> Path:
        return self.settings.home


def make_vault(home: Path, database_url: str | None = None) -> BenchVault:
    """Initialize a vault in ``home`` (SQLite there, or ``database_url``) and add principals."""
    values = {
        "VAULT_HOME": str(home),
        "VAULT_MASTER_KEY": b64url_encode(secrets.token_bytes(32)),
    }
    if database_url is not None:
        values["VAULT_DATABASE_URL"] = database_url
    settings = load_settings(values)
    init_vault(settings)
    vault = open_vault(settings)
    try:
        policy = {"scopes": ["chat", "models:read"], "max_ttl_seconds": 3600}
        delegator = add_principal(vault, "bench-delegator", DELEGATOR, policy)
        verifier = add_principal(vault, "bench-verifier", VERIFIER)
        subject = subjects.parse_subject(
            SUBJECT_ID, {"email": SUBJECT_EMAIL, "name": "Bench User", "role": "user"}
        )
        vault.appender.run(subjects.upsert_job(subject, actor=None))
    finally:
        vault.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update(values)
    return BenchVault(
        env=env,
        settings=settings,
        delegator=delegator.credential,
        verifier=verifier.credential,
        delegator_id=delegator.principal.id,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A server subprocess on 127.0.0.1 in its own process group; stopped (and reaped) on exit.

    ``command`` defaults to ``dvault serve``; the stack experiments pass a uvicorn command line.
    """

    def __init__(
        self,
        vault: BenchVault,
        *,
        workers: int,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.vault = vault
        base = [sys.executable, "-m", "vault", "serve", "--host", "127.0.0.1"]
        self.command = command or [*base, "--port", str(self.port), "--workers", str(workers)]
        self.env = {**vault.env, **(env or {})}
        self.log_path = vault.home.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._workers = workers if command is None else 1  # dvault serve: a socket per worker

    def __enter__(self) -> Server:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [part.replace("{port}", str(self.port)) for part in self.command],
                env=self.env,
                cwd=self.vault.home.parent,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        try:
            self._wait_healthy(timeout=60)
            self._wait_every_worker(timeout=60)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_healthy(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"server not ready within {timeout} s: {self.log_tail()}")

    def _wait_every_worker(self, timeout: float) -> None:
        """With several workers, one answering is not enough: a worker that has not bound its
        socket yet gets no connection from a load started now, and a 2-worker row would measure
        one worker (seen once in session 10). Wait for a listening socket per worker, then for a
        few fresh connections each to be answered (the kernel spreads them over the sockets; a
        worker still starting answers once it serves)."""
        if self._workers < 2:
            return
        deadline = time.monotonic() + timeout
        while _listeners(self.port) < self._workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every worker listens within {timeout} s")
            time.sleep(0.1)
        for _ in range(8 * self._workers):
            left = max(1.0, deadline - time.monotonic())
            if httpx.get(f"{self.url}/readyz", timeout=left).status_code != 200:
                raise RuntimeError(f"a worker is not ready: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text("utf-8", errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the group is ours, named by our child's id
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                self.proc.wait(timeout=20)
        deadline = time.monotonic() + 10  # workers of a killed parent: bounded wait, then kill
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        self.proc = None


def _listeners(port: int) -> int:
    """Sockets listening on ``port`` (IPv4), from ``/proc/net/tcp``: one per worker."""
    count = 0
    for line in Path("/proc/net/tcp").read_text("ascii").splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
            count += 1
    return count


def _group_alive(pgid: int) -> bool:
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
