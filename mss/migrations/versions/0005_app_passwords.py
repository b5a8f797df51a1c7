"""App passwords: per device, scoped (IMAP, SMTP), hashed, revocable (issue 15;
mss/mailstore/app_passwords.py).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_passwords",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("mailbox_id", sa.Integer, sa.ForeignKey("mailboxes.id"), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(32), nullable=False),
        sa.Column("hash", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(16), nullable=False),
        sa.Column("last_used_at", sa.Float),
        sa.Column("last_used_from", sa.String(64)),
        sa.Column("revoked_at", sa.Float),
    )
    op.create_index("ix_app_passwords_mailbox", "app_passwords", ["mailbox_id"])


def downgrade() -> None:
    op.drop_index("ix_app_passwords_mailbox", "app_passwords")
    op.drop_table("app_passwords")
