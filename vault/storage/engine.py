"""Engines and the two kinds of transaction: reads, and writes that hold the chain lock.

Every change to the vault's state is audited, so every write transaction appends to the one chain,
and every write transaction first takes the chain lock:

- SQLite: ``BEGIN IMMEDIATE`` (the database write lock), preceded by an exclusive ``flock`` on a
  lock file beside the database so that processes queue in the kernel instead of spinning in
  SQLite's busy handler (which can starve one writer for seconds). WAL, ``synchronous=FULL``.
- PostgreSQL: ``pg_advisory_xact_lock`` on one fixed key, released by COMMIT or ROLLBACK, so any
  number of vault processes and replicas on one database append to a single unforked chain.

Within one process a mutex serializes writers too; the appender is the usual one. A write runs
through an ORM session (``write``) or, for the appender's batches of hot-path jobs, on the driver
connection itself (``write_driver``, with ``fetch_first`` and ``execute_many``), under the same
locks. The appender prepares such batches on a read transaction of the same kind
(``read_driver``) when other processes share the chain lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import select
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from vault.config import make_directory, redact_url
from vault.errors import ConfigError, NotInitialized
from vault.storage.log_rows import POSTGRESQL, SQLITE, RowSource

log = logging.getLogger("vault.storage")

CHAIN_LOCK_KEY = 0x64766175_6C74  # "dvault": the advisory lock of the audit chain
MIGRATION_LOCK_KEY = CHAIN_LOCK_KEY + 1
GUARDED_IDLE_SECONDS = 5.0  # a kept connection idle longer is not sent a guarded write
_DIVISION_BY_ZERO = "22012"  # SQLSTATE of a failed guard (``Database.write_guarded``)
_UNDEFINED_TABLE = "42P01"
POSTGRESQL_DRIVER = "postgresql+psycopg"


def no_such_table(exc: DBAPIError) -> bool:
    """Whether ``exc`` says that a table does not exist: a database with no schema yet, unlike
    one that cannot be reached or read."""
    found = exc.orig
    if getattr(found, "sqlstate", None) == _UNDEFINED_TABLE:
        return True
    return isinstance(found, sqlite3.OperationalError) and str(found).startswith("no such table")


class GuardFailed(Exception):
    """``Database.write_guarded``'s guard was false under the lock: nothing was committed."""


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@dataclass(frozen=True, slots=True)
class DriverTx:
    """A write transaction on the bare driver connection, holding the chain lock like
    ``Database.write``. Batches of read-only jobs run in one: they need only point reads and
    batch inserts (``fetch_first``, ``execute_many``), and the ORM session's per-transaction work
    (pool checkout, events, its transaction objects) was most of a one-job batch's CPU."""

    driver: Any  # the DBAPI connection
    qmark: bool  # takes ``?`` placeholders (sqlite3) rather than ``%s`` (psycopg)
    error: type[Exception]  # the driver's base error class
    opened: tuple[Any, ...] = ()  # the first row of each of ``write_driver``'s opening reads
    # PostgreSQL: the inserts not yet sent (``execute_many``), sent with the next read or with
    # the COMMIT, in one round trip (``None``: sent at once).
    deferred: list[tuple[str, list[tuple[Any, ...]]]] | None = None


Tx = Session | DriverTx  # what fetch_first and execute_many run in


