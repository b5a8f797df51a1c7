"""IMAP counters as bigint on PostgreSQL: UIDVALIDITY and UIDs take 32-bit unsigned values
(RFC 3501 §9 nz-number), MODSEQs 63-bit ones (RFC 7162 §7), past PostgreSQL's signed 32-bit
integer. SQLite's INTEGER is 64-bit: nothing to do there.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = (("mailboxes", "last_uidvalidity", True), ("folders", "uidvalidity", False),
           ("folders", "uidnext", False), ("folders", "highestmodseq", False),
           ("folders", "recent_uid", True), ("messages", "uid", False),
           ("messages", "modseq", False))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, nullable in COLUMNS:  # indexes on them are rebuilt by the ALTER
        op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer(),
                        existing_nullable=nullable)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, nullable in COLUMNS:
        op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger(),
                        existing_nullable=nullable)
