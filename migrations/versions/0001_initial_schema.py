"""Initial schema: the audit chain (append-only), checkpoints, principals, subjects, keys, tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = ("audit_entries", "audit_checkpoints")


def _s() -> sa.String:
    return sa.String()


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("ts", _s(), nullable=False),
        sa.Column("type", _s(), nullable=False),
        sa.Column("actor", _s(), nullable=True),
        sa.Column("subject", _s(), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("prev", _s(), nullable=False),
        sa.Column("hash", _s(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    for column in ("type", "actor", "subject", "ts"):
        op.create_index(f"ix_audit_entries_{column}", "audit_entries", [column])

    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", _s(), nullable=False),
        sa.Column("ts", _s(), nullable=False),
        sa.Column("kid", _s(), nullable=False),
        sa.Column("sig", _s(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "principals",
        sa.Column("id", _s(), nullable=False),
        sa.Column("name", _s(), nullable=False),
        sa.Column("roles", _s(), nullable=False),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", _s(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_principals_name", "principals", ["name"])
    op.create_table(
        "credentials",
        sa.Column("id", _s(), nullable=False),
        sa.Column("principal_id", _s(), nullable=False),
        sa.Column("secret_hash", _s(), nullable=False),
        sa.Column("created_at", _s(), nullable=False),
        sa.ForeignKeyConstraint(["principal_id"], ["principals.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
    )
    op.create_index("ix_credentials_principal_id", "credentials", ["principal_id"])
    op.create_table(
        "subjects",
        sa.Column("id", _s(), nullable=False),
        sa.Column("email", _s(), nullable=False),
        sa.Column("name", _s(), nullable=False),
        sa.Column("role", _s(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _s(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", _s(), nullable=False),
        sa.Column("purpose", _s(), nullable=False),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("private_sealed", sa.Text(), nullable=False),
        sa.Column("created_at", _s(), nullable=False),
        sa.Column("retired_at", _s(), nullable=True),
        sa.Column("publish_until", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("kid"),
    )
    op.create_index("ix_signing_keys_purpose", "signing_keys", ["purpose"])
    op.create_table(
        "tokens",
        sa.Column("jti", _s(), nullable=False),
        sa.Column("kid", _s(), nullable=False),
        sa.Column("subject_id", _s(), nullable=False),
        sa.Column("actor_id", _s(), nullable=False),
        sa.Column("scope", _s(), nullable=False),
        sa.Column("iat", sa.BigInteger(), nullable=False),
        sa.Column("exp", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", _s(), nullable=True),
        sa.PrimaryKeyConstraint("jti"),
    )
    for column in ("subject_id", "actor_id", "kid"):
        op.create_index(f"ix_tokens_{column}", "tokens", [column])
    op.create_table(
        "vault_meta",
        sa.Column("key", _s(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    _create_append_only_triggers()


def _create_append_only_triggers() -> None:
    """The database itself refuses UPDATE and DELETE (and, on PostgreSQL, TRUNCATE)."""
    if op.get_bind().dialect.name == "sqlite":
        for table in APPEND_ONLY:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                )
            # INSERT OR REPLACE deletes the row it collides with without firing DELETE triggers
            # (SQLite fires them only with recursive_triggers on): refuse an insert onto a seq
            # that exists.
            # S608: the table names are this module's constants, not input.
            op.execute(
                f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "  # noqa: S608
                f"WHEN EXISTS (SELECT 1 FROM {table} WHERE seq = NEW.seq) "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )
        return
    op.execute(
        "CREATE FUNCTION dvault_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"
    )
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION dvault_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION dvault_append_only()"
        )


def downgrade() -> None:
    # Dropping the tables drops their triggers; the audit log goes with them. A downgrade is a
    # development tool: a real vault's log is exported first.
    for table in (
        "vault_meta",
        "tokens",
        "signing_keys",
        "subjects",
        "credentials",
        "principals",
        "audit_checkpoints",
        "audit_entries",
    ):
        op.drop_table(table)
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP FUNCTION IF EXISTS dvault_append_only()")
