"""Keys shared by several nodes: master versions held in the database, wrapped by the key
provider's KEK (``master_keys.wrapped``, ``master_keys.kek``), and tombstones of shredded
keys (``key_shreds``) that every node's change watcher reads (mss/crypto.py).

Both columns are nullable: a row of an older database (NULL) is a master key held as a key
file line, which the file provider still opens (docs/keys.md "Upgrading").

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # ADD COLUMN of a nullable column: plain ALTER on SQLite and PostgreSQL alike
    op.add_column("master_keys", sa.Column("wrapped", sa.LargeBinary(), nullable=True))
    op.add_column("master_keys", sa.Column("kek", sa.String(200), nullable=True))
    op.create_table(
        "key_shreds",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("shredded_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("key_shreds")
    with op.batch_alter_table("master_keys") as batch:  # DROP COLUMN: batch mode on SQLite
        batch.drop_column("kek")
        batch.drop_column("wrapped")