class Database:
    """One database: a read engine, a write path holding the chain lock, and its dialect."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        try:
            parsed = make_url(url)
        except Exception as exc:  # sqlalchemy raises ArgumentError and ValueError alike
            raise ConfigError(f"bad database URL {redact_url(url)!r}: {exc}") from None
        self.dialect = parsed.get_backend_name()
        if self.dialect == "postgresql" and parsed.drivername != POSTGRESQL_DRIVER:
            if parsed.drivername != "postgresql":  # psycopg2, asyncpg, pg8000: not installed here
                raise ConfigError(
                    f"unsupported PostgreSQL driver {parsed.drivername!r}: "
                    f"use {POSTGRESQL_DRIVER}://"
                )
            # SQLAlchemy 2.0 reads a bare postgresql:// as psycopg2; psycopg is the one we have.
            url = parsed.set(drivername=POSTGRESQL_DRIVER).render_as_string(hide_password=False)
        self.url = url
        self._mutex = threading.Lock()
        self._lock_path: Path | None = None
        self._held: Any = None  # write_driver's connection, kept between its transactions
        self._held_used = -math.inf  # time.monotonic() of its last transaction that committed
        self._held_read: Any = None  # read_driver's, likewise
        self._read_mutex = threading.Lock()
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database in {"", ":memory:"}:
                raise ConfigError("the vault needs a SQLite file, not an in-memory database")
            path = Path(database)
            if not create and not path.exists():
                raise NotInitialized(f"no vault database at {path}: run 'dvault init'")
            make_directory(path.parent)
            # It holds sealed keys and credential hashes: 0600 from the start. SQLite gives its
            # -wal and -shm files the database file's permissions.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            _warn_if_open_to_others(path)
            self._lock_path = path.with_name(path.name + ".writelock")
            self.read_engine = _sqlite_engine(url, immediate=False)
            self.write_engine = _sqlite_engine(url, immediate=True)
        elif self.dialect == "postgresql":
            self.read_engine = create_engine(url, pool_pre_ping=True)
            self.write_engine = self.read_engine
        else:
            raise ConfigError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def row_source(self) -> RowSource:
        """Where another process reads the audit log's rows with the bare driver."""
        parsed = make_url(self.url)
        if self.dialect == "sqlite":
            return RowSource(SQLITE, parsed.database or "")
        from psycopg.conninfo import make_conninfo  # the driver of every PostgreSQL URL here

        # libpq's own key=value form, from the URL's parts and query (``options`` included), as
        # psycopg would connect for SQLAlchemy.
        options = {key: str(value) for key, value in parsed.query.items()}
        parts: dict[str, Any] = {
            "host": parsed.host,
            "port": parsed.port,
            "user": parsed.username,
            "password": parsed.password,
            "dbname": parsed.database,
        }
        return RowSource(
            POSTGRESQL,
            make_conninfo("", **{k: v for k, v in parts.items() if v is not None}, **options),
        )

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.read_engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that holds the chain lock; commits on success, rolls back on error."""
        with (
            self._mutex,
            self._file_lock(),
            Session(self.write_engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            if self.dialect == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK_KEY})
            yield session

    @contextmanager
    def write_driver(self, opening: tuple[str, ...] = ()) -> Iterator[DriverTx]:
        """``write`` on the driver connection itself: commits on success, rolls back on error.

        ``opening``: reads (constant SQL, no parameters) run as soon as the chain lock is held;
        the first row of each is in ``tx.opened``.

        The connection is kept from one such transaction to the next (the pool's checkout and
        check-in were a tenth of a one-job batch's CPU). One that fails to begin is replaced and
        tried once more (the pool's pre-ping would have done that), and one that saw any other
        error is discarded, which rolls back its transaction.

        On PostgreSQL every statement is a round trip to the server, and under load each costs
        more than the statement itself; the lock is held through all of them. So BEGIN, the lock
        and the opening reads go as one query, and the inserts (``execute_many``) wait to go
        with the COMMIT, in one pipeline: a batch of read-only jobs takes two round trips, plus
        one per other read."""
        with self._mutex, self._file_lock():
            tx = self._begin_driver(opening)
            try:
                yield tx
                if self.dialect == "sqlite":
                    _run(tx, "COMMIT")
                else:
                    _send_deferred(tx, commit=True)
            except BaseException:
                self._drop_held()
                raise
            self._held_used = time.monotonic()

    def guarded_write_ready(self) -> bool:
        """Whether to use ``write_guarded`` now: on PostgreSQL, with a kept connection that
        served a write less than ``GUARDED_IDLE_SECONDS`` ago. A connection idle for longer may
        have died without the server saying so (a failover, a reset path), and only a write that
        sends BEGIN alone first (``write_driver``) can take a new one and try again."""
        return (
            self.dialect == "postgresql"
            and self._held is not None
            and time.monotonic() - self._held_used < GUARDED_IDLE_SECONDS
        )

    @contextmanager
    def write_guarded(self, condition: str, params: tuple[Any, ...]) -> Iterator[DriverTx]:
        """PostgreSQL: ``write_driver`` in one round trip, for a writer that already knows what
        it would read under the lock. BEGIN, the chain lock, a *guard* and the transaction's
        inserts (``execute_many``) wait to go with the COMMIT, in one pipeline.

        The guard is ``condition`` (SQL with ``?`` placeholders for ``params``), evaluated once
        the lock is held: if it is not true, the guard divides by zero, PostgreSQL aborts the
        transaction, and this raises ``GuardFailed``. Nothing was committed then, certainly:
        the error came after BEGIN and before COMMIT, in one transaction block. Division by zero
        is the guard's only possible error (the inserts hold plain text and integers), so it
        alone means "not committed, try again with the reads under the lock". Every other error
        is raised as ``write_driver`` raises it: the caller must not retry after one, since a
        COMMIT whose answer was lost may have committed."""
        if self.dialect != "postgresql":
            raise ValueError("write_guarded needs PostgreSQL")
        guard = f"SELECT 1 / (CASE WHEN {condition} THEN 1 ELSE 0 END)".replace("?", "%s")
        with self._mutex:
            if self._held is not None and _closed_by_server(self._held.driver_connection):
                self._drop_held()  # sending to it would fail after the fact, not before
            if self._held is None:
                self._held = self._raw_connection(self.write_engine)
            dialect = self.write_engine.dialect
            prelude: list[tuple[str, list[tuple[Any, ...]]]] = [
                ("BEGIN", [()]),
                (f"SELECT pg_advisory_xact_lock({CHAIN_LOCK_KEY:d})", [()]),
                (guard, [params]),
            ]
            tx = DriverTx(
                self._held.driver_connection, False, dialect.loaded_dbapi.Error, (), prelude
            )
            try:
                yield tx
                _send_deferred(tx, commit=True)
                self._held_used = time.monotonic()
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) != _DIVISION_BY_ZERO:
                    self._drop_held()
                    raise
                try:
                    _rollback(tx)  # the aborted transaction block: the connection stays
                except BaseException:
                    self._drop_held()
                raise GuardFailed from None
            except BaseException:
                self._drop_held()
                raise

    @contextmanager
    def read_driver(self) -> Iterator[DriverTx]:
        """A read transaction on a driver connection of the read engine, without the chain lock:
        the appender's first look at a batch (``Appender``). Its connection is kept between
        transactions like ``write_driver``'s, and dropped after any error. On SQLite it is one
        snapshot; on PostgreSQL (read committed) each statement sees what was committed when it
        began, so a reader that needs one state reads a stamp first (``meta_repo``)."""
        with self._read_mutex:
            try:
                if self._held_read is None:
                    self._held_read = self._raw_connection(self.read_engine)
                dialect = self.read_engine.dialect
                tx = DriverTx(
                    self._held_read.driver_connection,
                    dialect.paramstyle == "qmark",
                    dialect.loaded_dbapi.Error,
                )
                if self.dialect == "sqlite":
                    _run(tx, "BEGIN")
                yield tx
                _rollback(tx)
            except BaseException:
                held, self._held_read = self._held_read, None
                if held is not None:
                    with contextlib.suppress(Exception):
                        held.invalidate()
                raise

    def _begin_driver(self, opening: tuple[str, ...]) -> DriverTx:
        dialect = self.write_engine.dialect
        for retry in (False, True):
            if self._held is None:
                self._held = self._raw_connection(self.write_engine)
            tx = DriverTx(
                self._held.driver_connection,
                dialect.paramstyle == "qmark",
                dialect.loaded_dbapi.Error,
            )
            try:
                if self.dialect == "sqlite":
                    _run(tx, "BEGIN IMMEDIATE")
                    opened = tuple(fetch_first(tx, sql, ()) for sql in opening)
                else:
                    lock = f"BEGIN; SELECT pg_advisory_xact_lock({CHAIN_LOCK_KEY:d})"
                    opened = _first_rows(tx, "; ".join((lock, *opening)))[2:]
            except DBAPIError:
                self._drop_held()
                if retry:
                    raise
                continue
            except BaseException:  # never keep a connection inside a transaction we left
                self._drop_held()
                raise
            deferred: list[tuple[str, list[tuple[Any, ...]]]] | None = (
                None if self.dialect == "sqlite" else []
            )
            return DriverTx(tx.driver, tx.qmark, tx.error, opened, deferred)
        raise AssertionError("unreachable")

    def _raw_connection(self, engine: Engine) -> Any:
        """A pool connection for ``write_driver`` or ``read_driver`` to keep. On PostgreSQL it is
        in autocommit mode: the driver sends no BEGIN of its own (``write_driver`` sends it with
        the lock), and ``read_driver``'s reads need none (each sees what was committed when it
        began, as in a read-committed transaction)."""
        raw: Any = engine.raw_connection()
        if self.dialect == "postgresql":
            try:
                raw.driver_connection.autocommit = True
            except BaseException:
                raw.invalidate()
                raise
        return raw

    def _drop_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            with contextlib.suppress(Exception):
                held.invalidate()  # closes it: an open transaction is rolled back

    @contextmanager
    def migration_lock(self) -> Iterator[Connection]:
        """A connection held by one migrator at a time, across processes."""
        with self._mutex, self._file_lock(), self.write_engine.connect() as connection:
            if self.dialect == "postgresql":
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
                connection.commit()
            try:
                yield connection
            finally:
                if self.dialect == "postgresql":
                    connection.rollback()
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY}
                    )
                    connection.commit()

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        if self._lock_path is None:
            yield
            return
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def dispose(self) -> None:
        with self._mutex:
            held, self._held = self._held, None
            _give_back(held)
        with self._read_mutex:
            held, self._held_read = self._held_read, None
            _give_back(held)
        self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            self.write_engine.dispose()


def _warn_if_open_to_others(path: Path) -> None:
    """The database holds sealed keys and credential hashes: say so if every local user may
    read or change it, or replace it in its directory. (A group may read it: a reviewer's.)"""
    mode = path.stat().st_mode
    if mode & 0o006:
        log.warning("%s may be read or written by every local user: chmod o-rw it", path)
    mode = path.parent.stat().st_mode
    if mode & 0o002 and not mode & stat.S_ISVTX:
        log.warning("%s may be written by every local user: chmod o-w it", path.parent)


def fetch_first(session: Tx, sql: str, params: tuple[Any, ...]) -> Any:
    """The first row of a constant query written with ``?`` placeholders, run by the database
    driver itself on the session's connection, inside its transaction: the hot paths' point
    reads, without the ORM's or Core's per-call work (several times the query's own cost).
    Changes the session has pending are flushed first, as an ORM query would."""
    return _fetch(session, sql, params, every=False)


def fetch_all(session: Tx, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """Every row of a query, as ``fetch_first`` reads one."""
    rows: list[Any] = _fetch(session, sql, params, every=True)
    return rows


def _fetch(session: Tx, sql: str, params: tuple[Any, ...], *, every: bool) -> Any:
    if isinstance(session, DriverTx):
        _send_deferred(session, commit=False)  # a read sees the transaction's inserts
    driver, qmark, dbapi_error = _driver(session)
    statement = sql if qmark else sql.replace("?", "%s")
    try:
        cursor = driver.execute(statement, params)
        try:
            return list(cursor.fetchall()) if every else cursor.fetchone()
        finally:
            cursor.close()
    except dbapi_error as exc:
        raise _as_sqlalchemy(exc, statement, params, dbapi_error) from exc


def execute_many(session: Tx, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """A constant statement with ``?`` placeholders (only plain text and integer values), once
    per row, by the driver itself, inside the session's transaction (see ``fetch_first``): the
    batch inserts of the hot paths, without Core's statement building on every batch. Driver
    errors come out as SQLAlchemy's (``IntegrityError``, ``OperationalError``...), as Core's."""
    if not rows:
        return
    driver, qmark, dbapi_error = _driver(session)
    statement = sql if qmark else sql.replace("?", "%s")
    if isinstance(session, DriverTx) and session.deferred is not None:
        session.deferred.append((statement, rows))  # sent with the next read, or the COMMIT
        return
    try:
        cursor = driver.cursor()
        try:
            cursor.executemany(statement, rows)
        finally:
            cursor.close()
    except dbapi_error as exc:
        raise _as_sqlalchemy(exc, statement, rows, dbapi_error) from exc


def _driver(session: Tx) -> tuple[Any, bool, type[Exception]]:
    """The session's DBAPI connection (its transaction begun), whether it takes ``?``
    placeholders, and the driver's base error class."""
    if isinstance(session, DriverTx):
        return session.driver, session.qmark, session.error
    session.flush()
    found = session.info.get(_DRIVER)
    if found is None:
        connection = session.connection()
        dialect = connection.dialect
        found = session.info[_DRIVER] = (
            connection.connection.driver_connection,
            dialect.paramstyle == "qmark",
            dialect.loaded_dbapi.Error,
        )
    return found


def _run(tx: DriverTx, sql: str, params: tuple[Any, ...] = ()) -> None:
    statement = sql if tx.qmark else sql.replace("?", "%s")
    try:
        tx.driver.execute(statement, params).close()
    except tx.error as exc:
        raise _as_sqlalchemy(exc, statement, params, tx.error) from exc


def _send_deferred(tx: DriverTx, *, commit: bool) -> None:
    """Send ``tx``'s deferred inserts, and with ``commit`` the COMMIT, in one pipeline: one
    round trip. An error in any of them is raised here; the caller then drops the connection,
    which rolls the transaction back."""
    deferred = tx.deferred
    if not deferred and not commit:
        return
    statement = "COMMIT"
    try:
        with tx.driver.cursor() as cursor:
            if deferred:
                with tx.driver.pipeline():
                    for statement, rows in deferred:
                        cursor.executemany(statement, rows)
                    deferred.clear()
                    if commit:
                        statement = "COMMIT"
                        cursor.execute(statement)
            elif commit:
                cursor.execute(statement)
            # PostgreSQL answers COMMIT in a transaction already aborted with ROLLBACK, and no
            # error: never take that for a commit.
            if commit and cursor.statusmessage != "COMMIT":
                raise tx.error(f"the transaction ended with {cursor.statusmessage}, not COMMIT")
    except tx.error as exc:
        raise _as_sqlalchemy(exc, statement, (), tx.error) from exc


def _first_rows(tx: DriverTx, sql: str) -> tuple[Any, ...]:
    """The first row (or ``None``) of each statement of ``sql``, several statements without
    parameters: PostgreSQL runs them in one round trip (the simple query protocol)."""
    found: list[Any] = []
    try:
        with tx.driver.cursor() as cursor:
            cursor.execute(sql)
            while True:
                found.append(cursor.fetchone() if cursor.description is not None else None)
                if not cursor.nextset():
                    break
    except tx.error as exc:
        raise _as_sqlalchemy(exc, sql, (), tx.error) from exc
    return tuple(found)


def _closed_by_server(connection: Any) -> bool:
    """Whether an idle psycopg connection is known dead, or has something to read: a server
    that ends a connection (a restart, ``pg_terminate_backend``, an idle timeout) says so and
    closes it, and nothing else is sent to an idle connection that listens to nothing. One
    non-blocking ``poll``: no round trip."""
    if connection.closed or getattr(connection, "broken", False):
        return True
    poller = select.poll()  # not select(): a process may hold more than 1,024 descriptors
    try:
        poller.register(connection.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _give_back(held: Any) -> None:
    """Return a kept connection to its pool as the pool gave it (not in autocommit)."""
    if held is None:
        return
    with contextlib.suppress(Exception):
        if getattr(held.driver_connection, "autocommit", False):
            held.driver_connection.autocommit = False
    held.close()


def _rollback(tx: DriverTx) -> None:
    try:
        tx.driver.rollback()
    except tx.error as exc:
        raise _as_sqlalchemy(exc, "ROLLBACK", (), tx.error) from exc


def _as_sqlalchemy(exc: Exception, statement: str, params: Any, base: type[Exception]) -> Any:
    return DBAPIError.instance(statement, params, exc, base, hide_parameters=True)


_DRIVER = "vault.driver_connection"  # session.info: what _driver returns
