"""``dvault`` as real processes (SPEC §2, §7, §10): exit codes 0 / 1 / 2, one-line errors on
stderr and never a traceback, credentials shown once, and every change in the audit log."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support import (
    Api,
    AsgiServer,
    FixedAnswer,
    ServedVault,
    cli_env,
    dvault,
    exported,
    free_port,
)
from vault.crypto.b64 import b64url_encode

CREDENTIAL = re.compile(r"dv_[A-Za-z0-9_-]{43}")
VERIFY_KEYS = {"ok", "entries", "head_seq", "head_hash", "checkpoints_ok", "first_error"}


# --- helpers -----------------------------------------------------------------------------------


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The command failed with ``code`` and said why in exactly one line on stderr."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("dvault: "), line
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not in {line!r}"
    return line


def init(env: dict[str, str]) -> str:
    """``dvault init``; returns the owner credential it printed."""
    out = ok(dvault(env, "init")).stdout.strip()
    assert CREDENTIAL.fullmatch(out), out
    return out


def home_of(env: dict[str, str]) -> Path:
    return Path(env["VAULT_HOME"])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def new_master_key() -> str:
    return b64url_encode(secrets.token_bytes(32))


def db_url(env: dict[str, str]) -> str:
    return env.get("VAULT_DATABASE_URL") or f"sqlite:///{home_of(env) / 'vault.db'}"


def jwks_from_db(env: dict[str, str], purpose: str) -> dict[str, Any]:
    """A JWKS built from the stored public keys, as a reviewer with read access would."""
    engine = create_engine(db_url(env))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT public_jwk FROM signing_keys WHERE purpose = :p"), {"p": purpose}
            ).all()
    finally:
        engine.dispose()
    assert rows, f"no {purpose} keys stored"
    return {"keys": [json.loads(row[0]) for row in rows]}


def principals(env: dict[str, str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(
        ok(dvault(env, "principals", "list", "--json")).stdout
    )["principals"]
    return found


def head_seq(env: dict[str, str]) -> int:
    report: dict[str, Any] = json.loads(ok(dvault(env, "audit", "verify", "--json")).stdout)
    seq: int = report["head_seq"]
    return seq


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """A CLI environment on SQLite (the default file in VAULT_HOME) or on PostgreSQL.

    VAULT_CHECKPOINT_EVERY=3 so that CLI changes also make signed checkpoints."""
    extra = {} if database_url.startswith("sqlite") else {"VAULT_DATABASE_URL": database_url}
    return cli_env(tmp_path / "home", VAULT_CHECKPOINT_EVERY="3", **extra)


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path / "home")


# --- init --------------------------------------------------------------------------------------


def test_init_creates_key_file_and_prints_the_credential_once(
    env: dict[str, str], database_url: str
) -> None:
    first = ok(dvault(env, "init"))
    assert first.stdout.count("\n") == 1
    assert CREDENTIAL.fullmatch(first.stdout.strip()), first.stdout
    key_file = home_of(env) / "master.key"
    assert mode(key_file) == 0o600
    assert str(key_file) in first.stderr
    assert "0600" in first.stderr
    if database_url.startswith("sqlite"):
        for name in ("vault.db", "vault.db-wal", "vault.db-shm"):
            if (home_of(env) / name).exists():
                assert mode(home_of(env) / name) == 0o600, name
        assert (home_of(env) / "vault.db").exists()
    key_text = key_file.read_text()

    for args in (["init"], ["init", "--json"]):
        again = dvault(env, *args)
        one_line_error(again, 1, "already initialized")
        assert again.stdout == ""
        assert "dv_" not in again.stderr
    assert key_file.read_text() == key_text
    assert [p["name"] for p in principals(env)] == ["owner"]


def test_init_json(env: dict[str, str]) -> None:
    data = json.loads(ok(dvault(env, "init", "--json")).stdout)
    assert CREDENTIAL.fullmatch(data["credential"])
    assert data["master_key_file"] == str(home_of(env) / "master.key")
    (owner,) = principals(env)
    assert owner["id"] == data["owner_id"]
    assert owner["roles"] == ["owner"]


def test_init_with_master_key_in_the_environment_creates_no_key_file(
    env: dict[str, str],
) -> None:
    with_key = {**env, "VAULT_MASTER_KEY": new_master_key()}
    result = ok(dvault(with_key, "init"))
    assert CREDENTIAL.fullmatch(result.stdout.strip())
    assert not (home_of(env) / "master.key").exists()
    assert "master key file" not in result.stderr
    ok(dvault(with_key, "principals", "create", "bot", "--role", "delegator"))
    # Without the variable there is no key at all: refused, loudly.
    one_line_error(dvault(env, "keys", "rotate"), 1, "master key")


# --- the master key ----------------------------------------------------------------------------


def test_wrong_master_key_in_the_environment_is_refused(sqlite_env: dict[str, str]) -> None:
    env = sqlite_env
    init(env)
    before = head_seq(env)
    wrong = {**env, "VAULT_MASTER_KEY": new_master_key()}
    for args in (
        ["principals", "create", "bot", "--role", "delegator"],
        ["keys", "rotate"],
        ["serve", "--port", str(free_port())],
        # Commands that only read need no master key, but one at hand must be the vault's.
        ["principals", "list"],
        ["audit", "export"],
        ["audit", "tail"],
        ["audit", "verify"],
        ["migrate"],
    ):
        one_line_error(dvault(wrong, *args), 1, "master key")
    assert [p["name"] for p in principals(env)] == ["owner"]
    assert head_seq(env) == before
    # No key at hand at all (a reviewer with read access): reading works.
    (home_of(env) / "master.key").unlink()
    ok(dvault(env, "principals", "list"))
    ok(dvault(env, "audit", "export"))
    not_a_key = {**env, "VAULT_MASTER_KEY": "not-a-key"}  # set, but no key: an error
    one_line_error(dvault(not_a_key, "principals", "list"), 1, "master key")


def test_tampered_key_file_is_refused(sqlite_env: dict[str, str]) -> None:
    init(sqlite_env)
    key_file = home_of(sqlite_env) / "master.key"
    key_file.write_text(new_master_key() + "\n")  # another valid key, still 0600
    assert mode(key_file) == 0o600
    one_line_error(
        dvault(sqlite_env, "principals", "create", "bot", "--role", "delegator"),
        1,
        "master key",
    )
    one_line_error(dvault(sqlite_env, "serve", "--port", str(free_port())), 1, "master key")
    one_line_error(dvault(sqlite_env, "principals", "list"), 1, "master key")  # reading too
    key_file.write_text("!!! not a key !!!\n")
    one_line_error(dvault(sqlite_env, "keys", "rotate"), 1, "master key")
    one_line_error(dvault(sqlite_env, "audit", "export"), 1, "master key")


def test_world_readable_key_file_is_refused(sqlite_env: dict[str, str]) -> None:
    init(sqlite_env)
    key_file = home_of(sqlite_env) / "master.key"
    key_file.chmod(0o644)
    one_line_error(dvault(sqlite_env, "keys", "rotate"), 1, "master key", "chmod 600")
    one_line_error(dvault(sqlite_env, "serve", "--port", str(free_port())), 1, "master key")
    one_line_error(dvault(sqlite_env, "audit", "verify"), 1, "master key", "chmod 600")
    key_file.chmod(0o600)
    ok(dvault(sqlite_env, "keys", "rotate"))


@pytest.mark.parametrize(
    "bad_key",
    ["not a key!", b64url_encode(secrets.token_bytes(16)), b64url_encode(secrets.token_bytes(33))],
    ids=["not-base64url", "16-bytes", "33-bytes"],
)
def test_malformed_master_key_is_refused(sqlite_env: dict[str, str], bad_key: str) -> None:
    bad = {**sqlite_env, "VAULT_MASTER_KEY": bad_key}
    one_line_error(dvault(bad, "init"), 1, "master key")
    assert not (home_of(sqlite_env) / "master.key").exists()
    init(sqlite_env)
    one_line_error(dvault(bad, "principals", "create", "bot", "--role", "delegator"), 1)


# --- admin commands ----------------------------------------------------------------------------


def test_migrate_is_idempotent(env: dict[str, str]) -> None:
    first = ok(dvault(env, "migrate"))
    second = ok(dvault(env, "migrate"))
    assert "revision" in first.stderr
    assert first.stderr == second.stderr
    init(env)
    ok(dvault(env, "migrate"))
    ok(dvault(env, "audit", "verify"))


def test_admin_commands_work_and_are_audited_with_a_null_actor(env: dict[str, str]) -> None:
    owner = init(env)
    policy = {"scopes": ["chat"], "max_ttl_seconds": 600}
    created = json.loads(
        ok(
            dvault(
                env,
                "principals",
                "create",
                "bot",
                "--role",
                "delegator",
                "--role",
                "auditor",
                "--policy",
                json.dumps(policy),
                "--json",
            )
        ).stdout
    )
    assert CREDENTIAL.fullmatch(created["credential"])
    assert created["roles"] == ["delegator", "auditor"]
    assert created["policy"]["scopes"] == ["chat"]
    assert created["policy"]["max_ttl_seconds"] == 600

    plain = ok(dvault(env, "principals", "create", "owui", "--role", "verifier"))
    verifier_credential = plain.stdout.strip()
    assert CREDENTIAL.fullmatch(verifier_credential), plain.stdout

    listed = {p["name"]: p for p in principals(env)}
    assert set(listed) == {"owner", "bot", "owui"}
    assert listed["bot"]["id"] == created["id"]
    assert listed["owui"]["roles"] == ["verifier"]
    text_list = ok(dvault(env, "principals", "list")).stdout
    assert "delegator,auditor" in text_list
    assert "dv_" not in text_list

    put = ["subjects", "put", "u-1", "--email", "u1@example.com", "--role"]
    subject = json.loads(ok(dvault(env, *put, "user")).stdout)
    assert (subject["id"], subject["email"], subject["role"]) == ("u-1", "u1@example.com", "user")
    assert subject["outcome"] == "created"
    again = json.loads(ok(dvault(env, *put, "admin")).stdout)
    assert (again["role"], again["outcome"]) == ("admin", "updated")
    same = json.loads(ok(dvault(env, *put, "admin")).stdout)
    assert same["outcome"] == "unchanged"  # and no entry

    token_rotation = json.loads(ok(dvault(env, "keys", "rotate")).stdout)
    assert token_rotation["purpose"] == "token"
    assert token_rotation["kid"] != token_rotation["previous_kid"]
    audit_rotation = json.loads(ok(dvault(env, "keys", "rotate", "--purpose", "audit")).stdout)
    assert audit_rotation["purpose"] == "audit"

    entries, checkpoints = exported(env)
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert all(e["actor"] is None for e in entries), [e for e in entries if e["actor"]]
    kinds = [e["type"] for e in entries]
    for kind in (
        "principal.created",
        "credential.created",
        "subject.upserted",
        "key.created",
        "key.rotated",
    ):
        assert kind in kinds, kind
    assert kinds.count("principal.created") == 3  # owner, bot, owui
    assert kinds.count("subject.upserted") == 2
    assert kinds.count("key.rotated") == 2
    assert {e["subject"] for e in entries if e["type"] == "subject.upserted"} == {"u-1"}
    assert checkpoints, "VAULT_CHECKPOINT_EVERY=3 should have made checkpoints"
    dump = json.dumps(entries)
    for secret in (owner, created["credential"], verifier_credential):
        assert secret not in dump, "a credential reached the audit log"


def test_read_commands_on_an_uninitialized_vault_suggest_init(env: dict[str, str]) -> None:
    """SPEC §10: "errors go to stderr as one clear line". Today these answer with the raw
    driver error (``database error: OperationalError: ... no such table: audit_checkpoints``),
    which does not tell an operator that the vault was never initialized."""
    for args in (
        ["audit", "verify"],
        ["audit", "export"],
        ["audit", "tail"],
        ["principals", "list"],
    ):
        result = dvault(env, *args)
        line = one_line_error(result, 1)
        assert "init" in line, f"dvault {' '.join(args)} on a new vault: {line!r} (bug: say init)"


def test_a_database_that_cannot_be_read_is_named_not_taken_for_a_new_one(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    """Only a database without the vault's tables is "not initialized": one that is not a
    database, is not there or takes another driver says so, in one line."""
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    garbage.chmod(0o600)  # else a warning names it as open to every local user
    absent = f"postgresql+psycopg://postgres@127.0.0.1:5432/dvault_absent_{secrets.token_hex(4)}"
    for url, needle in (
        (f"sqlite:///{garbage}", "not a database"),
        (absent, "does not exist"),
        ("postgresql+psycopg2://postgres@127.0.0.1:5432/test", "unsupported PostgreSQL driver"),
        ("postgresql+asyncpg://postgres@127.0.0.1:5432/test", "postgresql+psycopg://"),
    ):
        for args in (["audit", "verify"], ["principals", "list"]):
            line = one_line_error(dvault({**sqlite_env, "VAULT_DATABASE_URL": url}, *args), 1)
            assert needle.lower() in line.lower(), (url, line)
            assert "init" not in line, line


def test_a_bad_database_url_never_shows_its_password(sqlite_env: dict[str, str]) -> None:
    """A database URL that does not parse (a ``:`` missing), and one whose password holds an
    unescaped ``@`` (the parser then takes part of it for the host, which the driver quotes):
    one line, the password nowhere in it."""
    for url, password in (
        ("postgresql+psycopg//u:TopSecretPw@127.0.0.1/x", "TopSecretPw"),
        (f"postgresql+psycopg://u:Top@Secret9@127.0.0.1:{free_port()}/x", "Secret9"),
    ):
        for args in (["migrate"], ["--database-url", url, "audit", "verify"]):
            env = {**sqlite_env, "VAULT_DATABASE_URL": url}
            line = one_line_error(dvault(env, *args), 1)
            assert password not in line, line
            assert "127.0.0.1" in line, line  # still says where


def test_what_is_not_a_url_is_one_line_and_never_shows_a_password(
    sqlite_env: dict[str, str],
) -> None:
    issue = ["token", "issue", "--subject", "u1", "--reason", "x", "--url"]
    sync = ["subjects", "sync", "--openwebui-url"]
    client = {**sqlite_env, "VAULT_CREDENTIAL": "dv_x"}
    admin = {**sqlite_env, "OPENWEBUI_ADMIN_TOKEN": "x"}
    # httpx reads a password holding "?" or "/" as a port, and says so, quoting it
    for url in ("http://[::1", "http://svc:Tr0ub4dor&3?x@vault.internal:8787"):
        assert "Tr0ub4dor" not in one_line_error(dvault(client, *issue, url), 2, "not a URL")
    for url in ("http://[::1", "http://admin:hunter2/more@owui:8080"):
        assert "hunter2" not in one_line_error(dvault(admin, *sync, url), 2, "not a URL")
    # reachable URLs are named in errors too, without their password
    nowhere = f"http://svc:S3cretPw@127.0.0.1:{free_port()}"
    assert "S3cretPw" not in one_line_error(dvault(client, *issue, nowhere), 1, "cannot reach")
    assert "S3cretPw" not in one_line_error(dvault(admin, *sync, nowhere), 1, "cannot reach")
    not_ascii = {**sqlite_env, "OPENWEBUI_ADMIN_TOKEN": "é"}
    one_line_error(dvault(not_ascii, *sync, "http://127.0.0.1:9"), 2, "OPENWEBUI_ADMIN_TOKEN")


def test_bad_policy_is_refused(sqlite_env: dict[str, str]) -> None:
    env = sqlite_env
    init(env)
    before = head_seq(env)
    base = ["principals", "create", "bot", "--role", "delegator", "--policy"]
    one_line_error(dvault(env, *base, "{not json"), 2, "--policy")
    one_line_error(dvault(env, *base, "[]"), 2, "--policy must be a JSON object")
    twice = '{"max_ttl_seconds": 5, "max_ttl_seconds": 6}'  # the API refuses it too
    one_line_error(dvault(env, *base, twice), 2, "more than once")
    one_line_error(dvault(env, *base, '{"scopes": ["no-such-scope"]}'), 1)
    assert head_seq(env) == before
    assert [p["name"] for p in principals(env)] == ["owner"]


def test_init_of_a_new_database_sets_another_vaults_checkpoint_log_aside(
    env: dict[str, str], tmp_path: Path
) -> None:
    init(env)
    for n in range(4):  # VAULT_CHECKPOINT_EVERY=3: checkpoints, also in the file
        ok(dvault(env, "subjects", "put", f"u{n}", "--email", f"u{n}@example.com"))
    log = home_of(env) / "checkpoints.jsonl"
    old_lines = log.read_text("utf-8")
    assert old_lines.count("\n") >= 1

    # A new database under the same VAULT_HOME (a move, say, from SQLite to PostgreSQL).
    moved = {**env, "VAULT_DATABASE_URL": f"sqlite:///{tmp_path / 'other' / 'vault.db'}"}
    done = dvault(moved, "init")
    ok(done)
    assert "another vault's checkpoints" in done.stderr
    [aside] = home_of(env).glob("checkpoints.jsonl.*.previous")
    assert aside.read_text("utf-8") == old_lines  # renamed, nothing lost
    # Only the new vault's own checkpoint (init's entries passed VAULT_CHECKPOINT_EVERY=3).
    [line] = log.read_text("utf-8").splitlines()
    assert line not in old_lines
    assert json.loads(line)["seq"] == 4
    ok(dvault(moved, "subjects", "put", "v1", "--email", "v1@example.com"))
    ok(dvault(moved, "audit", "verify"))


def test_an_unreadable_checkpoint_log_is_left_out_of_verification_with_a_warning(
    env: dict[str, str], tmp_path: Path
) -> None:
    init(env)
    ok(dvault(env, "subjects", "put", "u1", "--email", "u1@example.com"))
    unreadable = tmp_path / "a-directory"
    unreadable.mkdir()
    done = ok(dvault({**env, "VAULT_CHECKPOINT_LOG": str(unreadable)}, "audit", "verify"))
    assert "checkpoint log" in done.stderr


NOT_UTF8 = "\udcff\udcfe"  # the bytes 0xff 0xfe as Python holds them in argv and the environment


@pytest.mark.parametrize(
    "args",
    [
        ["subjects", "put", NOT_UTF8, "--email", "u@example.com"],
        ["subjects", "put", "u1", "--email", f"{NOT_UTF8}@example.com"],
        ["principals", "create", NOT_UTF8, "--role", "auditor"],
        ["token", "issue", "--subject", NOT_UTF8, "--reason", "x"],
        ["token", "issue", "--subject", "u1", "--reason", NOT_UTF8],
    ],
)
def test_an_argument_that_is_not_utf8_is_a_usage_error(
    sqlite_env: dict[str, str], args: list[str]
) -> None:
    env = {**sqlite_env, "VAULT_CREDENTIAL": "dv_" + "a" * 43}
    init(env)
    before = head_seq(env)
    one_line_error(dvault(env, *args), 2, "not valid UTF-8")
    assert head_seq(env) == before


def test_a_file_path_may_be_any_bytes(sqlite_env: dict[str, str], tmp_path: Path) -> None:
    init(sqlite_env)
    out = tmp_path / f"export-{NOT_UTF8}.jsonl"
    ok(dvault(sqlite_env, "audit", "export", "--out", str(out)))
    assert out.read_text("utf-8").count("\n") >= 1


def test_a_credential_that_is_not_utf8_or_not_ascii_is_refused_before_sending(
    sqlite_env: dict[str, str],
) -> None:
    args = ["token", "issue", "--subject", "u1", "--reason", "x", "--url", "http://127.0.0.1:9"]
    for credential, needle in (
        (f"dv_{NOT_UTF8}", "VAULT_CREDENTIAL"),
        ("dv_é", "not a credential"),
    ):
        one_line_error(dvault({**sqlite_env, "VAULT_CREDENTIAL": credential}, *args), 2, needle)


# --- audit -------------------------------------------------------------------------------------


def test_audit_verify_export_and_tail(env: dict[str, str], tmp_path: Path) -> None:
    init(env)
    ok(dvault(env, "principals", "create", "bot", "--role", "delegator"))
    ok(dvault(env, "subjects", "put", "u-1", "--email", "u1@example.com"))
    ok(dvault(env, "keys", "rotate", "--purpose", "audit"))
    entries, checkpoints = exported(env)
    assert len(checkpoints) >= 2  # signed by the old and by the new audit key

    plain = ok(dvault(env, "audit", "verify"))
    assert plain.stdout.startswith("ok:"), plain.stdout
    report = json.loads(ok(dvault(env, "audit", "verify", "--json")).stdout)
    assert set(report) == VERIFY_KEYS
    assert report["ok"] is True
    assert report["checkpoints_ok"] is True
    assert report["first_error"] is None
    assert report["entries"] == report["head_seq"] == len(entries)
    assert report["head_hash"] == entries[-1]["hash"]

    tail = ok(dvault(env, "audit", "tail", "-n", "3")).stdout.splitlines()
    assert len(tail) == 3
    assert [json.loads(line) for line in tail] == entries[-3:]

    export = tmp_path / "export.jsonl"
    ok(dvault(env, "audit", "export", "--out", str(export)))
    lines = export.read_text("utf-8").splitlines()
    assert len(lines) == len(entries) + len(checkpoints)
    assert [json.loads(line) for line in lines[: len(entries)]] == entries

    audit_keys = tmp_path / "audit-keys.json"
    audit_keys.write_text(json.dumps(jwks_from_db(env, "audit")))
    offline_json = ok(
        dvault(env, "audit", "verify", "--file", str(export), "--jwks", str(audit_keys), "--json")
    )
    assert json.loads(offline_json.stdout) == report

    # The token keys cannot vouch for checkpoints.
    token_keys = tmp_path / "jwks.json"
    token_keys.write_text(json.dumps(jwks_from_db(env, "token")))
    wrong = dvault(env, "audit", "verify", "--file", str(export), "--jwks", str(token_keys))
    assert wrong.returncode == 1, wrong.stderr
    assert "verification failed" in wrong.stderr

    # A changed entry is caught, at its seq.
    target = next(e for e in entries if e["type"] == "subject.upserted")
    tampered_lines = list(lines)
    changed = dict(target, data={**target["data"], "email": "mallory@example.com"})
    tampered_lines[target["seq"] - 1] = json.dumps(changed, separators=(",", ":"))
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(tampered_lines) + "\n")
    bad = dvault(env, "audit", "verify", "--file", str(tampered), "--jwks", str(audit_keys))
    one_line_error(bad, 1, "verification failed", f"seq {target['seq']}")


def test_a_hand_edited_sqlite_file_gets_one_line_errors_not_a_traceback(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    """SQLite keeps a blob or a number in a text column if it is given one: a file edited by hand
    (its append-only triggers dropped) must make verify fail at that entry, and export refuse,
    each with one line, and leave the file as it found it."""
    init(sqlite_env)
    ok(dvault(sqlite_env, "principals", "create", "bot", "--role", "delegator"))
    database = home_of(sqlite_env) / "vault.db"
    conn = sqlite3.connect(database)
    try:
        conn.execute("DROP TRIGGER audit_entries_no_update")
        conn.execute("UPDATE audit_entries SET actor = x'41' WHERE seq = 3")
        conn.commit()
    finally:
        conn.close()
    before = database.read_bytes()

    verify = dvault(sqlite_env, "audit", "verify")
    one_line_error(verify, 1, "verification failed at seq 3", "wrong type")
    report = json.loads(dvault(sqlite_env, "audit", "verify", "--json").stdout)
    assert report["ok"] is False
    assert report["first_error"]["seq"] == 3
    assert report["entries"] == 2

    export = dvault(sqlite_env, "audit", "export", "--out", str(tmp_path / "export.jsonl"))
    one_line_error(export, 1, "entry seq 3", "wrong type")
    tail = dvault(sqlite_env, "audit", "tail")
    one_line_error(tail, 1, "entry seq 3")
    assert database.read_bytes() == before


def _append_raw_rows(database: Path, first: int, last: int, *, odd: int) -> None:
    """Rows seq ``first..last`` written straight into the table (inserts are allowed; the chain
    is not kept, export does not check it), the one at ``odd`` holding a blob for ``actor``."""
    conn = sqlite3.connect(database)
    try:
        conn.executemany(
            "INSERT INTO audit_entries (seq, ts, type, actor, subject, data, prev, hash)"
            " VALUES (?, '2026-11-28T00:00:00.000000Z', 'subject.upserted', ?, NULL, '{}', ?, ?)",
            [
                (seq, b"A" if seq == odd else None, "0" * 64, "0" * 64)
                for seq in range(first, last + 1)
            ],
        )
        conn.commit()
    finally:
        conn.close()


def test_an_export_cut_short_leaves_no_shorter_file_that_looks_whole(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    """``audit export --out FILE`` writes beside FILE and renames once complete: an export that
    fails part way (here a row it cannot show, far past the first lines written) leaves FILE as
    it was, or absent, and no partial file behind. Its checkpoints come last, so a shorter file
    would verify as a whole log."""
    init(sqlite_env)
    database = home_of(sqlite_env) / "vault.db"
    out = tmp_path / "exports" / "audit.jsonl"
    out.parent.mkdir()
    ok(dvault(sqlite_env, "audit", "export", "--out", str(out)))
    whole = out.read_bytes()
    assert whole.endswith(b"}\n")
    head = len(exported(sqlite_env)[0])
    _append_raw_rows(database, head + 1, 3000, odd=2900)

    for target in (out, tmp_path / "exports" / "new.jsonl"):
        failed = dvault(sqlite_env, "audit", "export", "--out", str(target))
        one_line_error(failed, 1, "entry seq 2900")
    assert out.read_bytes() == whole
    assert sorted(p.name for p in out.parent.iterdir()) == ["audit.jsonl"]


def test_an_export_over_a_file_keeps_its_mode_and_writes_through_a_link(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    """Written beside and renamed into place, the export still replaces the file the operator
    named as writing into it would: a 0600 file stays 0600, and a symlink stays a link, to the
    file that now holds the export."""
    init(sqlite_env)
    kept = tmp_path / "kept.jsonl"
    kept.write_text("old\n", "utf-8")
    kept.chmod(0o600)
    link = tmp_path / "latest.jsonl"
    link.symlink_to(kept)
    for target in (kept, link):
        ok(dvault(sqlite_env, "audit", "export", "--out", str(target)))
        assert mode(kept) == 0o600
        assert link.is_symlink()
        assert kept.read_text("utf-8").startswith('{"actor":')


def _read_stream(http: httpx.Client, path: str) -> tuple[int, bytes, Exception | None]:
    """The answer's status, the bytes of its body that came, and the error that cut it short."""
    received = bytearray()
    with http.stream("GET", path) as answer:
        try:
            for part in answer.iter_bytes():
                received += part
        except httpx.TransportError as exc:
            return answer.status_code, bytes(received), exc
    return answer.status_code, bytes(received), None


