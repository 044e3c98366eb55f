"""Verification checks the log's meaning, on a real vault over HTTP (SQLite and PostgreSQL).

A real, clean log (issue, use, denied use, revoke, rejected use) verifies with no semantic
errors. Then a hostile DBA — triggers dropped — appends one forged entry at the tail, hash-chained
correctly from the head with ``vault.audit.chain.link``: the hashes verify (``--no-semantics``
says ok), but the log now tells a story the vault never wrote, and ``GET /v1/audit/verify``,
``dvault audit verify`` on the database and on an export all fail at that seq.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.support import (
    Api,
    LiveServer,
    MovableClock,
    cli_env,
    dvault,
    make_settings,
    verify_cli,
    verify_report,
)
from vault.audit.chain import Head, link
from vault.audit.entry import Draft, Entry
from vault.clock import format_ts
from vault.config import Settings
from vault.ops.setup import init_vault

ROOT = Path(__file__).resolve().parents[2]
PINNED = {"ok", "entries", "head_seq", "head_hash", "checkpoints_ok", "first_error"}
COLUMNS = ("seq", "ts", "type", "actor", "subject", "data", "prev", "hash")
CHAT = {"method": "POST", "path": "/api/chat/completions"}
# The trigger names of migrations/versions/0001_initial_schema.py.
TRIGGERS = {
    "sqlite": {
        ("audit_entries", "audit_entries_no_update"),
        ("audit_entries", "audit_entries_no_delete"),
        ("audit_checkpoints", "audit_checkpoints_no_update"),
        ("audit_checkpoints", "audit_checkpoints_no_delete"),
    },
    "postgresql": {
        ("audit_entries", "audit_entries_no_change"),
        ("audit_entries", "audit_entries_no_truncate"),
        ("audit_checkpoints", "audit_checkpoints_no_change"),
        ("audit_checkpoints", "audit_checkpoints_no_truncate"),
    },
}


class Dba:
    """Raw SQL on the vault's database, from outside the vault."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.dialect = self.engine.dialect.name

    def triggers(self) -> set[tuple[str, str]]:
        if self.dialect == "sqlite":
            sql = "SELECT tbl_name, name FROM sqlite_master WHERE type = 'trigger'"
        else:
            sql = (
                "SELECT c.relname, t.tgname FROM pg_trigger t "
                "JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal"
            )
        with self.engine.connect() as conn:
            return {(row[0], row[1]) for row in conn.execute(text(sql))}

    def drop_triggers(self) -> None:
        assert self.triggers() >= TRIGGERS[self.dialect]
        with self.engine.begin() as conn:
            for table, name in TRIGGERS[self.dialect]:
                on = "" if self.dialect == "sqlite" else f" ON {table}"
                conn.execute(text(f"DROP TRIGGER {name}{on}"))
        assert not self.triggers() & TRIGGERS[self.dialect]

    def head(self) -> Head:
        with self.engine.connect() as conn:
            row = conn.execute(
                text("SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1")
            ).one()
        return Head(row[0], row[1])

    def append(self, entry: Entry) -> None:
        row = {name: getattr(entry, name) for name in COLUMNS if name != "data"}
        row["data"] = entry.data_json
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    f"INSERT INTO audit_entries ({', '.join(COLUMNS)}) "
                    f"VALUES ({', '.join(':' + c for c in COLUMNS)})"
                ),
                row,
            )

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def dba(settings: Settings) -> Iterator[Dba]:
    hostile = Dba(settings.database_url)
    try:
        yield hostile
    finally:
        hostile.close()


@dataclass
class Story:
    """A real log: one token issued, used in and out of scope, revoked, then refused."""

    delegator_id: str
    delegator: str
    jti: str
    head_seq: int


