"""Directory sources (issue 19): which source each run read, and the mailboxes each source
listed (mss directory reconcile).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("directory_runs", sa.Column("source", sa.String(16), nullable=False,
                                              server_default="ldap"))
    op.create_table(
        "directory_seen",
        sa.Column("source", sa.String(16), primary_key=True),
        sa.Column("mail", sa.String(320), primary_key=True),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("directory_seen")
    with op.batch_alter_table("directory_runs") as batch:  # DROP COLUMN: batch on SQLite
        batch.drop_column("source")
