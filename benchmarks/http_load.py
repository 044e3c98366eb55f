"""Token issuance and introspection over HTTP, against ``/healthz`` on the same server.

The load comes from ``wrk`` (one thread, keep-alive, N connections), a C load generator: a
Python client would be the bottleneck on two cores. Each configuration (database, workers,
connections) runs ``/healthz``, ``POST /v1/token`` and ``POST /v1/introspect`` on one
``dvault serve`` process tree with the same connections and duration, so the ratio of a path to
``/healthz`` is what the vault's work costs on top of the HTTP stack, measured in the same minute.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
from sqlalchemy import text

from benchmarks.audit_bulk import build_log
from benchmarks.report import Row
from benchmarks.vaults import (
    SUBJECT_ID,
    BenchVault,
    Server,
    make_vault,
    postgres_database,
    sqlalchemy_url,
)
from vault.audit.entry import TOKEN_ISSUED
from vault.storage import audit_repo
from vault.storage.engine import Database

WRK_INSTALL = "apt-get update && apt-get install -y wrk"
GOALS = {"sqlite": 0.50, "postgresql": 0.40}
ERROR_TOLERANCE = 0.001  # more failed requests than this and the row is not a result

DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,'
    .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, math.floor(latency:percentile(50)),
    math.floor(latency:percentile(99)), e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError(f"wrk is not installed; on Debian: {WRK_INSTALL}")
    return found


def lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of ASCII is a valid Lua string literal


def token_script(vault: BenchVault) -> str:
    body = json.dumps(
        {"subject": SUBJECT_ID, "scope": "chat", "ttl_seconds": 300, "reason": "BENCH-1 load"}
    )
    return (
        'wrk.method = "POST"\n'
        f"wrk.body = {lua_string(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = {lua_string("Bearer " + vault.delegator)}\n' + DONE
    )


def introspect_script(vault: BenchVault, tokens: list[str]) -> str:
    bodies = ",\n".join(
        lua_string(
            json.dumps(
                {
                    "token": token,
                    "method": "POST",
                    "path": "/api/chat/completions",
                    "client_ip": "127.0.0.1",
                }
            )
        )
        for token in tokens
    )
    return (
        f"local bodies = {{\n{bodies}\n}}\n"
        "local headers = {}\n"
        'headers["Content-Type"] = "application/json"\n'
        f'headers["Authorization"] = {lua_string("Bearer " + vault.verifier)}\n'
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #bodies + 1\n"
        '  return wrk.format("POST", "/v1/introspect", headers, bodies[i])\n'
        "end\n" + DONE
    )


@dataclass(frozen=True, slots=True)
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def error_share(self) -> float:
        return self.errors / max(1, self.requests + self.errors)

    def text(self, unit: str) -> str:
        return f"{self.rate:,.0f} {unit}/s, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms" + (
            f", {self.errors} errors" if self.errors else ""
        )


def run_wrk(url: str, script: Path, *, connections: int, seconds: float) -> Load:
    """One bounded wrk run (``-d`` seconds, a per-request timeout, and a hard process timeout)."""
    command = [
        wrk_path(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    match = re.search(r"^WRKJSON (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-500:]} {done.stderr}")
    found = json.loads(match.group(1))
    errors = sum(found[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Load(
        requests=found["requests"],
        seconds=found["duration_us"] / 1e6,
        p50_ms=found["p50_us"] / 1000,
        p99_ms=found["p99_us"] / 1000,
        errors=errors,
    )


def issue_tokens(url: str, vault: BenchVault, count: int) -> list[str]:
    headers = {"Authorization": f"Bearer {vault.delegator}"}
    body = {"subject": SUBJECT_ID, "scope": "chat", "ttl_seconds": 3600, "reason": "BENCH-2 pool"}
    found = []
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for _ in range(count):
            response = client.post("/v1/token", json=body)
            response.raise_for_status()
            found.append(response.json()["access_token"])
    return found


def entry_count(vault: BenchVault, *, of_type: str | None = None) -> int:
    """Entries in the log (of one type only, if given: checkpoint markers are entries too)."""
    db = Database(vault.settings.database_url)
    try:
        with db.read() as session:
            if of_type is None:
                return audit_repo.count_entries(session)
            query = text("SELECT count(*) FROM audit_entries WHERE type = :type")
            return int(session.execute(query, {"type": of_type}).scalar_one())
    finally:
        db.dispose()


@dataclass(frozen=True, slots=True)
class Scripts:
    healthz: Path
    token: Path
    introspect: Path


def write_scripts(vault: BenchVault, tokens: list[str], folder: Path) -> Scripts:
    scripts = Scripts(folder / "healthz.lua", folder / "token.lua", folder / "introspect.lua")
    scripts.healthz.write_text(DONE, "utf-8")
    scripts.token.write_text(token_script(vault), "utf-8")
    scripts.introspect.write_text(introspect_script(vault, tokens), "utf-8")
    return scripts


@dataclass(frozen=True, slots=True)
class Config:
    database: str  # "sqlite" | "postgresql"
    workers: int
    connections: int

    def label(self) -> str:
        db = "SQLite FULL" if self.database == "sqlite" else "PostgreSQL"
        return f"{db}, {self.workers} worker(s), {self.connections} conns"


def measure_server(
    server: Server, vault: BenchVault, scripts: Scripts, config: Config, seconds: float
) -> list[Row]:
    """``/healthz``, then the token, then introspection, on one running server."""
    base = server.url
    healthz = run_wrk(
        f"{base}/healthz", scripts.healthz, connections=config.connections, seconds=seconds
    )
    before = entry_count(vault)
    issued_before = entry_count(vault, of_type=TOKEN_ISSUED)
    token = run_wrk(
        f"{base}/v1/token", scripts.token, connections=config.connections, seconds=seconds
    )
    appended = entry_count(vault, of_type=TOKEN_ISSUED) - issued_before
    introspect = run_wrk(
        f"{base}/v1/introspect", scripts.introspect, connections=config.connections, seconds=seconds
    )
    # One client: each request waits for the one before, so the rate is one over the latency of
    # a request; the issue's goals are for 8-32 clients, and this row has none.
    goal = GOALS[config.database] if config.connections > 1 else None
    rows = []
    for name, load, unit in (
        ("POST /v1/token", token, "tokens"),
        ("POST /v1/introspect (records token.used)", introspect, "req"),
    ):
        ratio = load.rate / healthz.rate
        valid = load.error_share <= ERROR_TOLERANCE and healthz.error_share <= ERROR_TOLERANCE
        note = config.label()
        if name.startswith("POST /v1/token"):
            note += f"; log held {before:,} entries at start"
            # every answered token has its entry; at most one per connection was still in flight
            if not token.requests <= appended <= token.requests + config.connections:
                note += f"; token.issued entries {appended} vs {token.requests} tokens answered"
        rows.append(
            Row(
                path=f"{name}",
                note=note,
                measured=load.text(unit),
                primitive="/healthz " + healthz.text("req"),
                ratio=f"{ratio:.0%}",
                goal="—" if goal is None else f"≥ {goal:.0%} of /healthz",
                met=None if goal is None else (ratio >= goal) if valid else False,
            )
        )
    return rows


def warm_up(server: Server, scripts: Scripts) -> None:
    for path, script in (
        ("/healthz", scripts.healthz),
        ("/v1/token", scripts.token),
        ("/v1/introspect", scripts.introspect),
    ):
        run_wrk(server.url + path, script, connections=4, seconds=1)


@contextlib.contextmanager
def fresh_vault(kind: str, folder: Path) -> Iterator[BenchVault]:
    """A new vault (and for PostgreSQL a new database) for one server configuration, so that
    every configuration starts from the same small log."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":
        yield make_vault(folder / "home")
        return
    with postgres_database() as url:
        yield make_vault(folder / "home", sqlalchemy_url(url))


