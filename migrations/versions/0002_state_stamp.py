"""The state stamp (``vault.storage.meta_repo.STATE_STAMP``), so that every writer knows it.

A worker prepares read-only batches outside the chain lock and commits them only if the stamp is
unchanged; every batch that may change state replaces it. A process of an earlier release would
change state without replacing the stamp, so this revision exists to make such a process refuse
the database (it cannot find this revision) rather than share the chain unseen. It only adds the
stamp's row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATE_STAMP = "state_stamp"  # meta_repo.STATE_STAMP, spelled here as the revision fixed it


def upgrade() -> None:
    op.get_bind().execute(
        sa.text("INSERT INTO vault_meta (key, value) VALUES (:key, :value)"),
        {"key": STATE_STAMP, "value": secrets.token_hex(16)},
    )


def downgrade() -> None:
    op.get_bind().execute(sa.text("DELETE FROM vault_meta WHERE key = :key"), {"key": STATE_STAMP})
