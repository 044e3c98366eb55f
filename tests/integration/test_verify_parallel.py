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

from tests.support import add_principal
from vault.audit.chain import link
from vault.audit.entry import Draft
from vault.audit.semantics import SemanticChecker
from vault.audit.verify import Report
from vault.domain import DELEGATOR
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
            use = tokens.UseRequest(issued.access_token, "POST", "/api/chat/completions", None)
            now = int(vault.clock.now().timestamp())
            found = tokens.introspect_job(
                vault.settings,
                vault.scopes,
                verifier,
                use,
                now,
                vault.keys.token_key,
                vault.signatures,
            )
            assert found is not None
            assert vault.appender.submit(found[0], read_only=True).result(30)["active"]
        vault.appender.checkpoint_now()


def in_ranges(vault: Vault, helpers: int, semantics: SemanticChecker | None) -> Report | None:
    snap = audit.snapshot(vault.db)
    return verify_in_ranges(
        vault.db,
        snap.checkpoints,
        snap.head_seq,
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


@pytest.mark.parametrize("helpers", [2, 3, 7])
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
    whole = audit.verify_database(vault.db, semantics=SemanticChecker())
    assert whole.first_error is not None
    assert whole.first_error.seq == seq
    assert audit.verify_database(vault.db, semantics=SemanticChecker(), helpers=3) == whole


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
