"""The bulk read paths of the stored log (SQLite and PostgreSQL): ``audit_repo.stream_rows``
(the driver's own cursor, a page per read transaction), the export built from it, and
``verify_database`` over it, each compared with the ORM and ``Entry`` way of reading the same
rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select

from vault.audit.chain import Head, link
from vault.audit.entry import Draft, Entry
from vault.audit.semantics import SemanticChecker
from vault.audit.verify import verify_log
from vault.config import Settings
from vault.ops import audit
from vault.ops.runtime import Vault, open_vault
from vault.ops.setup import InitResult
from vault.storage import audit_repo
from vault.storage.tables import AuditEntryRow

TS = "2026-11-27T17:00:00.123456Z"


@pytest.fixture
def vault(settings: Settings, initialized: InitResult) -> Iterator[Vault]:
    opened = open_vault(settings)
    try:
        yield opened
    finally:
        opened.close()


def append(vault: Vault, drafts: list[Draft]) -> None:
    with vault.db.write() as session:
        head = audit_repo.head(session)
        audit_repo.insert_entries(session, link(head, drafts, TS))


def notes(count: int) -> list[Draft]:
    return [
        Draft(
            type="test.note",
            actor=None if n % 3 else "p_ålice",
            subject='s "quoted"\\' if n % 2 else None,
            data={"n": n, "text": "résumé\n✓", "nested": {"b": [1, None], "a": True}},
        )
        for n in range(count)
    ]


def orm_entries(vault: Vault) -> list[Entry]:
    with vault.db.read() as session:
        rows = session.exec(select(AuditEntryRow).order_by(col(AuditEntryRow.seq))).all()
        return [
            Entry(
                seq=r.seq,
                ts=r.ts,
                type=r.type,
                actor=r.actor,
                subject=r.subject,
                data_json=r.data,
                prev=r.prev,
                hash=r.hash,
            )
            for r in rows
        ]


@pytest.mark.parametrize("page", [1, 2, 7, 5000])
def test_stream_rows_is_every_stored_row_in_order(vault: Vault, page: int) -> None:
    append(vault, notes(23))
    stored = orm_entries(vault)
    head = stored[-1].seq
    rows = list(audit_repo.stream_rows(vault.db, upto_seq=head, page=page))
    assert rows == [e.as_row() for e in stored]
    assert all(type(row) is tuple for row in rows)
    middle = list(audit_repo.stream_rows(vault.db, after_seq=3, upto_seq=head - 4, page=page))
    assert middle == [e.as_row() for e in stored if 3 < e.seq <= head - 4]
    assert list(audit_repo.stream_rows(vault.db, after_seq=head, upto_seq=head)) == []
    entries = list(audit_repo.stream_entries(vault.db, upto_seq=head, page=page))
    assert entries == stored


def test_stream_rows_stops_at_the_head_it_was_given(vault: Vault) -> None:
    append(vault, notes(5))
    head = orm_entries(vault)[-1].seq
    stream = audit_repo.stream_rows(vault.db, upto_seq=head, page=2)
    first = next(stream)
    append(vault, notes(4))  # the log grows meanwhile
    rest = list(stream)
    assert [first[0], *(row[0] for row in rest)] == list(range(1, head + 1))


def test_a_read_that_fails_mid_stream_is_a_database_error_not_a_driver_one(vault: Vault) -> None:
    """A page that cannot be read (here the table is gone) fails as every other read does, with
    SQLAlchemy's ``DBAPIError`` (503 over HTTP, one line in the log), not the driver's own."""
    append(vault, notes(5))
    head = orm_entries(vault)[-1].seq
    stream = audit_repo.stream_rows(vault.db, upto_seq=head, page=2)
    assert next(stream)[0] == 1
    with vault.db.write() as session:
        session.execute(text("DROP TABLE audit_entries"))
    with pytest.raises(DBAPIError):
        list(stream)


def test_export_lines_are_the_entries_lines_then_the_checkpoints(vault: Vault) -> None:
    append(vault, notes(2500))  # crosses the 1000-line chunks
    vault.appender.checkpoint_now()
    text = "".join(audit.export_lines(vault.db))
    stored = orm_entries(vault)
    with vault.db.read() as session:
        checkpoints = audit_repo.checkpoints(session)
    expected = [e.to_line() for e in stored]
    lines = text.splitlines()
    assert lines[: len(expected)] == expected
    assert len(lines) == len(expected) + len(checkpoints)
    assert all('"kind":"checkpoint"' in line for line in lines[len(expected) :])
    assert text.endswith("\n")


@pytest.mark.parametrize("semantics", [False, True])
def test_verify_database_reports_what_verify_log_reports(vault: Vault, semantics: bool) -> None:
    append(vault, notes(40))
    with vault.db.write() as session:  # a story that is wrong: a use of a jti never issued
        head = audit_repo.head(session)
        forged = Draft(
            type="token.used",
            actor=None,
            subject=None,
            data={"jti": "never-issued", "outcome": "allowed"},
        )
        audit_repo.insert_entries(session, link(Head(head.seq, head.hash), [forged], TS))
    with vault.db.read() as session:
        checkpoints = audit_repo.checkpoints(session)
    expected = verify_log(
        orm_entries(vault),
        checkpoints,
        audit.audit_public_keys(vault.db),
        semantics=SemanticChecker() if semantics else None,
    )
    got = audit.verify_database(vault.db, semantics=SemanticChecker() if semantics else None)
    assert got == expected
    assert got.ok is not semantics