def live_story(api: Api) -> Story:
    api.subject("u-1", "alice@example.com")
    delegator_id, delegator = api.principal("bot", "delegator", policy={"scopes": None})
    _, verifier = api.principal("owui", "verifier")
    r = api.token(delegator, "u-1", scope="chat models:read", ttl_seconds=600)
    assert r.status_code == 200, r.text
    token, jti = r.json()["access_token"], r.json()["jti"]

    def introspect(method: str, path: str) -> dict[str, Any]:
        body = {"token": token, "method": method, "path": path, "client_ip": "10.0.0.7"}
        r = api.call("POST", "/v1/introspect", verifier, json=body)
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    assert introspect(**CHAT)["outcome"] == "allowed"
    assert introspect("GET", "/api/models")["outcome"] == "allowed"
    assert introspect("DELETE", "/api/v1/chats/c-1")["outcome"] == "denied_scope"
    r = api.call("POST", "/v1/revoke", api.owner, json={"jti": jti})
    assert r.json() == {"revoked": 1}
    assert introspect(**CHAT) == {"active": False}
    r = api.call("POST", "/v1/audit/checkpoint", api.owner)
    assert r.status_code == 201, r.text

    types = [e["type"] for e in api.entries() if e["type"].startswith("token.")]
    assert types == [
        "token.issued",
        "token.used",
        "token.used",
        "token.used",
        "token.revoked",
        "token.rejected",
    ]
    return Story(delegator_id, delegator, jti, api.entries()[-1]["seq"])


def export_to(api: Api, folder: Path) -> tuple[Path, Path]:
    r = api.call("GET", "/v1/audit/export", api.owner)
    assert r.status_code == 200, r.text
    export = folder / "export.jsonl"
    export.write_bytes(r.content)
    r = api.call("GET", "/.well-known/audit-keys.json")
    assert r.status_code == 200, r.text
    jwks = folder / "audit-keys.json"
    jwks.write_bytes(r.content)
    return export, jwks


def forged_use(
    head: Head, jti: str, actor: str, method: str = "POST", path: str = "/api/chat/completions"
) -> Entry:
    """An allowed token.used entry the vault never wrote, correctly linked to ``head``."""
    draft = Draft(
        type="token.used",
        actor=actor,
        subject="u-1",
        data={
            "jti": jti,
            "outcome": "allowed",
            "method": method,
            "path": path,
            "client_ip": "10.0.0.7",
            "verifier": "p_forged",
        },
    )
    (entry,) = link(head, [draft], format_ts(datetime.now(UTC)))
    return entry


def assert_clean(report: dict[str, Any], head_seq: int) -> None:
    assert set(report) == PINNED, report  # a sound log keeps the pinned shape
    assert report["ok"] is True, report
    assert report["checkpoints_ok"] is True
    assert report["first_error"] is None
    assert report["head_seq"] == head_seq


def test_a_clean_log_has_no_semantic_errors(api: Api, settings: Settings, tmp_path: Path) -> None:
    story = live_story(api)
    report = verify_report(api)
    assert_clean(report, story.head_seq)

    done = verify_cli(settings)  # no master key, no saved keys: one note, nothing else
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == report
    (note,) = done.stderr.splitlines()
    assert note.startswith("dvault: note: checkpoints are checked with the audit keys stored")

    export, jwks = export_to(api, tmp_path)
    for extra in (("--jwks", str(jwks)), ("--file", str(export), "--jwks", str(jwks))):
        done = verify_cli(settings, *extra)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == report
        assert done.stderr == ""


