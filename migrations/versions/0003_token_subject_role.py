"""The subject's role as a token was issued for it (``tokens.subject_role``).

Introspection refuses a token whose subject's role is no longer the one it was issued for, so
that a token issued for a user never acts as an admin, even where the delegator's policy allows
admin subjects. Tokens issued before this revision have none (NULL) and are judged as before.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("subject_role", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("subject_role")
