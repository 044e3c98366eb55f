"""Run the Alembic migrations (``dvault migrate``; ``serve`` and ``init`` call it first).

Alembic is imported only when there is something for it to do: a database already at
``HEAD_REVISION`` (every start but the first after an upgrade of dvault) is read with one query,
and a command of the CLI starts without Alembic's imports and its reading of the migration
scripts (a third of a second here).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from vault.errors import ConfigError
from vault.storage.engine import Database

if TYPE_CHECKING:
    from alembic.config import Config

# The newest revision in migrations/versions (a test checks it against Alembic's own head).
HEAD_REVISION = "0003"


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("vault._migrations")))
    return config


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with db.read_engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> None:
    """Upgrade under a lock, so that several workers starting at once migrate exactly once.
    Nothing to do (and Alembic not imported) for a database already at the head."""
    if revision == "head" and _at_head(db):
        return
    from alembic import command

    _run(db, lambda config: command.upgrade(config, revision))


def _at_head(db: Database) -> bool:
    """Whether the database says it is at ``HEAD_REVISION``: one row, that one. Anything else
    (no table yet, another revision, a database that cannot be read) is Alembic's to see."""
    try:
        with db.read_engine.connect() as connection:
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:
        return False
    return [tuple(row) for row in rows] == [(HEAD_REVISION,)]


def downgrade(db: Database, revision: str) -> None:
    from alembic import command

    _run(db, lambda config: command.downgrade(config, revision))


def _run(db: Database, action: Callable[[Config], None]) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.util import CommandError

    config = _config()
    with db.migration_lock() as connection:
        config.attributes["connection"] = connection
        try:
            action(config)
        except CommandError:
            # Alembic cannot place the database's revision: nothing was run. Most likely a newer
            # release upgraded it; an older one must not touch it. Any other refusal is Alembic's.
            stored = MigrationContext.configure(connection).get_current_revision()
            if stored is None or _known(stored):
                raise
            raise ConfigError(
                f"the database is at schema revision {stored!r}, which this release of dvault "
                "does not know (was it upgraded by a newer release?); nothing was changed"
            ) from None
        connection.commit()


def _known(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except CommandError:
        return False
