"""Local blocks of peer operators (issue 16): a domain or a certificate DN refused on the
MX and not delivered to, on top of the national whitelist (mss peer block).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "peer_blocks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("domain", sa.String(255)),
        sa.Column("cert_dn", sa.Text()),
        sa.Column("dn_key", sa.String(1024)),
        sa.Column("until", sa.Float()),
        sa.Column("reason", sa.Text()),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(320), nullable=False),
        sa.Column("ended_at", sa.Float()),
        sa.Column("ended_by", sa.String(320)),
    )
    op.create_index("ix_peer_blocks_domain", "peer_blocks", ["domain"])
    op.create_index("ix_peer_blocks_dn_key", "peer_blocks", ["dn_key"])


def downgrade() -> None:
    op.drop_index("ix_peer_blocks_dn_key", table_name="peer_blocks")
    op.drop_index("ix_peer_blocks_domain", table_name="peer_blocks")
    op.drop_table("peer_blocks")
