"""Mailbox lifecycle (issue 16): suspension, scheduled deletion, legal hold, ended
sessions; suspended domains; the send right of a grant.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_MAILBOX_COLUMNS = ("suspended_at", "delete_after", "held_at", "sessions_ended_at")


def upgrade() -> None:
    with op.batch_alter_table("mailboxes") as table:
        for name in _MAILBOX_COLUMNS:
            table.add_column(sa.Column(name, sa.Float()))
        table.add_column(sa.Column("hold_reason", sa.Text()))
    with op.batch_alter_table("domains") as table:
        table.add_column(sa.Column("suspended_at", sa.Float()))
    with op.batch_alter_table("mailbox_grants") as table:
        table.add_column(sa.Column("can_send", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("mailbox_grants") as table:
        table.drop_column("can_send")
    with op.batch_alter_table("domains") as table:
        table.drop_column("suspended_at")
    with op.batch_alter_table("mailboxes") as table:
        table.drop_column("hold_reason")
        for name in reversed(_MAILBOX_COLUMNS):
            table.drop_column(name)