def test_a_forged_use_at_the_tail_fails_on_meaning(
    api: Api, settings: Settings, dba: Dba, tmp_path: Path
) -> None:
    story = live_story(api)
    assert_clean(verify_report(api), story.head_seq)

    dba.drop_triggers()
    head = dba.head()
    assert head.seq == story.head_seq
    forged = forged_use(head, "never-issued-" + "x" * 22, story.delegator_id)
    dba.append(forged)
    seq = forged.seq
    assert seq == story.head_seq + 1

    # The hashes hold: a hash-only verification accepts the forged tail.
    hashes_only = verify_cli(settings, "--no-semantics")
    assert hashes_only.returncode == 0, hashes_only.stderr
    hashed = json.loads(hashes_only.stdout)
    assert hashed["ok"] is True
    assert (hashed["head_seq"], hashed["head_hash"]) == (seq, forged.hash)

    # The meaning does not: the API fails at the forged seq...
    report = verify_report(api)
    assert report["ok"] is False, report
    assert report["checkpoints_ok"] is True
    assert (report["entries"], report["head_seq"], report["head_hash"]) == (seq, seq, forged.hash)
    assert report["first_error"]["seq"] == seq
    assert "unknown_token" in report["first_error"]["reason"]
    assert report["semantic_errors"] == [
        {
            "seq": seq,
            "rule": "unknown_token",
            "reason": f"token.used for jti {forged.data['jti']} that no token.issued issued",
        }
    ]
    assert report["semantic_errors_total"] == 1

    # ...and so does dvault, on the database and on an export: one line per violation, exit 1.
    export, jwks = export_to(api, tmp_path)
    for extra in ((), ("--file", str(export), "--jwks", str(jwks))):
        done = verify_cli(settings, *extra)
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert json.loads(done.stdout) == report
        lines = [line for line in done.stderr.splitlines() if "dvault: note:" not in line]
        assert lines[0].startswith(f"dvault: semantic violation at seq {seq} (unknown_token): ")
        assert lines[-1].startswith(f"dvault: verification failed at seq {seq}: ")
        assert len(lines) == 2, lines


def test_forged_jtis_are_reported_escaped(api: Api, settings: Settings, dba: Dba) -> None:
    """A forger chooses the jti: a terminal escape is reported escaped by the API and by
    dvault. A lone surrogate (JSON's ``\\ud800``, which no UTF-8 answer can carry) makes a
    ``data`` that is no canonical JSON, so the entry is not the vault's: the chain's walk stops
    there, before its meaning is read, and the report names it."""
    story = live_story(api)
    dba.drop_triggers()
    first = forged_use(dba.head(), "j\x1b[2K", story.delegator_id)
    dba.append(first)
    second = forged_use(Head(first.seq, first.hash), "SURROGATE", story.delegator_id)
    second = dataclasses.replace(
        second, data_json=second.data_json.replace('"SURROGATE"', '"\\ud800"')
    )
    second = dataclasses.replace(second, hash=second.computed_hash())  # a sound chain
    dba.append(second)

    report = verify_report(api)  # a 200: the report, not an error
    assert report["ok"] is False
    assert [v["reason"] for v in report["semantic_errors"]] == [
        "token.used for jti j\\x1b[2K that no token.issued issued",
    ]
    assert report["first_error"]["seq"] == second.seq
    assert "not the canonical JSON of an object" in report["first_error"]["reason"]
    done = verify_cli(settings)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout) == report
    assert "\x1b" not in done.stderr
    assert "jti j\\x1b[2K" in done.stderr


@pytest.mark.parametrize("forge", ["used_after_revocation", "used_outside_scope"])
def test_a_forged_use_of_a_real_token_fails_on_meaning(
    api: Api, settings: Settings, dba: Dba, forge: str
) -> None:
    story = live_story(api)
    if forge == "used_after_revocation":  # the revoked token, allowed for chat (in its scope)
        jti, method, path = story.jti, "POST", "/api/chat/completions"
    else:  # a live "chat" token, allowed to delete a chat
        r = api.token(story.delegator, "u-1", scope="chat", ttl_seconds=600)
        assert r.status_code == 200, r.text
        jti, method, path = r.json()["jti"], "DELETE", "/api/v1/chats/c-1"
    assert verify_report(api)["ok"] is True
    dba.drop_triggers()
    forged = forged_use(dba.head(), jti, story.delegator_id, method, path)
    dba.append(forged)

    report = verify_report(api)
    assert report["ok"] is False, report
    assert report["checkpoints_ok"] is True
    assert report["first_error"]["seq"] == forged.seq
    assert [(v["seq"], v["rule"]) for v in report["semantic_errors"]] == [(forged.seq, forge)]
    done = verify_cli(settings)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert json.loads(done.stdout) == report


# --- the scope table a vault decided with is in its log (scopes.loaded) ------------------------

