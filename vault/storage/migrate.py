"""Run the Alembic migrations (``dvault migrate``; ``serve`` and ``init`` call it first)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from vault.errors import ConfigError
from vault.storage.engine import Database


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("vault._migrations")))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.read_engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> None:
    """Upgrade under a lock, so that several workers starting at once migrate exactly once."""
    _run(db, lambda config: command.upgrade(config, revision))


def downgrade(db: Database, revision: str) -> None:
    _run(db, lambda config: command.downgrade(config, revision))


def _run(db: Database, action: Callable[[Config], None]) -> None:
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
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except CommandError:
        return False
