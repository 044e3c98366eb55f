"""Whole-log verification and export of a large audit log (SQLite).

The log is built quickly but for real: an initialized vault (its audit key signs a checkpoint
every 1000 entries, as the appender does), entries linked with ``vault.audit.chain.link`` and
stored with ``audit_repo.insert_entries`` in transactions of 50,000. Its story is one the vault
writes: each token is issued (``token.issued``), then used four times (``token.used``, allowed,
in scope), so the semantic checker has real work and finds nothing wrong.

A copy is taken at a tenth of the entries, so that peak RSS at N and at N/10 can be compared:
"memory flat" means the process at N is at most ``FLAT_SLACK_MIB`` bigger than at N/10.

The bound for verification is SHA-256 alone over the stored canonical bytes of every entry
(``entry_bytes`` of each row, built beforehand and not timed): a verifier cannot do less than
hash each entry once. How long ``entry_bytes`` itself takes is shown beside it. The bound
for the export is reading the stored rows with the plain ``sqlite3`` module.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.report import Row
from benchmarks.timing import fmt_mib
from benchmarks.vaults import SUBJECT_ID, BenchVault, make_vault
from vault.audit.appender import checkpoint_draft
from vault.audit.chain import Head, link
from vault.audit.checkpoint import make_checkpoint
from vault.audit.entry import TOKEN_ISSUED, TOKEN_USED, Draft, Entry, canonical_entry
from vault.audit.semantics import SemanticChecker
from vault.clock import format_ts
from vault.ops.audit import verify_database
from vault.ops.runtime import open_vault
from vault.ops.verify_parallel import helpers_for
from vault.storage import audit_repo
from vault.storage.engine import Database
from vault.tokens.claims import new_jti

VERIFY_GOAL = 0.50  # of SHA-256-only hashing of the stored bytes
FLAT_SLACK_MIB = 16
CHUNK = 50_000
USES_PER_TOKEN = 4
SQL_ROWS = "SELECT seq, ts, type, actor, subject, data, prev, hash FROM audit_entries ORDER BY seq"


def _drafts(actor: str, verifier: str, kid: str, exp: int) -> Iterator[Draft]:
    """token.issued, then USES_PER_TOKEN token.used of it, for ever (the caller stops)."""
    while True:
        jti = new_jti()  # as the vault makes them
        yield Draft(
            type=TOKEN_ISSUED,
            actor=actor,
            subject=SUBJECT_ID,
            data={
                "jti": jti,
                "scope": "chat",
                "exp": exp,
                "ttl_seconds": 3600,
                "reason": "BENCH-3 bulk log",
                "client_ip": "127.0.0.1",
                "kid": kid,
            },
        )
        for _ in range(USES_PER_TOKEN):
            yield Draft(
                type=TOKEN_USED,
                actor=actor,
                subject=SUBJECT_ID,
                data={
                    "jti": jti,
                    "outcome": "allowed",
                    "method": "POST",
                    "path": "/api/chat/completions",
                    "client_ip": "127.0.0.1",
                    "verifier": verifier,
                },
            )


def _backup(src_url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(src_url.removeprefix("sqlite:///"))
    target = sqlite3.connect(dest)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def build_log(bench: BenchVault, total: int, small_copy: Path | None = None) -> None:
    """Append entries until the log holds ``total`` (checkpoint markers included); copy the
    database to ``small_copy`` (if given) when it holds ``total // 10``."""
    vault = open_vault(bench.settings)
    try:
        audit_key = vault.keys.audit_signing()
        token_kid = vault.keys.token_signing().kid
    finally:
        vault.close()
    every = bench.settings.checkpoint_every
    db = Database(bench.settings.database_url)
    start = datetime.now(UTC) - timedelta(hours=2)
    drafts = _drafts(bench.delegator_id, "p_bench_verifier", token_kid, int(time.time()) + 86400)
    copied = small_copy is None
    try:
        with db.read() as session:
            head = audit_repo.head(session)  # once: the loop below keeps the head itself
        step = 0
        while head.seq < total:
            entries: list[Entry] = []
            with db.write() as session:
                while len(entries) < CHUNK and head.seq < total:
                    room = every - head.seq % every  # entries until the next checkpoint
                    count = min(room, total - head.seq, CHUNK - len(entries))
                    ts = format_ts(start + timedelta(milliseconds=step))
                    step += 1
                    linked = link(head, [next(drafts) for _ in range(count)], ts)
                    entries.extend(linked)
                    head = Head(linked[-1].seq, linked[-1].hash)
                    if head.seq % every == 0 and head.seq < total:
                        checkpoint = make_checkpoint(head, ts, audit_key)
                        (marker,) = link(head, [checkpoint_draft(checkpoint)], ts)
                        entries.append(marker)
                        head = Head(marker.seq, marker.hash)
                        audit_repo.insert_checkpoint(session, checkpoint)
                    if not copied and head.seq >= total // 10:
                        break
                audit_repo.insert_entries(session, entries)
            if small_copy is not None and not copied and head.seq >= total // 10:
                _backup(bench.settings.database_url, small_copy)
                copied = True
    finally:
        db.dispose()
    with sqlite3.connect(bench.settings.database_url.removeprefix("sqlite:///")) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


