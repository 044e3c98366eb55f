"""``verify_database`` with helper processes (``vault.ops.verify_parallel``), SQLite and
PostgreSQL: a sound log is verified by the helpers and reported exactly as one walk reports it;
a log that fails is left to that one walk. The tamper matrix of ``test_audit_storage.py`` runs
``dvault audit verify --jobs 3`` too; here the parallel path itself is checked to answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support import add_principal, introspection_job
from vault.audit.chain import Head, link
from vault.audit.entry import Draft
from vault.audit.semantics import SemanticChecker
from vault.audit.verify import Report
from vault.domain import DELEGATOR
from vault.errors import AuditUnavailable, CorruptEntry
from vault.ops import audit, subjects, tokens
from vault.ops.runtime import Vault
from vault.ops.verify_parallel import FROM_ENTRIES, helpers_for, verify_in_ranges
from vault.storage import audit_repo

TS = "2026-11-27T17:00:00.123456Z"


def story(vault: Vault, uses: int = 3) -> None:
    """A log with meaning: a subject, a delegator, tokens issued and used, checkpoints."""
    bot = add_principal(vault, "bot", DELEGATOR).principal
    verifier = add_principal(vault, "owui", "verifier").principal
    subject = subjects.parse_subject("u-1", {"email": "u1@example.com"})
    vault.appender.run(subjects.upsert_job(subject, actor=None))
    for n in range(4):
        body = {"subject": "u-1", "scope": "chat", "reason": f"TICKET-{n} parallel"}
        job = tokens.issue_job(vault.settings, vault.scopes, vault.keys, bot, body, None)
        issued = vault.appender.submit(job, read_only=True).result(30)
        for _ in range(uses):
            job, _ = introspection_job(
                vault, verifier, issued.access_token, "POST", "/api/chat/completions"
            )
            assert vault.appender.submit(job, read_only=True).result(30)["active"]
        vault.appender.checkpoint_now()


def in_ranges(
    vault: Vault, helpers: int, semantics: SemanticChecker | None, head: Head | None = None
) -> Report | None:
    snap = audit.snapshot(vault.db)
    return verify_in_ranges(
        vault.db,
        snap.checkpoints,
        head or Head(snap.head_seq, snap.head_hash),
        audit.audit_public_keys(vault.db),
        trusted=[],
        semantics=semantics,
        helpers=helpers,
    )


def drop_triggers(vault: Vault) -> None:
    with vault.db.write_engine.begin() as conn:
        if vault.db.is_sqlite:
            for name in ("no_update", "no_delete"):
                conn.execute(text(f"DROP TRIGGER audit_entries_{name}"))
        else:
            conn.execute(text("DROP TRIGGER audit_entries_no_change ON audit_entries"))


@pytest.mark.parametrize("helpers", [1, 2, 3, 7])
@pytest.mark.parametrize("semantics", [False, True])
def test_a_sound_log_is_verified_by_the_helpers(
    vault: Vault, helpers: int, semantics: bool
) -> None:
    story(vault)
    whole = audit.verify_database(vault.db, semantics=SemanticChecker() if semantics else None)
    assert whole.ok, whole
    found = in_ranges(vault, helpers, SemanticChecker() if semantics else None)
    assert found is not None, "the helpers did not answer"
    assert found == whole
    assert audit.verify_database(vault.db, helpers=helpers) == audit.verify_database(vault.db)


def test_helpers_that_reach_another_head_than_this_process_read_are_not_believed(
    vault: Vault,
) -> None:
    """The helpers read the rows through a connection of their own: if it led them to another
    log (another database, schema or snapshot), the head they reach would differ."""
    story(vault, uses=1)
    snap = audit.snapshot(vault.db)
    assert in_ranges(vault, 2, None) is not None
    assert in_ranges(vault, 2, None, Head(snap.head_seq, "ab" * 32)) is None


def test_a_helper_runs_isolated_from_the_working_directory(
    vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module planted where ``dvault audit verify`` runs must not stand in for the helper's
    own (``python -m`` would put the working directory first on the path)."""
    story(vault, uses=1)
    planted = tmp_path / "planted"
    (planted / "vault" / "audit").mkdir(parents=True)
    (planted / "json.py").write_text("raise SystemExit('planted json imported')\n")
    (planted / "vault" / "__init__.py").write_text("")
    (planted / "vault" / "audit" / "__init__.py").write_text("")
    (planted / "vault" / "audit" / "segments.py").write_text("raise SystemExit('planted')\n")
    monkeypatch.chdir(planted)
    monkeypatch.setenv("PYTHONPATH", str(planted))
    assert in_ranges(vault, 2, None) is not None


