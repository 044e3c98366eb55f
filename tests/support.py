"""Test support: real databases, a real HTTP server on 127.0.0.1, a clock tests can move.

Nothing here stands in for a vault component. The clock is the one test double: time is
outside the project, and moving it is how expiry is tested without sleeping.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn

from vault.api.app import create_app
from vault.config import Settings, load_settings
from vault.crypto.b64 import b64url_encode

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

    def call(self, method: str, path: str, credential: str | None = None, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", {})
        if credential is not None:
            headers["Authorization"] = f"Bearer {credential}"
        return self.http.request(method, path, headers=headers, **kw)

    def principal(self, name: str, *roles: str, policy: dict[str, Any] | None = None) -> tuple[str, str]:
        body: dict[str, Any] = {"name": name, "roles": list(roles)}
        if policy is not None:
            body["policy"] = policy
        r = self.call("POST", "/v1/principals", self.owner, json=body)
        assert r.status_code == 201, r.text
        return r.json()["id"], r.json()["credential"]

    def subject(self, subject_id: str, email: str, role: str = "user", active: bool = True) -> None:
        r = self.call(
            "PUT", f"/v1/subjects/{subject_id}", self.owner,
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
