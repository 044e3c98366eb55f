"""The raw primitives every other row is compared with, measured in this run.

- Ed25519 sign and verify of a token-sized message (``cryptography``, nothing around it);
- one durable SQLite commit: WAL, ``synchronous=FULL``, one ~300-byte row per transaction;
- SHA-256 of a ~300-byte audit entry;
- one PostgreSQL commit (``synchronous_commit`` as configured), one row per transaction.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks.report import Row
from benchmarks.timing import fmt_rate, fmt_us, per_call

# A delegation token's signing input is ~300 bytes (header + claims, base64url).
MESSAGE = secrets.token_urlsafe(240).encode()[:310]
ENTRY = b'{"actor":"p_' + b"x" * 280 + b'"}'  # ~300 bytes, like a stored audit entry


@dataclass
class Primitives:
    """Measured once per run, on demand; every group reads the same figures."""

    quick: bool
    tmp: Path
    pg_url: str | None = None
    _cache: dict[str, float | None] = field(default_factory=dict)

    def _get(self, name: str) -> float | None:
        if name not in self._cache:
            self._cache[name] = getattr(self, "_measure_" + name)()
        return self._cache[name]

    @property
    def sign_s(self) -> float:
        value = self._get("sign")
        assert value is not None
        return value

    @property
    def verify_s(self) -> float:
        value = self._get("verify")
        assert value is not None
        return value

    @property
    def sha256_s(self) -> float:
        value = self._get("sha256")
        assert value is not None
        return value

    @property
    def sqlite_commit_per_s(self) -> float:
        value = self._get("sqlite_commit")
        assert value is not None
        return value

    @property
    def pg_commit_per_s(self) -> float | None:
        return self._get("pg_commit")

    # --- the measurements ---------------------------------------------------------------

    def _measure_sign(self) -> float:
        key = Ed25519PrivateKey.generate()
        return per_call(lambda: key.sign(MESSAGE), count=4000, budget_s=3)

    def _measure_verify(self) -> float:
        key = Ed25519PrivateKey.generate()
        public, signature = key.public_key(), key.sign(MESSAGE)
        return per_call(lambda: public.verify(signature, MESSAGE), count=2000, budget_s=3)

    def _measure_sha256(self) -> float:
        sha256 = hashlib.sha256
        return per_call(lambda: sha256(ENTRY).hexdigest(), count=200_000, budget_s=2)

    def _measure_sqlite_commit(self) -> float:
        path = self.tmp / "primitive-fsync.db"
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            body = ENTRY.decode()
            count = 500 if self.quick else 3000
            deadline = time.perf_counter() + (2 if self.quick else 6)
            done = 0
            start = time.perf_counter()
            while done < count and time.perf_counter() < deadline:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO t (body) VALUES (?)", (body,))
                conn.execute("COMMIT")
                done += 1
            return done / (time.perf_counter() - start)
        finally:
            conn.close()
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)

    def _measure_pg_commit(self) -> float | None:
        if self.pg_url is None:
            return None
        import psycopg

        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            table = f"bench_commit_{os.getpid()}"
            conn.execute(f"CREATE TEMP TABLE {table} (id bigserial PRIMARY KEY, body text)")
            body = ENTRY.decode()
            count = 300 if self.quick else 2000
            deadline = time.perf_counter() + (2 if self.quick else 6)
            done = 0
            start = time.perf_counter()
            while done < count and time.perf_counter() < deadline:
                conn.execute(f"INSERT INTO {table} (body) VALUES (%s)", (body,))  # noqa: S608
                done += 1
            return done / (time.perf_counter() - start)

    def rows(self) -> list[Row]:
        pg = self.pg_commit_per_s
        return [
            Row("primitive: Ed25519 sign (cryptography, raw)", fmt_us(self.sign_s)),
            Row("primitive: Ed25519 verify (cryptography, raw)", fmt_us(self.verify_s)),
            Row(
                "primitive: SQLite WAL synchronous=FULL, one row per commit",
                fmt_rate(self.sqlite_commit_per_s, "commits"),
            ),
            Row("primitive: SHA-256 of a 300-byte entry", fmt_us(self.sha256_s)),
            Row(
                "primitive: PostgreSQL commit, one row per transaction",
                "skipped: no PostgreSQL" if pg is None else fmt_rate(pg, "commits"),
            ),
        ]
