"""Whitelist history (issue 16 part 7): the time a version was withdrawn by
``mss whitelist rollback``; an import of that same document is refused unless forced.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("whitelist_versions") as table:
        table.add_column(sa.Column("withdrawn_at", sa.Float()))


def downgrade() -> None:
    with op.batch_alter_table("whitelist_versions") as table:
        table.drop_column("withdrawn_at")