@dataclass(frozen=True, slots=True)
class Hashing:
    """SHA-256 of every stored entry: with the composition of its canonical bytes from the
    stored columns (``entry_bytes``: what any verifier must do), and of the bytes alone."""

    entries: int
    compose_and_hash_s: float
    hash_only_s: float

    @property
    def rate(self) -> float:
        return self.entries / self.compose_and_hash_s

    @property
    def hash_only_rate(self) -> float:
        return self.entries / self.hash_only_s


def sha256_only(database: str) -> Hashing:
    """Fetching the rows is not timed (that is the storage's part); hashing is."""
    conn = sqlite3.connect(database)
    total = 0
    composed = hashed = 0.0
    sha256 = hashlib.sha256
    try:
        cursor = conn.execute(SQL_ROWS)
        while rows := cursor.fetchmany(100_000):
            start = time.perf_counter()
            for r in rows:
                sha256(canonical_entry(*r[:7])).hexdigest()
            composed += time.perf_counter() - start
            blobs = [canonical_entry(*r[:7]) for r in rows]
            start = time.perf_counter()
            for blob in blobs:
                sha256(blob).hexdigest()
            hashed += time.perf_counter() - start
            total += len(rows)
    finally:
        conn.close()
    return Hashing(total, composed, hashed)


def raw_read(database: str) -> tuple[int, float]:
    """Seconds to read every stored row with the plain sqlite3 module."""
    conn = sqlite3.connect(database)
    total = 0
    try:
        start = time.perf_counter()
        cursor = conn.execute(SQL_ROWS)
        while rows := cursor.fetchmany(1000):
            total += len(rows)
        return total, time.perf_counter() - start
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class Child:
    seconds: float
    peak_kib: int
    stdout: str


# A child's ru_maxrss starts at the RSS of the process that forked it (Linux keeps the high-water
# mark across exec), so a child of this big benchmark process would report at least our size.
# A small launcher forks the measured command instead, and passes its own child's figure back.
_LAUNCHER = """
import os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def run_child(args: list[str], env: dict[str, str], *, timeout: float) -> Child:
    """Run ``python -m vault ARGS``: wall time (start-up included) and its peak RSS; killed
    (with its launcher) after ``timeout`` seconds."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as result,
    ):
        command = [sys.executable, "-I", "-S", "-c", _LAUNCHER, result.name]
        command += [sys.executable, "-m", "vault", *args]
        start = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=err, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher's own group: it and its child
            proc.wait()
            raise
        seconds = time.perf_counter() - start
        code, peak_kib = (int(part) for part in result.read().split())
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0 or code != 0:
            raise RuntimeError(
                f"dvault {' '.join(args)} exited {code}: {err.read().decode()[-500:]}"
            )
        return Child(seconds, peak_kib, out.read().decode())


def _flat(big_kib: int, small_kib: int) -> bool:
    return big_kib - small_kib <= FLAT_SLACK_MIB * 1024


def _rss(big: Child, small: Child) -> str:
    return f"peak RSS {fmt_mib(big.peak_kib)} (N/10: {fmt_mib(small.peak_kib)})"


def _checked(child: Child, entries: int) -> Child:
    if f"ok: {entries} entries" not in child.stdout:
        raise RuntimeError(f"verification did not pass: {child.stdout[-300:]}")
    return child


def _keys(bench: BenchVault, path: Path) -> None:
    vault = open_vault(bench.settings)
    try:
        path.write_text(json.dumps(vault.keys.published()[1]), "utf-8")
    finally:
        vault.close()


