"""Alembic environment. ``dvault migrate`` hands in a connection that already holds the
migration lock; the alembic command line builds one from the vault's own settings."""

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import vault.storage.tables  # noqa: F401 - registers the tables on SQLModel.metadata
from vault.config import load_settings

target_metadata = SQLModel.metadata


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    url = context.config.get_main_option("sqlalchemy.url") or load_settings().database_url
    engine = create_engine(url)
    with engine.connect() as conn:
        run_migrations(conn)
    engine.dispose()