def test_a_sound_chain_with_a_wrong_story_is_reported_like_one_walk(vault: Vault) -> None:
    """The chain holds (the helpers say so); the meaning is checked here, once, in order."""
    story(vault, uses=1)
    forged = Draft(
        type="token.used", actor=None, subject=None, data={"jti": "never", "outcome": "allowed"}
    )
    with vault.db.write() as session:
        audit_repo.insert_entries(session, link(audit_repo.head(session), [forged], TS))
    whole = audit.verify_database(vault.db, semantics=SemanticChecker())
    assert not whole.ok
    assert whole.semantic_total == 1
    given = SemanticChecker()
    found = in_ranges(vault, 3, given)
    assert found == whole
    assert (given.total, given.known_tokens) == (0, 0)  # the caller's checker was not used


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_broken_log_is_left_to_the_one_walk(vault: Vault, where: str) -> None:
    story(vault)
    with vault.db.read() as session:
        head = audit_repo.head(session).seq
    seq = {"first": 1, "middle": head // 2, "last": head}[where]
    drop_triggers(vault)
    with vault.db.write_engine.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET data = '{}' WHERE seq = :s"), {"s": seq})
    for semantics in (None, SemanticChecker()):
        assert in_ranges(vault, 3, semantics) is None
        assert in_ranges(vault, 1, semantics) is None
    whole = audit.verify_database(vault.db, semantics=SemanticChecker())
    assert whole.first_error is not None
    assert whole.first_error.seq == seq
    for helpers in (1, 3):
        assert (
            audit.verify_database(vault.db, semantics=SemanticChecker(), helpers=helpers) == whole
        )


def test_a_deleted_entry_at_a_range_boundary_is_left_to_the_one_walk(vault: Vault) -> None:
    story(vault)
    with vault.db.read() as session:
        head = audit_repo.head(session).seq
    boundary = head // 2 + 1  # the first seq of the second of two ranges
    drop_triggers(vault)
    with vault.db.write_engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entries WHERE seq = :s"), {"s": boundary})
    assert in_ranges(vault, 2, None) is None
    whole = audit.verify_database(vault.db)
    assert whole.first_error is not None
    assert whole.first_error.seq == boundary
    assert audit.verify_database(vault.db, helpers=2) == whole


def test_helpers_for_a_log() -> None:
    assert helpers_for(FROM_ENTRIES - 1, None) == 0
    cpus = helpers_for(FROM_ENTRIES, None)
    assert cpus == 0 or cpus >= 2
    assert helpers_for(10, 4) == 4  # asked for: whatever the size
    # with the semantic checks, this process is busy too: one CPU fewer for helpers
    assert helpers_for(FROM_ENTRIES, None, semantics=True) == (cpus - 1 if cpus else 0)
    assert helpers_for(10, 4, semantics=True) == 4
    assert helpers_for(10**7, 1) == 0  # one process: this one


def run_helper(request: bytes) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "vault.ops.verify_helper"],
        input=request,
        capture_output=True,
        timeout=60,
        check=False,
    )
    (line,) = done.stdout.decode().splitlines()
    answer: dict[str, object] = json.loads(line)
    return done.returncode, answer


@pytest.mark.parametrize(
    "request_",
    [
        b"not json",
        b"{}",
        json.dumps(
            {"source": {"dialect": "oracle", "address": "x"}, "lo": 1, "hi": 2, "anchors": []}
        ).encode(),
    ],
    ids=["garbage", "empty", "unknown-dialect"],
)
def test_a_helper_that_cannot_work_says_so_in_one_line(request_: bytes) -> None:
    code, answer = run_helper(request_)
    assert code == 1
    assert set(answer) == {"error"}


