"""APP mailboxes bound to client certificates (SASL EXTERNAL, issue 15): one row per subject
DN, the DN kept as given and as its canonical key (trustspace/dn.py), unique.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mailbox_certificates",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("mailbox_id", sa.Integer, sa.ForeignKey("mailboxes.id"), nullable=False),
        sa.Column("cert_dn", sa.Text, nullable=False),
        sa.Column("dn_key", sa.String(1024), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ux_mailbox_certificates_dn", "mailbox_certificates", ["dn_key"],
                    unique=True)
    op.create_index("ix_mailbox_certificates_mailbox", "mailbox_certificates", ["mailbox_id"])
    # token logins look mailboxes up by the RPPS of a national id
    op.create_index("ix_mailboxes_rpps", "mailboxes", ["rpps"])


def downgrade() -> None:
    op.drop_index("ix_mailboxes_rpps", "mailboxes")
    op.drop_index("ix_mailbox_certificates_mailbox", "mailbox_certificates")
    op.drop_index("ux_mailbox_certificates_dn", "mailbox_certificates")
    op.drop_table("mailbox_certificates")
