"""Delivery status notifications (issue 18 part 1): the DSN parameters of each queued
recipient (RFC 3461: NOTIFY, ORCPT, and the transaction's RET, ENVID), kept through the
queue and passed to DSN-capable peers; when its last "delayed" report was sent.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_COLUMNS = (("dsn_notify", sa.String(32)), ("dsn_orcpt", sa.String(512)),
            ("dsn_ret", sa.String(4)), ("dsn_envid", sa.String(128)),
            ("delay_reported_at", sa.Float()))


def upgrade() -> None:
    with op.batch_alter_table("outbound_queue") as table:
        for name, kind in _COLUMNS:
            table.add_column(sa.Column(name, kind))


def downgrade() -> None:
    with op.batch_alter_table("outbound_queue") as table:
        for name, _ in reversed(_COLUMNS):
            table.drop_column(name)
