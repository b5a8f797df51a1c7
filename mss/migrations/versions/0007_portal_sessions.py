"""Portal sessions in the database (every worker and node serving the portal sees them).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("public_id", sa.String(32), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("issuer", sa.String(64), nullable=False),
        sa.Column("national_id", sa.String(128)),
        sa.Column("subject", sa.String(255)),
        sa.Column("state", sa.String(64)),
        sa.Column("nonce", sa.String(64)),
        sa.Column("verifier", sa.String(128)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
    )
    op.create_index("ix_portal_sessions_last_seen", "portal_sessions", ["last_seen"])


def downgrade() -> None:
    op.drop_index("ix_portal_sessions_last_seen", "portal_sessions")
    op.drop_table("portal_sessions")
