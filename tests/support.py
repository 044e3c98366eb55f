"""Test support: real databases, a real HTTP server on 127.0.0.1, a clock tests can move.

Nothing here stands in for a vault component. The clock is the one test double: time is
outside the project, and moving it is how expiry is tested without sleeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn
from sqlalchemy.engine import make_url
from sqlmodel import Session

from vault.api.app import create_app
from vault.audit.appender import JobContext
from vault.config import Settings, load_settings
from vault.crypto.b64 import b64url_encode
from vault.domain import Principal
from vault.ops import principals, tokens
from vault.ops.principals import NewCredential
from vault.ops.runtime import Vault

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


class MovableClock:
    """Real time plus an offset the test controls."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; yields its SQLAlchemy URL."""
    name = "dvault_test_" + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_settings(home: Path, database_url: str, **env: str) -> Settings:
    values = {
        "VAULT_HOME": str(home),
        "VAULT_DATABASE_URL": database_url,
        "VAULT_MASTER_KEY": b64url_encode(secrets.token_bytes(32)),
        **env,
    }
    return load_settings(values)


def kill_connections(database_url: str) -> int:
    """Terminate every connection to the PostgreSQL database of ``database_url`` (but this
    one), as a server restart or an administrator would; how many there were."""
    database = make_url(database_url).database
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        found = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
    assert found is not None
    return int(found[0])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """The vault's ASGI app served by uvicorn on a real 127.0.0.1 socket, in a thread."""

    def __init__(self, settings: Settings, clock: Any = None) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings, clock=clock),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the vault did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class Api:
    """An HTTP client of the live server, with the calls tests make again and again."""

    def __init__(self, url: str, owner: str) -> None:
        self.url = url
        self.owner = owner
        self.http = httpx.Client(base_url=url, timeout=30)

    def call(
        self, method: str, path: str, credential: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = kw.pop("headers", {})
        if credential is not None:
            headers["Authorization"] = f"Bearer {credential}"
        return self.http.request(method, path, headers=headers, **kw)

    def raw(self, method: str, path: str, credential: str | None, content: bytes) -> httpx.Response:
        """``content`` sent as it is, labelled JSON: bodies a JSON encoder would not write."""
        return self.call(
            method, path, credential, content=content, headers={"Content-Type": "application/json"}
        )

    def principal(
        self, name: str, *roles: str, policy: dict[str, Any] | None = None
    ) -> tuple[str, str]:
        body: dict[str, Any] = {"name": name, "roles": list(roles)}
        if policy is not None:
            body["policy"] = policy
        r = self.call("POST", "/v1/principals", self.owner, json=body)
        assert r.status_code == 201, r.text
        return r.json()["id"], r.json()["credential"]

    def subject(self, subject_id: str, email: str, role: str = "user", active: bool = True) -> None:
        r = self.call(
            "PUT",
            f"/v1/subjects/{subject_id}",
            self.owner,
            json={"email": email, "name": subject_id, "role": role, "active": active},
        )
        assert r.status_code in (200, 201), r.text

    def token(self, credential: str, subject: str, **extra: Any) -> httpx.Response:
        body = {"subject": subject, "reason": "test: TICKET-1", **extra}
        return self.call("POST", "/v1/token", credential, json=body)

    def entries(self, **params: Any) -> list[dict[str, Any]]:
        r = self.call("GET", "/v1/audit/entries", self.owner, params={"limit": 1000, **params})
        assert r.status_code == 200, r.text
        entries: list[dict[str, Any]] = r.json()["entries"]
        return entries

    def close(self) -> None:
        self.http.close()


# --- dvault as real processes (tests/integration/test_cli.py, test_one_chain.py) ---------------


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a real ``dvault`` process: no ``VAULT_*`` from outside but ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update({"VAULT_HOME": str(home), "PYTHONUNBUFFERED": "1", **extra})
    return env


def dvault(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m vault ARGS`` to completion (bounded), in the parent of ``VAULT_HOME``."""
    cwd = Path(env["VAULT_HOME"]).parent
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "vault", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def exported(env: dict[str, str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``dvault audit export`` to stdout, split into (entries, checkpoints)."""
    result = dvault(env, "audit", "export")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line]
    return [e for e in lines if "kind" not in e], [
        c for c in lines if c.get("kind") == "checkpoint"
    ]


class ServedVault:
    """``dvault serve`` as a real process in its own session, so its workers stop with it.

    Waits (bounded) for ``/healthz``; on exit sends SIGTERM to the process group, then SIGKILL if
    it has not stopped within 20 s (and kills any worker left behind). stdout and stderr go to
    files beside ``VAULT_HOME``.
    """

    def __init__(self, env: dict[str, str], *args: str, port: int | None = None) -> None:
        self.env = env
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = ["serve", "--port", str(self.port), *args]
        base = Path(env["VAULT_HOME"]).parent
        base.mkdir(parents=True, exist_ok=True)
        self.out_path = base / f"serve-{self.port}.out"
        self.err_path = base / f"serve-{self.port}.err"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServedVault:
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vault", *self.args],
                env=self.env,
                cwd=self.out_path.parent,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        return self

    def wait_healthy(self, timeout: float = 30) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"dvault serve exited {self.proc.returncode}: {self.stderr()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"dvault serve not healthy within {timeout} s: {self.stderr()}")

    def __enter__(self) -> ServedVault:
        self.start()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kill9(self) -> None:
        """SIGKILL the serving process itself (a single-worker vault has no other process)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=20)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)
        # Workers left behind (the parent was killed, or did not wait): bounded wait, then kill.
        deadline = time.monotonic() + 10
        while self.live_group() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.live_group():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode

    def live_group(self) -> list[int]:
        """Processes of this server's process group that are still running (not zombies)."""
        assert self.proc is not None
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == self.proc.pid and fields[0] != "Z":
                found.append(int(name))
        return found

    def stdout(self) -> str:
        return self.out_path.read_text("utf-8", errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text("utf-8", errors="replace")


# --- any ASGI app on a real socket (tests/integration/test_middleware.py) -----------------------


class AsgiServer:
    """An arbitrary ASGI app served by uvicorn on a real 127.0.0.1 socket, in a thread.

    Like ``LiveServer`` but for any app (the verifier middleware in front of a stand-in); the
    lifespan protocol is on, so the app sees ``lifespan.startup`` and ``lifespan.shutdown``.
    """

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> AsgiServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the ASGI server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        if self.thread.is_alive():
            raise RuntimeError("the ASGI server did not stop within 30 s")

    def __exit__(self, *exc: object) -> None:
        self.stop()


def verify_report(api: Api) -> dict[str, Any]:
    """``GET /v1/audit/verify`` as the owner; the report."""
    response = api.call("GET", "/v1/audit/verify", api.owner)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def verify_cli(settings: Any, *extra: str) -> subprocess.CompletedProcess[str]:
    """``python -m vault audit verify --json ...`` on the database, as a reviewer runs it (read
    access and the public audit keys only: no master key in the environment)."""
    env = cli_env(settings.home, VAULT_DATABASE_URL=settings.database_url)
    return dvault(env, "audit", "verify", "--json", *extra, timeout=120)


@contextlib.contextmanager
def next_batch(vault: Vault) -> Iterator[None]:
    """Hold the appender in a batch of its own while the body queues jobs: on leaving, those
    jobs are taken together, as one batch, in one transaction."""
    gate = threading.Event()
    started = threading.Event()

    def blocker(_session: Session, ctx: JobContext) -> None:
        started.set()
        assert gate.wait(30), "the test never let the held batch go"

    held = vault.appender.submit(blocker)
    assert started.wait(30)
    try:
        yield
    finally:
        gate.set()
        held.result(30)


def add_principal(
    vault: Vault, name: str, role: str, policy: dict[str, Any] | None = None
) -> NewCredential:
    """A new principal with one role, created through the appender as the API would."""
    return vault.appender.run(
        principals.create_job(
            name=name,
            roles=[role],
            policy=policy,
            actor=None,
            known_scopes=vault.scopes.names,
            max_ttl=vault.settings.max_ttl,
        )
    )


def introspection_job(
    vault: Vault, verifier: Principal, token: str, method: str, path: str
) -> tuple[Any, Any]:
    """The introspection job of ``token`` for ``verifier`` and what it will read, built as the
    route builds it (its signature checked with the keys the vault holds, at the vault's now)."""
    use = tokens.UseRequest(token=token, method=method, path=path, client_ip=None)
    found = tokens.introspect_job(
        vault.settings,
        vault.scopes,
        verifier,
        use,
        int(vault.clock.now().timestamp()),
        vault.keys.token_key,
        vault.signatures,
    )
    assert found is not None, "the token's signature did not verify"
    return found


def escaped(text: str, times: int) -> str:
    """``text`` with its ``.``, ``_`` and ``-`` percent-escaped, then the escapes escaped again
    ``times - 1`` times (``%2E``, ``%252E``, ...): what a path or a form may carry."""
    if times == 0:
        return text
    once = text.replace("%", "%25").replace(".", "%2E").replace("_", "%5F").replace("-", "%2D")
    for _ in range(times - 1):
        once = once.replace("%", "%25")
    return once


class FixedAnswer:
    """An ASGI app outside the project (an Open WebUI's user list, something at ``--url`` that
    is not a vault) answering every request with ``status`` and the JSON ``body`` as given."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})
