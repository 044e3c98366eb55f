"""``engine.fetch_first`` and ``engine.execute_many``: the hot paths' reads and batch inserts go
to the database driver directly, and its errors still come out as SQLAlchemy's, so the appender
treats them as it treats Core's (a refused row fails its job; a broken database, its batch)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import psycopg
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError

from tests.support import kill_connections, next_batch
from vault.audit.appender import JobContext
from vault.audit.entry import Draft
from vault.errors import AuditUnavailable
from vault.ops.runtime import Vault
from vault.storage import audit_repo, meta_repo
from vault.storage.engine import Database, Tx, _give_back, execute_many, fetch_first

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


# --- write_driver's opening reads and (PostgreSQL) inserts sent with the COMMIT ---------------


def _insert(vault: Vault, *statements: list[tuple[str, str]], then_fail: bool = False) -> None:
    """One ``write_driver`` transaction: one ``execute_many`` per statement."""
    with vault.db.write_driver() as tx:
        for rows in statements:
            execute_many(tx, INSERT, list(rows))
        if then_fail:
            raise RuntimeError("roll back")


def test_opening_reads_are_what_the_same_queries_read_under_the_lock(vault: Vault) -> None:
    opening = (
        meta_repo.STAMP_SQL,
        audit_repo.HEAD_SQL,
        "SELECT value FROM vault_meta WHERE key = 'no such key'",
    )
    with vault.db.write_driver(opening) as tx:
        stamp_row, head_row, missing = tx.opened
        assert meta_repo.stamp_of(stamp_row) == meta_repo.state_stamp(tx)
        assert meta_repo.stamp_of(stamp_row) is not None
        assert audit_repo.head_of(head_row) == audit_repo.head(tx)
        assert missing is None


def test_an_insert_is_seen_by_a_later_read_of_its_transaction_and_committed(vault: Vault) -> None:
    with vault.db.write_driver() as tx:
        execute_many(tx, INSERT, [("test.a", "1"), ("test.b", "2")])
        assert fetch_first(tx, COUNT, ("test.%",))[0] == 2
        execute_many(tx, INSERT, [("test.c", "3")])  # sent with the COMMIT on PostgreSQL
    with vault.db.read() as session:
        assert fetch_first(session, COUNT, ("test.%",))[0] == 3


def test_a_refused_insert_fails_the_commit_leaves_nothing_and_the_next_one_works(
    vault: Vault,
) -> None:
    with vault.db.write_driver() as tx:
        execute_many(tx, INSERT, [("test.dup", "1")])
    with pytest.raises(IntegrityError):
        _insert(vault, [("test.first", "1")], [("test.second", "1"), ("test.dup", "2")])
    with vault.db.read() as session:
        assert fetch_first(session, COUNT, ("test.%",))[0] == 1  # neither statement stayed
    with vault.db.write_driver() as tx:
        execute_many(tx, INSERT, [("test.after", "1")])
    with vault.db.read() as session:
        assert fetch_first(session, COUNT, ("test.%",))[0] == 2


def test_a_body_that_raises_commits_none_of_its_inserts(vault: Vault) -> None:
    with pytest.raises(RuntimeError):
        _insert(vault, [("test.gone", "1")], then_fail=True)
    with vault.db.read() as session:
        assert fetch_first(session, COUNT, ("test.%",))[0] == 0


def test_a_failing_opening_read_is_sqlalchemys_error_and_takes_nothing(vault: Vault) -> None:
    with (
        pytest.raises((OperationalError, ProgrammingError)),
        vault.db.write_driver(("SELECT secret FROM no_such_table",)),
    ):
        raise AssertionError("the body must not run")
    with vault.db.write_driver((audit_repo.HEAD_SQL,)) as tx:  # the lock was let go
        assert audit_repo.head_of(tx.opened[0]).seq == _head(vault)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_kept_connections_are_in_autocommit_and_go_back_to_the_pool_without_it(
    vault: Vault,
) -> None:
    with vault.db.write_driver((audit_repo.HEAD_SQL,)) as tx:
        assert tx.driver.autocommit  # BEGIN goes with the lock, not on its own
        assert tx.driver.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    with vault.db.read_driver() as tx:
        assert tx.driver.autocommit
    raw = vault.db.read_engine.raw_connection()
    raw.driver_connection.autocommit = True
    connection = raw.driver_connection
    _give_back(raw)  # what dispose does with the kept ones
    assert connection.autocommit is False


def _swallow_an_error_then_commit(vault: Vault) -> None:
    with vault.db.write_driver() as tx:
        execute_many(tx, INSERT, [("test.a", "1")])
        with contextlib.suppress(DBAPIError):  # as a careless job might
            fetch_first(tx, "SELECT 1 / (SELECT count(*) - count(*) FROM vault_meta)", ())


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_commit_that_the_server_answers_with_rollback_is_an_error(vault: Vault) -> None:
    with pytest.raises(DBAPIError):
        _swallow_an_error_then_commit(vault)
    with vault.db.read() as session:
        assert fetch_first(session, COUNT, ("test.%",))[0] == 0
    with vault.db.write_driver() as tx:  # and the next transaction is a clean one
        execute_many(tx, INSERT, [("test.c", "1")])
    with vault.db.read() as session:
        assert fetch_first(session, COUNT, ("test.%",))[0] == 1


def test_opening_reads_see_what_the_previous_holder_of_the_lock_committed(vault: Vault) -> None:
    """The opening reads run once the chain lock is held: a row committed by another holder
    of the lock (another process's ``Database``) while this one waited is seen."""
    other = Database(vault.settings.database_url)
    holding, done = threading.Event(), threading.Event()

    def hold_then_commit() -> None:
        with other.write_driver() as tx:
            execute_many(tx, INSERT, [("test.late", "1")])
            holding.set()
            time.sleep(0.5)  # the other transaction is waiting for the lock meanwhile
        done.set()

    worker = threading.Thread(target=hold_then_commit)
    worker.start()
    try:
        assert holding.wait(30)
        late = "SELECT value FROM vault_meta WHERE key = 'test.late'"
        with vault.db.write_driver((late,)) as tx:  # waits for the lock, then reads
            assert tx.opened[0] is not None, "read before the other holder committed"
            assert tuple(tx.opened[0]) == ("1",)
        assert done.wait(30)
    finally:
        worker.join(30)
        other.dispose()
