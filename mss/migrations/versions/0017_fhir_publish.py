"""What 'mss directory publish --fhir' published (issue 19, FHIR Patch publication).

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "directory_fhir_published",
        sa.Column("mail", sa.String(320), primary_key=True),
        sa.Column("resource_type", sa.String(32), nullable=False),
        sa.Column("identifier", sa.String(128), nullable=False),
        sa.Column("mailbox_type", sa.String(8), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("published_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("directory_fhir_published")
