"""Alembic migrations on SQLite and PostgreSQL: round trip, no drift, idempotent ``migrate``."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.util import CommandError
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from tests.support import make_settings
from vault.errors import ConfigError
from vault.ops.audit import verify_database
from vault.ops.setup import init_vault
from vault.storage import migrate
from vault.storage.engine import Database

ROOT = Path(__file__).resolve().parents[2]
TABLES = {
    "audit_entries",
    "audit_checkpoints",
    "principals",
    "credentials",
    "subjects",
    "signing_keys",
    "tokens",
    "vault_meta",
}
ROW = {
    "seq": 1,
    "ts": "2026-11-27T17:00:00.000000Z",
    "type": "x",
    "data": "{}",
    "prev": "0" * 64,
    "hash": "1" * 64,
}


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    try:
        yield database
    finally:
        database.dispose()


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def assert_append_only(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO audit_entries (seq, ts, type, data, prev, hash) "
                    "VALUES (:seq, :ts, :type, :data, :prev, :hash)"
                ),
                ROW,
            )
        for sql in ("UPDATE audit_entries SET type = 'y'", "DELETE FROM audit_entries"):
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(sql))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT type FROM audit_entries")).scalars().all() == ["x"]
    finally:
        engine.dispose()


def alembic(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env["VAULT_DATABASE_URL"] = url
    return subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "-c", "alembic.ini", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_upgrade_downgrade_upgrade(db: Database, database_url: str) -> None:
    head = migrate.head_revision()
    assert head is not None
    assert migrate.current_revision(db) is None
    assert not tables(database_url) & TABLES

    migrate.upgrade(db)
    assert migrate.current_revision(db) == head
    assert tables(database_url) >= TABLES
    assert_append_only(database_url)

    migrate.downgrade(db, "base")
    assert migrate.current_revision(db) is None
    assert not tables(database_url) & TABLES
    if not db.is_sqlite:
        engine = create_engine(database_url)
        try:
            with engine.connect() as conn:
                functions = conn.execute(
                    text("SELECT count(*) FROM pg_proc WHERE proname = 'dvault_append_only'")
                ).scalar()
        finally:
            engine.dispose()
        assert functions == 0

    migrate.upgrade(db)
    migrate.upgrade(db)  # at head already: nothing to do
    assert migrate.current_revision(db) == head
    assert tables(database_url) >= TABLES
    assert_append_only(database_url)  # the triggers came back with the tables


def test_alembic_check_reports_no_drift(db: Database, database_url: str) -> None:
    behind = alembic(database_url, "check")
    assert behind.returncode != 0, "alembic check passed on an empty database"
    assert "not up to date" in behind.stderr + behind.stdout
    migrate.upgrade(db)
    done = alembic(database_url, "check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No new upgrade operations detected" in done.stdout + done.stderr
    current = alembic(database_url, "current")
    assert current.returncode == 0, current.stderr
    assert f"{migrate.head_revision()} (head)" in current.stdout


def test_cli_migrate_is_idempotent(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path / "home", database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env |= {"VAULT_HOME": str(settings.home), "VAULT_DATABASE_URL": database_url}

    def run_migrate() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vault", "migrate"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
            check=False,
        )

    for _ in range(2):
        done = run_migrate()
        assert done.returncode == 0, done.stderr
        assert f"database at revision {migrate.head_revision()}" in done.stderr
    assert tables(database_url) >= TABLES

    init_vault(settings)  # a vault with data: migrate again leaves it alone
    db = Database(database_url)
    try:
        before = verify_database(db)
        assert before.ok
        assert before.entries > 0
        done = run_migrate()
        assert done.returncode == 0, done.stderr
        assert verify_database(db) == before
        assert migrate.current_revision(db) == migrate.head_revision()
    finally:
        db.dispose()


def test_concurrent_upgrades_migrate_once(database_url: str) -> None:
    """Workers starting together each run ``upgrade``: the migration lock serializes them."""
    errors: list[BaseException] = []

    def worker() -> None:
        database = Database(database_url)
        try:
            migrate.upgrade(database)
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)
        finally:
            database.dispose()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    check = Database(database_url)
    try:
        assert migrate.current_revision(check) == migrate.head_revision()
    finally:
        check.dispose()
    assert_append_only(database_url)


def test_a_database_from_a_newer_release_is_refused_in_one_line(db: Database) -> None:
    """A revision this release does not know (a newer release upgraded the database): a clear
    error, not Alembic's traceback, and the database is left as it was."""
    migrate.upgrade(db)
    with db.write_engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    before = tables(db.url)
    with pytest.raises(ConfigError, match=r"schema revision '0099'.*newer release"):
        migrate.upgrade(db)
    assert migrate.current_revision(db) == "0099"
    assert tables(db.url) == before


def test_another_alembic_refusal_is_not_taken_for_a_newer_release(db: Database) -> None:
    migrate.upgrade(db)
    with pytest.raises(CommandError):
        migrate.downgrade(db, "no-such-revision")
    assert migrate.current_revision(db) == migrate.head_revision()


def test_the_head_revision_dvault_knows_is_alembics() -> None:
    """``HEAD_REVISION`` lets a start skip Alembic: it must be the newest migration."""
    assert migrate.head_revision() == migrate.HEAD_REVISION


def test_a_database_at_the_head_is_opened_without_alembic(
    tmp_path: Path, database_url: str
) -> None:
    """At the head there is nothing to migrate: a command opens the vault with one query, without
    importing Alembic (or reading the migration scripts). A database one revision behind is
    upgraded as before."""
    settings = make_settings(tmp_path / "home", database_url)
    init_vault(settings)
    probe = (
        "import sys\n"
        "from vault.config import load_settings\n"
        "from vault.ops.runtime import open_vault\n"
        "open_vault(load_settings()).close()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('alembic')}))\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VAULT_")},
        "VAULT_HOME": str(settings.home),
        "VAULT_DATABASE_URL": settings.database_url,
        "VAULT_MASTER_KEY": settings.master_key or "",
    }
    run = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"

    db = Database(settings.database_url)
    try:
        migrate.downgrade(db, "0001")  # as a release before 0002 left it
        assert migrate.current_revision(db) == "0001"
        migrate.upgrade(db)  # not at the head: Alembic runs
        assert migrate.current_revision(db) == migrate.HEAD_REVISION
    finally:
        db.dispose()


def test_a_wrong_master_key_migrates_nothing(tmp_path: Path, database_url: str) -> None:
    """``dvault migrate`` with a master key that is not the vault's fails in one line and leaves
    the schema where it was; with the vault's key it migrates."""
    settings = make_settings(tmp_path / "home", database_url)
    init_vault(settings)
    db = Database(settings.database_url)
    try:
        migrate.downgrade(db, "0001")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("VAULT_")},
            "VAULT_HOME": str(settings.home),
            "VAULT_DATABASE_URL": settings.database_url,
        }

        def run_migrate(master_key: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "vault", "migrate"],
                env={**env, "VAULT_MASTER_KEY": master_key},
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=120,
                check=False,
            )

        wrong = run_migrate(base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode())
        assert wrong.returncode == 1, wrong.stderr
        assert "master key" in wrong.stderr
        assert len(wrong.stderr.strip().splitlines()) == 1
        assert migrate.current_revision(db) == "0001"
        right = run_migrate(settings.master_key or "")
        assert right.returncode == 0, right.stderr
        assert migrate.current_revision(db) == migrate.HEAD_REVISION
    finally:
        db.dispose()
