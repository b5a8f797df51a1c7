"""Retention (issue 16): when a message entered its folder (messages.saved_at), and the
index the retention job reads a folder's expired messages from.

Rows written before this revision keep saved_at NULL: the job takes their internal date
instead (mss/mailstore/retention.py). No backfill: rewriting every message row (ciphertext
included) would make the upgrade as long as a copy of the store.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as table:
        table.add_column(sa.Column("saved_at", sa.Float()))
    op.create_index("ix_messages_folder_saved", "messages",
                    ["folder_id", "saved_at", "internal_date"])


def downgrade() -> None:
    op.drop_index("ix_messages_folder_saved", "messages")
    with op.batch_alter_table("messages") as table:
        table.drop_column("saved_at")