def test_the_http_export_of_a_hand_edited_file_fails_openly_not_with_a_traceback(
    sqlite_env: dict[str, str],
) -> None:
    """Over HTTP, an entry of the wrong type near the start is a JSON error answer; one met after
    the answer has started cuts the stream (a broken transfer, never a shorter log that looks
    whole). The server logs one line each time, no traceback."""
    owner = init(sqlite_env)
    database = home_of(sqlite_env) / "vault.db"
    head = len(exported(sqlite_env)[0])
    headers = {"Authorization": f"Bearer {owner}"}
    _append_raw_rows(database, head + 1, 2500, odd=2400)  # far past the first lines sent
    with ServedVault(sqlite_env) as vault:
        with httpx.Client(base_url=vault.url, headers=headers, timeout=30) as http:
            status, received, cut = _read_stream(http, "/v1/audit/export")
            assert status == 200
            assert isinstance(cut, httpx.RemoteProtocolError), "the stream ended as if whole"
            lines = received.decode("utf-8").splitlines()
            assert 0 < len(lines) < 2399, "the stream went on past the entry it cannot show"
            assert all(json.loads(line)["seq"] <= 2399 for line in lines)

            conn = sqlite3.connect(database)  # now one among the first lines
            try:
                conn.execute("DROP TRIGGER audit_entries_no_update")
                conn.execute("UPDATE audit_entries SET ts = x'42' WHERE seq = 2")
                conn.commit()
            finally:
                conn.close()
            refused = http.get("/v1/audit/export")
            assert refused.status_code == 500, refused.text
            assert refused.json()["error"] == "corrupt_entry"
            assert "seq 2" in refused.json()["error_description"]
            report = http.get("/v1/audit/verify")
            assert report.status_code == 200, report.text
            assert report.json()["ok"] is False
            assert report.json()["first_error"]["seq"] == 2
        log = vault.stderr()
    assert log.count("audit export cut short: corrupt_entry") == 1, log
    assert "entry seq 2400" in log, log
    assert "entry seq 2:" in log, log
    assert "Traceback" not in log, log


