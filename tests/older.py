"""Databases as an older mss left them: the tests of upgrades start from these.

main 0b40d7e (before migrations) had no ``alembic_version`` table and none of what the
revisions after the baseline add; its master key version 1 was the key file's line 1 and
the keyring rows were wrapped by it directly.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select, text, update

from mss import crypto, db, schema
from mss.app import open_app
from tests.node import Node

# what the revisions after 0001 add (tests/test_migrations.py checks this list is whole)
LATER_TABLES = ("key_shreds", "login_failures", "app_passwords", "mailbox_certificates",
                "portal_sessions", "send_counters", "peer_blocks", "operators",
                "serving_processes", "client_sessions", "queue_holds",
                "directory_fhir_published", "directory_seen")  # issue 19
LATER_COLUMNS = (("master_keys", "wrapped"), ("master_keys", "kek"),
                 *(("mailboxes", c) for c in ("suspended_at", "delete_after", "held_at",
                                              "hold_reason", "sessions_ended_at")),
                 ("domains", "suspended_at"), ("mailbox_grants", "can_send"),
                 ("messages", "saved_at"), ("whitelist_versions", "withdrawn_at"),
                 ("directory_runs", "source"),  # issue 19 (dirext branch)
                 *(("outbound_queue", c) for c in ("dsn_notify", "dsn_orcpt", "dsn_ret",
                                                   "dsn_envid", "delay_reported_at",
                                                   "held_for")))
LATER_INDEXES = ("ix_mailboxes_rpps", "ix_messages_folder_saved")  # on tables of the baseline


def as_made_by_main(node: Node) -> None:
    """Bring *node*'s database back to main 0b40d7e's format (the mailbox keys themselves,
    hence the mail, unchanged)."""
    file_key = crypto.FileKeyProvider(node.data_dir / "keys" / "master.key").key(1)
    app = open_app(node.config)
    try:
        with app.engine.begin() as conn:
            rows = conn.execute(select(db.keyring.c.key_id)).all()
            raws = {key_id: app.keyring._unwrap_key(key_id, conn) for (key_id,) in rows}
            for key_id, raw in raws.items():
                conn.execute(update(db.keyring).where(db.keyring.c.key_id == key_id).values(
                    master_version=1, wrapped=crypto.seal_bytes(AESGCM(file_key), raw,
                                              b"mss:keyring:v1|" + key_id.encode())))
            conn.execute(delete(db.master_keys).where(db.master_keys.c.version != 1))
            conn.execute(update(db.master_keys).values(
                check_value=crypto.check_value(file_key), wrapped=None, kek=None))
        with app.engine.begin() as conn:
            for index in LATER_INDEXES:
                conn.execute(text(f"DROP INDEX {index}"))
            for table in (*LATER_TABLES, schema.VERSION_TABLE):
                conn.execute(text(f"DROP TABLE {table}"))
            for table, column in LATER_COLUMNS:
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    finally:
        app.close()