def run(*, tmp: Path, entries: int) -> list[Row]:
    root = tmp / "audit"
    bench = make_vault(root / "home")
    small_home = root / "small"
    build_log(bench, entries, small_home / "vault.db")
    database = bench.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        (total,) = conn.execute("SELECT count(*) FROM audit_entries").fetchone()
    with sqlite3.connect(small_home / "vault.db") as conn:
        (small_total,) = conn.execute("SELECT count(*) FROM audit_entries").fetchone()
    hashing = sha256_only(database)
    hash_rate = hashing.hash_only_rate
    read_rows, read_s = raw_read(database)
    read_rate = read_rows / read_s
    bound = (
        f"SHA-256 of the stored bytes {hash_rate:,.0f} entries/s (for scale: entry_bytes() + "
        f"SHA-256 {hashing.rate:,.0f}/s; sqlite3 fetch alone {read_rate:,.0f} rows/s)"
    )
    goal = f"≥ {VERIFY_GOAL:.0%}; RSS flat (≤ +{FLAT_SLACK_MIB} MiB N/10→N)"
    size = f"{total:,} entries"
    rows: list[Row] = []

    db = Database(bench.settings.database_url, create=False)
    plan: list[tuple[str, bool, int]] = []
    for semantics in (False, True):
        base = "+ semantics" if semantics else "chain + checkpoints"
        plan.append((base, semantics, 0))
        # as dvault audit verify chooses for this log
        helpers = helpers_for(total, None, semantics=semantics)
        if helpers:
            plan.append((f"{base}, {helpers} helper process(es)", semantics, helpers))
    try:
        for label, semantics, count in plan:
            checker = SemanticChecker() if semantics else None
            start = time.perf_counter()
            report = verify_database(db, semantics=checker, helpers=count)
            rate = total / (time.perf_counter() - start)
            if not report.ok or report.entries != total:
                raise RuntimeError(f"in-process verification failed: {report.to_dict()}")
            rows.append(
                Row(
                    path=f"verify_database in process, {label}",
                    note=size,
                    measured=f"{rate:,.0f} entries/s",
                    primitive=bound,
                    ratio=f"{rate / hash_rate:.0%}",
                    goal=f"≥ {VERIFY_GOAL:.0%}",
                    met=rate / hash_rate >= VERIFY_GOAL,
                )
            )
    finally:
        db.dispose()

    big_env = bench.env
    small_env = {**bench.env, "VAULT_HOME": str(small_home)}
    limit = 60 + total / 2000  # generous: 2,000 entries/s would still finish
    export, small_export, jwks = root / "export.jsonl", root / "small.jsonl", root / "keys.json"
    _keys(bench, jwks)

    big = run_child(["audit", "export", "--out", str(export)], big_env, timeout=limit)
    small = run_child(["audit", "export", "--out", str(small_export)], small_env, timeout=limit)
    rate = total / big.seconds
    megabytes = export.stat().st_size / 2**20
    rows.append(
        Row(
            path="dvault audit export --out FILE",
            note=f"{size}, {megabytes:,.0f} MiB",
            measured=f"{rate:,.0f} entries/s; {_rss(big, small)}",
            primitive=f"raw sqlite3 read of the rows {read_rate:,.0f} rows/s",
            ratio=f"{rate / read_rate:.0%}",
            goal=f"streaming: RSS flat (≤ +{FLAT_SLACK_MIB} MiB N/10→N)",
            met=_flat(big.peak_kib, small.peak_kib),
        )
    )

    for source in ("database", "export"):
        for extra in ([], ["--no-semantics"]):
            if source == "database":
                args, small_args = ["audit", "verify", *extra], ["audit", "verify", *extra]
            else:
                args = ["audit", "verify", "--file", str(export), "--jwks", str(jwks), *extra]
                small_args = [*args[:3], str(small_export), *args[4:]]
            big = _checked(run_child(args, big_env, timeout=limit), total)
            small = _checked(run_child(small_args, small_env, timeout=limit), small_total)
            rate = total / big.seconds
            flat = _flat(big.peak_kib, small.peak_kib)
            rows.append(
                Row(
                    path="dvault audit verify"
                    + (" --file EXPORT --jwks KEYS" if source == "export" else " (SQLite)")
                    + (" --no-semantics" if extra else ""),
                    note=f"{size}, wall time with start-up",
                    measured=f"{rate:,.0f} entries/s; {_rss(big, small)}",
                    primitive=bound,
                    ratio=f"{rate / hash_rate:.0%}",
                    goal=goal,
                    met=rate / hash_rate >= VERIFY_GOAL and flat,
                )
            )
    return rows