# --- usage errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["principals", "create", "bot"],
        ["principals", "create", "bot", "--role", "god"],
        ["subjects", "put", "u-1"],
        ["subjects", "put", "u-1", "--email", "u1@example.com", "--role", "root"],
        ["token", "issue"],
        ["serve", "--port", "eighty"],
        ["audit", "verify", "--file", "export.jsonl"],
        ["audit", "tail", "-n", "many"],
        ["audit", "tail", "-n", "-3"],
        ["audit", "verify", "--jobs", "0"],
        ["serve", "--workers", "0"],
        ["serve", "--workers", "100000"],
        ["serve", "--port", "0"],
        ["serve", "--port", "65536"],
        ["audit", "tail", "--interval", "-1"],
        ["serve", "--host", ""],  # an unset "$BIND": not every interface
        ["serve", "--host", "127.0.0.1 "],
        ["openwebui", "serve", "--port", "99999"],
        ["openwebui", "serve", "--port", "0"],
        ["openwebui", "serve", "--workers", "-3"],
        ["openwebui", "serve", "--host", ""],
    ],
    ids=[
        "no-command",
        "unknown-command",
        "missing-role",
        "bad-role-choice",
        "missing-email",
        "bad-subject-role",
        "missing-subject",
        "port-not-int",
        "file-without-jwks",
        "lines-not-int",
        "lines-negative",
        "jobs-zero",
        "workers-zero",
        "workers-too-many",
        "port-zero",
        "port-too-high",
        "interval-negative",
        "host-empty",
        "host-with-space",
        "owui-port-too-high",
        "owui-port-zero",
        "owui-workers-negative",
        "owui-host-empty",
    ],
)
def test_usage_errors_exit_2_with_one_line(sqlite_env: dict[str, str], args: list[str]) -> None:
    result = dvault(sqlite_env, *args)
    one_line_error(result, 2)
    assert result.stdout == ""
    assert not home_of(sqlite_env).exists(), "a usage error must not touch the vault"