def test_a_helper_never_prints_what_its_driver_said(tmp_path: Path) -> None:
    """The address may hold a password: only the exception's class goes out."""
    address = "postgresql://postgres:s3cret-pw@127.0.0.1:1/nowhere"
    request = {"source": {"dialect": "postgresql", "address": address}, "lo": 1, "hi": 5}
    code, answer = run_helper(json.dumps({**request, "anchors": []}).encode())
    assert code == 1
    assert "s3cret" not in json.dumps(answer)
    missing = {"dialect": "sqlite", "address": str(tmp_path / "none.db")}
    code, answer = run_helper(json.dumps({**request, "source": missing, "anchors": []}).encode())
    assert code == 1
    assert set(answer) == {"error"}


def drop_primary_key(vault: Vault) -> None:
    """As a hostile DBA could: the table without its primary key (nor triggers)."""
    with vault.db.write_engine.begin() as conn:
        if vault.db.is_sqlite:
            conn.execute(text("CREATE TABLE loose AS SELECT * FROM audit_entries"))
            conn.execute(text("DROP TABLE audit_entries"))
            conn.execute(text("ALTER TABLE loose RENAME TO audit_entries"))
        else:
            conn.execute(text("DROP TRIGGER audit_entries_no_change ON audit_entries"))
            conn.execute(text("ALTER TABLE audit_entries DROP CONSTRAINT audit_entries_pkey"))


@pytest.mark.parametrize("helpers", [0, 2])
def test_a_seq_stored_twice_on_a_page_boundary_is_caught(vault: Vault, helpers: int) -> None:
    """Reading pages by ``seq > last`` would skip the second row of the last seq of a page:
    every row up to the head must have been read, whatever the paging."""
    drafts = [Draft(type="t.note", actor=None, subject=None, data={"n": n}) for n in range(5200)]
    with vault.db.write() as session:
        audit_repo.insert_entries(session, link(audit_repo.head(session), drafts, TS))
    drop_primary_key(vault)
    with vault.db.write_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_entries (seq, ts, type, actor, subject, data, prev, hash) "
                "SELECT seq, ts, type, actor, subject, :data, prev, hash "
                "FROM audit_entries WHERE seq = 5000"
            ),
            {"data": '{"forged":1}'},
        )
    report = audit.verify_database(vault.db, helpers=helpers)
    assert not report.ok
    assert report.first_error is not None
    assert (report.first_error.seq, report.first_error.reason) == (
        5000,
        "seq 5000 is stored more than once",
    )
    assert audit.verify_database(vault.db, helpers=0 if helpers else 2) == report


def seq_3_becomes(vault: Vault, value: object) -> None:
    """SQLite only (its columns keep any value): entry 3's seq edited by hand."""
    if not vault.db.is_sqlite:
        pytest.skip("PostgreSQL's bigint column holds integers only")
    story(vault, uses=1)
    drop_triggers(vault)
    with vault.db.write_engine.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET seq = :v WHERE seq = 3"), {"v": value})


def test_a_seq_that_is_not_an_integer_is_caught(vault: Vault) -> None:
    seq_3_becomes(vault, 3.5)
    for helpers in (0, 2):
        report = audit.verify_database(vault.db, helpers=helpers)
        assert report.first_error is not None
        assert report.first_error.seq == 3  # the entry missing where the walk expected it


def test_a_text_seq_at_the_head_is_a_corrupt_entry_not_a_crash(vault: Vault) -> None:
    """SQLite sorts text after every number: such a row is the log's head. Verification and
    appending both refuse it by name (the CLI prints one line; the appender fails closed)."""
    seq_3_becomes(vault, "x")
    for helpers in (0, 2):
        with pytest.raises(CorruptEntry, match="wrong type"):
            audit.verify_database(vault.db, helpers=helpers)
    with pytest.raises(AuditUnavailable):
        vault.appender.run(
            subjects.upsert_job(subjects.parse_subject("u-9", {"email": "n@e.x"}), actor=None)
        )


@pytest.mark.parametrize("helpers", [0, 2])
def test_a_row_below_seq_1_is_caught(vault: Vault, helpers: int) -> None:
    """A walk reads seqs 1 to the head; a row stored below 1 would be seen by nobody."""
    story(vault, uses=1)
    with vault.db.write_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_entries (seq, ts, type, actor, subject, data, prev, hash) "
                "SELECT -1, ts, type, actor, subject, data, prev, hash "
                "FROM audit_entries WHERE seq = 1"
            )
        )
    report = audit.verify_database(vault.db, helpers=helpers)
    assert report.first_error is not None
    assert (report.first_error.seq, report.first_error.reason) == (
        -1,
        "a row holds seq -1, below 1",
    )
