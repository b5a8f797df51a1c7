"""The session registry (mss sessions list/end) and queue holds (mss queue hold/release),
issue 16.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "serving_processes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("worker", sa.Integer(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "client_sessions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("process_id", sa.String(32), nullable=False),
        sa.Column("protocol", sa.String(8), nullable=False),
        sa.Column("listener", sa.String(32), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("remote_addr", sa.String(64), nullable=False),
        sa.Column("auth_method", sa.String(32), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float()),
    )
    op.create_index("ix_client_sessions_process", "client_sessions",
                    ["process_id", "ended_at"])
    op.create_index("ix_client_sessions_mailbox", "client_sessions", ["mailbox_id"])
    op.create_table(
        "queue_holds",
        sa.Column("domain", sa.String(255), primary_key=True),
        sa.Column("held_at", sa.Float(), nullable=False),
        sa.Column("held_by", sa.String(320), nullable=False),
        sa.Column("reason", sa.Text()),
    )
    with op.batch_alter_table("outbound_queue") as table:
        table.add_column(sa.Column("held_for", sa.Float(), nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("outbound_queue") as table:
        table.drop_column("held_for")
    op.drop_table("queue_holds")
    op.drop_index("ix_client_sessions_mailbox", "client_sessions")
    op.drop_index("ix_client_sessions_process", "client_sessions")
    op.drop_table("client_sessions")
    op.drop_table("serving_processes")