def test_console_script(sqlite_env: dict[str, str]) -> None:
    script = str(Path(sys.executable).with_name("dvault"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [script, *args], env=sqlite_env, capture_output=True, text=True, timeout=60, check=False
        )

    version = ok(run("--version"))
    assert version.stdout.startswith("dvault ")
    one_line_error(run("frobnicate"), 2)


# --- dvault token issue (a client of a live vault) ---------------------------------------------


def client_env(tmp_path: Path, url: str, credential: str | None) -> dict[str, str]:
    extra = {"VAULT_URL": url}
    if credential is not None:
        extra["VAULT_CREDENTIAL"] = credential
    return cli_env(tmp_path / "client", **extra)


def test_token_issue(api: Api, tmp_path: Path) -> None:
    api.subject("u-1", "u1@example.com")
    bot_id, credential = api.principal("bot", "delegator")
    env = client_env(tmp_path, api.url, credential)
    result = ok(
        dvault(
            env,
            "token",
            "issue",
            "--subject",
            "u1@example.com",
            "--scope",
            "chat",
            "--ttl",
            "120",
            "--reason",
            "TICKET-7 user asked for help",
        )
    )
    body = json.loads(result.stdout)
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 120
    assert body["scope"] == "chat"
    assert body["access_token"].count(".") == 2
    (entry,) = api.entries(type="token.issued")
    assert entry["data"]["jti"] == body["jti"]
    assert entry["actor"] == bot_id
    assert entry["data"]["reason"] == "TICKET-7 user asked for help"
    assert body["access_token"] not in json.dumps(entry)

    # --url wins over VAULT_URL.
    elsewhere = client_env(tmp_path, f"http://127.0.0.1:{free_port()}", credential)
    flagged = dvault(
        elsewhere, "token", "issue", "--subject", "u-1", "--reason", "r", "--url", api.url
    )
    assert "access_token" in json.loads(ok(flagged).stdout)


def test_token_issue_refusals(api: Api, tmp_path: Path) -> None:
    api.subject("u-1", "u1@example.com")
    _, credential = api.principal("bot", "delegator")
    issue = ["token", "issue", "--reason", "TICKET-8"]

    unknown = dvault(client_env(tmp_path, api.url, credential), *issue, "--subject", "nobody")
    one_line_error(unknown, 1, "unknown_subject", "404")
    assert unknown.stdout == ""
    denied = api.entries(type="token.denied")
    assert [e["data"]["error"] for e in denied] == ["unknown_subject"]

    too_long = dvault(
        client_env(tmp_path, api.url, credential), *issue, "--subject", "u-1", "--ttl", "99999"
    )
    one_line_error(too_long, 1, "400")

    wrong = dvault(client_env(tmp_path, api.url, "dv_" + "A" * 43), *issue, "--subject", "u-1")
    one_line_error(wrong, 1, "401")

    missing = dvault(client_env(tmp_path, api.url, None), *issue, "--subject", "u-1")
    one_line_error(missing, 2, "VAULT_CREDENTIAL")

    nowhere = client_env(tmp_path, f"http://127.0.0.1:{free_port()}", credential)
    one_line_error(dvault(nowhere, *issue, "--subject", "u-1"), 1, "cannot reach")
    assert api.entries(type="token.issued") == []


# --- dvault serve (real processes, SQLite) -----------------------------------------------------


def test_home_and_database_url_may_follow_the_command(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    init(sqlite_env)
    home = sqlite_env["VAULT_HOME"]
    elsewhere = {**sqlite_env, "VAULT_HOME": str(tmp_path / "nowhere")}
    before = ok(dvault(elsewhere, "--home", home, "principals", "list")).stdout
    assert "owner" in before
    assert ok(dvault(elsewhere, "principals", "list", "--home", home)).stdout == before
    last_wins = dvault(elsewhere, "--home", home, "audit", "verify", "--home", str(tmp_path / "x"))
    one_line_error(last_wins, 1, "dvault init")
    url = f"sqlite:///{home}/vault.db"
    report = json.loads(
        ok(dvault(elsewhere, "audit", "verify", "--json", "--database-url", url)).stdout
    )
    assert report["ok"] is True


def test_serve_flags_win_over_the_environment(sqlite_env: dict[str, str]) -> None:
    """Flags win (SPEC §2), even over a variable that would be refused on its own."""
    init(sqlite_env)
    env = {**sqlite_env, "VAULT_PORT": "eighty", "VAULT_WORKERS": "many", "VAULT_HOST": "nowhere"}
    with ServedVault(env, "--host", "127.0.0.1", "--workers", "1") as vault:
        assert httpx.get(f"{vault.url}/healthz", timeout=10).status_code == 200
    refused = dvault(env, "serve")
    one_line_error(refused, 1, "VAULT_PORT must be an integer")


def test_serve(sqlite_env: dict[str, str], tmp_path: Path) -> None:
    init(sqlite_env)
    with ServedVault(sqlite_env) as vault:
        assert httpx.get(f"{vault.url}/healthz", timeout=10).status_code == 200
        ready = httpx.get(f"{vault.url}/readyz", timeout=10)
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        audit_keys = httpx.get(f"{vault.url}/.well-known/audit-keys.json", timeout=10).json()
        token_keys = httpx.get(f"{vault.url}/.well-known/jwks.json", timeout=10).json()
    # A graceful stop (uvicorn re-raises SIGTERM once it has shut down).
    assert vault.stop() in (0, -signal.SIGTERM), vault.stderr()
    assert "Application shutdown complete" in vault.stderr()
    assert {k["kid"] for k in audit_keys["keys"]}.isdisjoint(k["kid"] for k in token_keys["keys"])
    # The published audit keys verify an export offline.
    export, keys = tmp_path / "export.jsonl", tmp_path / "audit-keys.json"
    keys.write_text(json.dumps(audit_keys))
    ok(dvault(sqlite_env, "audit", "export", "--out", str(export)))
    ok(dvault(sqlite_env, "audit", "verify", "--file", str(export), "--jwks", str(keys)))


def test_serve_with_two_workers(sqlite_env: dict[str, str]) -> None:
    init(sqlite_env)
    credential = json.loads(
        ok(
            dvault(sqlite_env, "principals", "create", "bot", "--role", "delegator", "--json")
        ).stdout
    )["credential"]
    ok(dvault(sqlite_env, "subjects", "put", "u-1", "--email", "u1@example.com"))
    with ServedVault(sqlite_env, "--workers", "2") as vault:
        assert httpx.get(f"{vault.url}/readyz", timeout=10).status_code == 200
        headers = {"Authorization": f"Bearer {credential}"}
        with httpx.Client(base_url=vault.url, headers=headers, timeout=30) as http:
            for _ in range(10):
                r = http.post("/v1/token", json={"subject": "u-1", "reason": "TICKET-9"})
                assert r.status_code == 200, r.text
    assert "2 worker(s)" in vault.stderr()
    assert vault.stderr().count("Application startup complete") == 2, vault.stderr()
    assert vault.proc is not None
    assert vault.proc.returncode in (0, -signal.SIGTERM), vault.stderr()
    assert vault.live_group() == [], "workers outlived their parent"
    entries, _ = exported(sqlite_env)
    assert [e["type"] for e in entries].count("token.issued") == 10
    # Both workers started at once, each with the table to record: it is recorded once.
    assert [e["type"] for e in entries].count("scopes.loaded") == 1
    ok(dvault(sqlite_env, "audit", "verify"))


def test_serve_on_an_uninitialized_home_suggests_init(sqlite_env: dict[str, str]) -> None:
    port = str(free_port())
    one_line_error(dvault(sqlite_env, "serve", "--port", port), 1, "dvault init")
    with_key = {**sqlite_env, "VAULT_MASTER_KEY": new_master_key()}
    one_line_error(dvault(with_key, "serve", "--port", port), 1, "not initialized", "--init")


def test_serve_on_a_database_that_refuses_writes_is_one_line(sqlite_env: dict[str, str]) -> None:
    """A serving vault writes first (its scope table): a database that refuses writes, say a
    read-only replica, stops ``serve`` with one line before any worker starts."""
    init(sqlite_env)
    with sqlite3.connect(home_of(sqlite_env) / "vault.db") as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_entries "
            "BEGIN SELECT RAISE(ABORT, 'attempt to write a readonly database'); END"
        )
    before = head_seq(sqlite_env)
    one_line_error(dvault(sqlite_env, "serve", "--port", str(free_port())), 1, "audit")
    assert head_seq(sqlite_env) == before


def test_serve_init_initializes_then_serves(sqlite_env: dict[str, str]) -> None:
    with ServedVault(sqlite_env, "--init") as vault:
        found = CREDENTIAL.findall(vault.stdout())
        assert len(found) == 1, vault.stdout()
        r = httpx.get(
            f"{vault.url}/v1/principals",
            headers={"Authorization": f"Bearer {found[0]}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
    assert mode(home_of(sqlite_env) / "master.key") == 0o600
    # --init on an initialized vault just serves: no second owner, no credential.
    with ServedVault(sqlite_env, "--init") as again:
        assert httpx.get(f"{again.url}/readyz", timeout=10).status_code == 200
    assert "dv_" not in again.stdout()
    assert [p["name"] for p in principals(sqlite_env)] == ["owner"]


def test_a_master_key_put_where_its_file_is_named_is_never_printed(
    sqlite_env: dict[str, str],
) -> None:
    key = b64url_encode(secrets.token_bytes(32))
    for args in (["init"], ["keys", "rotate"], ["audit", "verify"]):
        result = dvault({**sqlite_env, "VAULT_MASTER_KEY_FILE": key}, *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert key not in result.stdout + result.stderr, args
    assert not (Path(sqlite_env["VAULT_HOME"]).parent / key).exists()  # no key file made there


@pytest.mark.parametrize(
    ("status", "body", "needle"),
    [
        (200, b"[1, 2, 3]", "without a token"),
        (200, b'{"token": "x"}', "without a token"),
        (400, b'{"error": "x", "error_description": "a\\nb \\u001b[2J"}', "a\\nb \\x1b[2J"),
        (403, b"[]", "with no error body"),
        (500, b"[" * 50_000 + b"]" * 50_000, "without JSON"),
    ],
    ids=["list", "no-token", "escapes", "no-error-body", "nested"],
)
def test_token_issue_believes_only_a_vaults_answer(
    sqlite_env: dict[str, str], status: int, body: bytes, needle: str
) -> None:
    client = {**sqlite_env, "VAULT_CREDENTIAL": "dv_x"}
    with AsgiServer(FixedAnswer(status, body)) as fake:
        args = ["token", "issue", "--subject", "u1", "--reason", "x", "--url", fake.url]
        line = one_line_error(dvault(client, *args), 1, needle)
    assert "\x1b" not in line


def test_a_database_open_to_every_local_user_is_named_in_a_warning(
    sqlite_env: dict[str, str],
) -> None:
    init(sqlite_env)
    home = home_of(sqlite_env)
    quiet = ok(dvault(sqlite_env, "subjects", "put", "u1", "--email", "u1@example.com"))
    assert "every local user" not in quiet.stderr  # as init made them: nothing to say
    (home / "vault.db").chmod(0o644)
    home.chmod(0o777)
    try:
        warned = ok(dvault(sqlite_env, "subjects", "put", "u2", "--email", "u2@example.com"))
    finally:
        home.chmod(0o700)
    assert f"{home / 'vault.db'} may be read or written by every local user" in warned.stderr
    assert f"{home} may be written by every local user" in warned.stderr


def test_a_command_started_with_its_output_closed_says_so(sqlite_env: dict[str, str]) -> None:
    init(sqlite_env)
    result = subprocess.run(
        [sys.executable, "-m", "vault", "audit", "export"],
        env=sqlite_env,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: os.close(1),
    )
    assert result.returncode == 1, result.stderr
    assert (
        result.stderr.strip()
        == "dvault: error: standard output is closed: nothing could be printed"
    )


def test_a_home_that_is_a_file_is_one_clear_line(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory", encoding="utf-8")
    one_line_error(dvault(cli_env(afile), "init"), 1, "is not a directory (VAULT_HOME?)")
    serve = dvault(cli_env(afile), "serve", "--port", str(free_port()))
    one_line_error(serve, 1, "afile/master.key cannot be read: not a directory")
    assert afile.read_text(encoding="utf-8") == "not a directory"