TICKETS = '[scopes.tickets]\nallow = ["GET /api/tickets/**"]\n'
NARROWED = '[scopes.tickets]\nallow = ["GET /api/tickets/open"]\n'


def test_uses_under_a_scope_file_verify_without_it(
    tmp_path: Path, database_url: str, clock: MovableClock
) -> None:
    """A vault serving with its own scope file records the table at start (once while it stays
    the same, again when it changes). A reviewer without that file (the CLI's built-in table)
    still verifies the log, the uses allowed under the wider table included."""
    scopes = tmp_path / "scopes.toml"
    scopes.write_text(TICKETS)
    settings = make_settings(tmp_path / "home", database_url, VAULT_SCOPES_FILE=str(scopes))
    owner = init_vault(settings).credential

    def served(use: str, rotate: bool = False) -> tuple[str, list[dict[str, Any]]]:
        with LiveServer(settings, clock) as server:
            api = Api(server.url, owner)
            try:
                outcome = _ticket_use(api, use)
                if rotate:  # the next table is signed by another audit key
                    r = api.call("POST", "/v1/keys/rotate", owner, json={"purpose": "audit"})
                    assert r.status_code == 200, r.text
                return outcome, api.entries()
            finally:
                api.close()

    assert served("/api/tickets/7")[0] == "allowed"
    outcome, entries = served("/api/tickets/7", rotate=True)  # the same table: not again
    assert outcome == "allowed"
    recorded = [e for e in entries if e["type"] == "scopes.loaded"]
    assert len(recorded) == 1
    assert recorded[0]["data"]["scopes"] == {"tickets": ["GET /api/tickets/**"]}
    assert recorded[0]["actor"] is None

    scopes.write_text(NARROWED)
    outcome, entries = served("/api/tickets/7")
    assert outcome == "denied_scope"
    recorded = [e for e in entries if e["type"] == "scopes.loaded"]
    assert [r["data"]["scopes"]["tickets"] for r in recorded] == [
        ["GET /api/tickets/**"],
        ["GET /api/tickets/open"],
    ]

    assert recorded[0]["data"]["kid"] != recorded[1]["data"]["kid"]  # signed before and after

    # Every way of verifying believes both tables (the built-in one, where the CLI runs, knows
    # no "tickets"): the API, the CLI on the database without and with the master key, with
    # --jwks, on an export, each in one process and with helpers.
    with LiveServer(settings, clock) as server:
        api = Api(server.url, owner)
        try:
            report = verify_report(api)
            export, jwks = export_to(api, tmp_path)
        finally:
            api.close()
    assert report["ok"] is True, report
    assert "semantic_errors" not in report
    master = {"VAULT_MASTER_KEY": settings.master_key or ""}
    every_way = [(), ("--jwks", str(jwks)), ("--file", str(export), "--jwks", str(jwks))]
    if not database_url.startswith("sqlite"):
        every_way = [()]  # the rest reads the same rows: the CLI on PostgreSQL once is enough
    for extra in every_way:
        for jobs in ("1", "2"):
            done = verify_cli(settings, *extra, "--jobs", jobs)
            assert done.returncode == 0, done.stdout + done.stderr
            assert json.loads(done.stdout) == report
    env = cli_env(settings.home, VAULT_DATABASE_URL=settings.database_url, **master)
    done = dvault(env, "audit", "verify", "--json", "--jobs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == report


def _ticket_use(api: Api, path: str) -> str:
    """Issue a "tickets" token and introspect one GET of ``path``; the outcome recorded."""
    api.subject("u-1", "alice@example.com")
    _, delegator = api.principal("bot", "delegator", policy={"scopes": ["tickets"]})
    _, verifier = api.principal("owui", "verifier")
    r = api.token(delegator, "u-1", scope="tickets")
    assert r.status_code == 200, r.text
    body = {"token": r.json()["access_token"], "method": "GET", "path": path}
    r = api.call("POST", "/v1/introspect", verifier, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["active"] is True
    (use,) = [e for e in api.entries(type="token.used") if e["data"]["jti"] == r.json()["jti"]]
    outcome: str = use["data"]["outcome"]
    return outcome
