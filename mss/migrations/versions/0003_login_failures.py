"""Login failures counted in the database, so that every node of a cluster sees them.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("locked_until", sa.Float),
    )
    op.create_index("ix_login_failures_key", "login_failures", ["key", "at"])
    op.create_index("ix_login_failures_at", "login_failures", ["at"])


def downgrade() -> None:
    op.drop_index("ix_login_failures_at", "login_failures")
    op.drop_index("ix_login_failures_key", "login_failures")
    op.drop_table("login_failures")
