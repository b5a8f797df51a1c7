"""Baseline: the schema of mss/db.py before migrations existed (main 0b40d7e).

Written out table by table, frozen: later changes are later revisions, never edits here.

A database made by an older mss (``metadata.create_all`` plus ``ADD COLUMN`` of the nullable
columns it lacked, and no ``alembic_version`` table) is adopted by this same revision: a
table it already holds is completed (the nullable columns and the indexes it lacks are
added, no row is touched) instead of created, and Alembic then stamps it ``0001``.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


class _Existing:
    """What the database already holds (nothing, on a new database)."""

    def __init__(self) -> None:
        self.inspector = sa.inspect(op.get_bind())
        self.tables = set(self.inspector.get_table_names())
        self.created: set[str] = set()

    def table(self, name: str, *elements: sa.Column[Any] | sa.UniqueConstraint) -> None:
        """``op.create_table``, or on an older database the nullable columns it lacks."""
        if name not in self.tables:
            op.create_table(name, *elements)
            self.created.add(name)
            return
        present = {c["name"] for c in self.inspector.get_columns(name)}
        for column in elements:
            if not isinstance(column, sa.Column) or column.name in present:
                continue
            if not column.nullable:  # older versions only ever added nullable columns
                raise RuntimeError(f"table {name} lacks the NOT NULL column {column.name}: "
                                   "not a database made by mss")
            op.add_column(name, column)

    def index(self, name: str, table: str, columns: list[str], *, unique: bool = False
              ) -> None:
        """``op.create_index`` unless an older database has it already."""
        if table in self.created or name not in {
                i["name"] for i in self.inspector.get_indexes(table)}:
            op.create_index(name, table, columns, unique=unique)


def upgrade() -> None:
    have = _Existing()
    have.table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    have.table(
        "domains",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("relay_to", sa.String(300)),
    )
    have.table(
        "mailboxes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("address", sa.String(320), nullable=False, unique=True),
        sa.Column("domain_id", sa.Integer(), sa.ForeignKey("domains.id"), nullable=False),
        sa.Column("type", sa.String(3), nullable=False),
        sa.Column("rpps", sa.String(11)),
        sa.Column("finess", sa.String(9)),
        sa.Column("password_hash", sa.String(255)),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("disabled_at", sa.Float()),
        sa.Column("liste_rouge", sa.Boolean(), nullable=False),
        sa.Column("last_uidvalidity", sa.Integer()),
    )
    have.table(
        "master_keys",
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("check_value", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    have.table(
        "keyring",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("master_version", sa.Integer(), sa.ForeignKey("master_keys.version"),
                  nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("rewrapped_at", sa.Float()),
    )
    have.table(
        "folders",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("mailbox_id", sa.Integer(), sa.ForeignKey("mailboxes.id"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("special_use", sa.String(16)),
        sa.Column("uidvalidity", sa.Integer(), nullable=False),
        sa.Column("uidnext", sa.Integer(), nullable=False),
        sa.Column("highestmodseq", sa.Integer(), nullable=False),
        sa.Column("subscribed", sa.Boolean(), nullable=False),
        sa.Column("recent_uid", sa.Integer()),
        sa.Column("deleted_at", sa.Float()),
        sa.Column("name_sealed", sa.LargeBinary()),
        sa.UniqueConstraint("mailbox_id", "name"),
    )
    have.table(
        "mailbox_grants",
        sa.Column("mailbox_id", sa.Integer(), sa.ForeignKey("mailboxes.id"), primary_key=True),
        sa.Column("grantee_id", sa.Integer(), sa.ForeignKey("mailboxes.id"), primary_key=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    have.table(
        "messages",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("mailbox_id", sa.Integer(), sa.ForeignKey("mailboxes.id"), nullable=False),
        sa.Column("folder_id", sa.Integer(), sa.ForeignKey("folders.id"), nullable=False),
        sa.Column("uid", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("internal_date", sa.Float(), nullable=False),
        sa.Column("flags", sa.Text(), nullable=False),
        sa.Column("modseq", sa.Integer(), nullable=False),
        sa.Column("key_blob", sa.LargeBinary(), nullable=False),
        sa.Column("body_blob", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("folder_id", "uid"),
    )
    have.index("ix_messages_folder_meta", "messages",
               ["folder_id", "uid", "id", "flags", "internal_date", "size", "modseq"])
    have.table(
        "outbound_queue",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("mail_from", sa.String(320), nullable=False),
        sa.Column("rcpt", sa.String(320), nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(998)),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("lease_until", sa.Float()),
        sa.Column("last_error", sa.Text()),
        sa.Column("key_blob", sa.LargeBinary(), nullable=False),
        sa.Column("body_blob", sa.LargeBinary(), nullable=False),
        sa.Column("lease_owner", sa.String(32)),
        sa.Column("updated_at", sa.Float()),
        sa.Column("remote_reply", sa.Text()),
        sa.Column("patient", sa.String(40)),
    )
    have.index("ix_queue_due", "outbound_queue", ["status", "next_attempt_at"])
    have.table(
        "whitelist_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("generated_at", sa.String(40)),
        sa.Column("imported_at", sa.Float(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("domains", sa.Integer(), nullable=False),
        sa.Column("warnings", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
    )
    have.table(
        "whitelist_sources",
        sa.Column("url", sa.String(2048), primary_key=True),
        sa.Column("etag", sa.String(256)),
        sa.Column("last_modified", sa.String(64)),
        sa.Column("checked_at", sa.Float()),
        sa.Column("changed_at", sa.Float()),
        sa.Column("last_error", sa.Text()),
    )
    have.table(
        "whitelist_entries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("whitelist_versions.id"),
                  nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("dn", sa.Text(), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("responsable_contact", sa.Text()),
        sa.Column("support_contact", sa.Text()),
        sa.Column("updated_at", sa.String(40)),
    )
    have.index("ix_whitelist_entries_version", "whitelist_entries", ["version_id"])
    have.table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ts", sa.String(32), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(320)),
        sa.Column("remote_addr", sa.String(64)),
        sa.Column("session", sa.String(32)),
        sa.Column("listener", sa.String(16)),
        sa.Column("message_id", sa.String(998)),
        sa.Column("mail_from", sa.String(320)),
        sa.Column("rcpt", sa.String(320)),
        sa.Column("mailbox", sa.String(320)),
        sa.Column("reason", sa.Text()),
        sa.Column("whitelist_version", sa.Integer()),
        sa.Column("detail", sa.Text()),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    have.index("ix_audit_mailbox", "audit_log", ["mailbox"])
    have.index("ix_audit_ts", "audit_log", ["ts"])
    have.table(
        "audit_ship_cursor",
        sa.Column("destination", sa.String(64), primary_key=True),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.Column("last_success_at", sa.Float()),
        sa.Column("last_error", sa.Text()),
        sa.Column("last_error_at", sa.Float()),
    )
    have.table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("seq", sa.Integer()),
        sa.Column("record_count", sa.Integer()),
        sa.Column("prev_hash", sa.String(64)),
        sa.Column("hash", sa.String(64)),
    )
    have.index("ux_audit_checkpoint_seq", "audit_checkpoints", ["seq"], unique=True)
    have.table(
        "relays",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("cert_dn", sa.Text()),
        sa.Column("password_hash", sa.String(255)),
        sa.Column("domains", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    for name in ("directory_entries", "directory_staging"):
        have.table(
            name,
            sa.Column("dn", sa.Text(), primary_key=True),
            sa.Column("mail", sa.String(320)),
            sa.Column("type", sa.String(8)),
            sa.Column("id_nat", sa.String(32)),
            sa.Column("display_name", sa.String(256)),
            sa.Column("given_name", sa.String(128)),
            sa.Column("surname", sa.String(128)),
            sa.Column("profession", sa.String(128)),
            sa.Column("structure_id", sa.String(32)),
            sa.Column("service", sa.String(256)),
            sa.Column("city", sa.String(128)),
            sa.Column("liste_rouge", sa.Boolean(), nullable=False),
            sa.Column("digest", sa.String(32), nullable=False),
            *([sa.Column("updated_at", sa.Float(), nullable=False)]
              if name == "directory_entries" else []),
        )
    have.index("ix_directory_mail", "directory_entries", ["mail"], unique=True)
    have.index("ix_directory_staging_mail", "directory_staging", ["mail"])
    have.table(
        "directory_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("server", sa.Text()),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("high_water", sa.String(32)),
        sa.Column("error", sa.Text()),
    )


def downgrade() -> None:
    for table in ("directory_runs", "directory_staging", "directory_entries", "relays",
                  "audit_checkpoints", "audit_ship_cursor", "audit_log", "whitelist_entries",
                  "whitelist_sources", "whitelist_versions", "outbound_queue", "messages",
                  "mailbox_grants", "folders", "keyring", "master_keys", "mailboxes",
                  "domains", "meta"):
        op.drop_table(table)  # their indexes go with them
