"""``engine.fetch_first`` and ``engine.execute_many``: the hot paths' reads and batch inserts go
to the database driver directly, and its errors still come out as SQLAlchemy's, so the appender
treats them as it treats Core's (a refused row fails its job; a broken database, its batch)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from tests.support import kill_connections, next_batch
from vault.audit.appender import JobContext
from vault.audit.entry import Draft
from vault.errors import AuditUnavailable
from vault.ops.runtime import Vault
from vault.storage import audit_repo
from vault.storage.engine import Tx, execute_many, fetch_first

INSERT = "INSERT INTO vault_meta (key, value) VALUES (?, ?)"


COUNT = "SELECT count(*) FROM vault_meta WHERE key LIKE ?"


def _insert_then_fail(vault: Vault) -> None:
    with vault.db.write() as session:
        execute_many(session, INSERT, [("test.a", "1"), ("test.b", "2")])
        assert fetch_first(session, COUNT, ("test.%",))[0] == 2
        raise RuntimeError("roll back")


def test_rows_go_in_within_the_transaction_and_roll_back_with_it(vault: Vault) -> None:
    with pytest.raises(RuntimeError):
        _insert_then_fail(vault)
    with vault.db.write() as session:
        assert fetch_first(session, COUNT, ("test.%",))[0] == 0
        execute_many(session, INSERT, [("test.c", "3")])
    with vault.db.read() as session:
        found = fetch_first(session, "SELECT value FROM vault_meta WHERE key = ?", ("test.c",))
    assert tuple(found) == ("3",)


def test_a_duplicate_key_is_sqlalchemys_integrity_error(vault: Vault) -> None:
    with vault.db.write() as session:
        execute_many(session, INSERT, [("test.dup", "1")])
    with pytest.raises(IntegrityError), vault.db.write() as session:
        execute_many(session, INSERT, [("test.other", "1"), ("test.dup", "2")])
    with vault.db.read() as session:
        assert fetch_first(session, COUNT, ("test.%",))[0] == 1  # the failed batch left nothing


def test_a_failing_read_is_sqlalchemys_error_and_shows_no_parameters(vault: Vault) -> None:
    with pytest.raises((OperationalError, ProgrammingError)) as caught, vault.db.write() as session:
        fetch_first(session, "SELECT secret FROM no_such_table WHERE x = ?", ("dv_hidden",))
    assert "dv_hidden" not in str(caught.value)


# --- the appender's transaction for batches of read-only jobs (Database.write_driver) ---------


def _reading(sql: str) -> Any:
    def job(session: Tx, ctx: JobContext) -> Any:
        ctx.record(Draft(type="test.note", actor=None, subject=None, data={"sql": sql}))
        return fetch_first(session, sql, ())

    return job


def _head(vault: Vault) -> int:
    with vault.db.read() as session:
        return audit_repo.head(session).seq


def test_a_read_only_batch_that_fails_commits_nothing_and_the_next_one_works(
    vault: Vault,
) -> None:
    before = _head(vault)
    with next_batch(vault):
        fine = vault.appender.submit(_reading("SELECT 1"), read_only=True)
        broken = vault.appender.submit(_reading("SELECT * FROM no_such_table"), read_only=True)
    for future in (fine, broken):
        with pytest.raises(AuditUnavailable):
            future.result(30)
    assert _head(vault) == before
    assert tuple(vault.appender.submit(_reading("SELECT 2"), read_only=True).result(30)) == (2,)
    assert _head(vault) == before + 1


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # a server that drops them
def test_a_held_connection_killed_between_batches_is_replaced(vault: Vault) -> None:
    assert tuple(vault.appender.submit(_reading("SELECT 1"), read_only=True).result(30)) == (1,)
    assert kill_connections(vault.settings.database_url) >= 1
    # the very next batch is served, on a new connection
    assert tuple(vault.appender.submit(_reading("SELECT 3"), read_only=True).result(30)) == (3,)