def run(
    *,
    tmp: Path,
    databases: list[str],
    workers: list[int],
    connections: list[int],
    seconds: float,
    pool: int,
    prefilled: int = 0,
) -> list[Row]:
    """Every configuration, each on a fresh vault; then, with ``prefilled``, SQLite with one
    worker again on a vault whose log already holds that many entries."""
    wrk_path()
    rows: list[Row] = []
    plan = [(kind, count, 0) for kind in databases for count in workers]
    if prefilled and "sqlite" in databases:
        plan.append(("sqlite", 1, prefilled))
    for kind, count, fill in plan:
        folder = tmp / f"http-{kind}-{count}w-{fill}"
        with fresh_vault(kind, folder) as vault:
            if fill:
                build_log(vault, fill)
            with Server(vault, workers=count) as server:
                tokens = issue_tokens(server.url, vault, pool)
                scripts = write_scripts(vault, tokens, folder)
                warm_up(server, scripts)
                for conns in connections[-1:] if fill else connections:
                    if conns == 1 and count > 1:
                        continue  # one client keeps one worker busy at most
                    config = Config(kind, count, conns)
                    found = measure_server(server, vault, scripts, config, seconds)
                    if fill:
                        found = [
                            replace(row, note=row.note + f"; log pre-filled with {fill:,} entries")
                            for row in found
                        ]
                    rows.extend(found)
    return rows
