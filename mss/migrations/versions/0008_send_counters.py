"""Sending limits' counters, per sender and window (mss/sending.py).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

COUNTER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "send_counters",
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("window", COUNTER, primary_key=True),
        sa.Column("messages", COUNTER, nullable=False),
        sa.Column("recipients", COUNTER, nullable=False),
        sa.Column("append_bytes", COUNTER, nullable=False),
        sa.Column("audited", sa.String(64), nullable=False),
    )
    op.create_index("ix_send_counters_window", "send_counters", ["window"])


def downgrade() -> None:
    op.drop_index("ix_send_counters_window", "send_counters")
    op.drop_table("send_counters")
