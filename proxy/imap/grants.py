"""Shared mailboxes: an ORG or APP mailbox granted to named users (``mss mailbox grant``).

A grantee sees the shared mailbox's folders under ``Shared/<address>/`` (docs/imap.md);
every access through a grant is audited as ``imap.delegated``.
"""

from __future__ import annotations

import time

from sqlalchemy import Connection, and_, delete, insert, select

from mss import db, store


def grant(conn: Connection, address: str, user: str) -> tuple[store.Mailbox, store.Mailbox]:
    shared = store.require_mailbox(conn, address)
    grantee = store.require_mailbox(conn, user)
    if shared.type not in ("ORG", "APP"):
        raise store.StoreError(f"mailbox {shared.address} is {shared.type}: only ORG and APP "
                               "mailboxes can be shared")
    if grantee.id == shared.id:
        raise store.StoreError("a mailbox cannot be granted to itself")
    if _granted(conn, shared.id, grantee.id):
        raise store.StoreError(f"{grantee.address} already has access to {shared.address}")
    conn.execute(insert(db.mailbox_grants).values(mailbox_id=shared.id, grantee_id=grantee.id,
                                                  created_at=time.time()))
    return shared, grantee


def revoke(conn: Connection, address: str, user: str) -> tuple[store.Mailbox, store.Mailbox]:
    shared = store.require_mailbox(conn, address)
    grantee = store.require_mailbox(conn, user)
    done = conn.execute(delete(db.mailbox_grants).where(and_(
        db.mailbox_grants.c.mailbox_id == shared.id,
        db.mailbox_grants.c.grantee_id == grantee.id))).rowcount
    if not done:
        raise store.StoreError(f"{grantee.address} has no access to {shared.address}")
    return shared, grantee


def _granted(conn: Connection, mailbox_id: int, grantee_id: int) -> bool:
    return conn.execute(select(db.mailbox_grants.c.mailbox_id).where(and_(
        db.mailbox_grants.c.mailbox_id == mailbox_id,
        db.mailbox_grants.c.grantee_id == grantee_id))).first() is not None


def has_grant(conn: Connection, mailbox_id: int, grantee_id: int) -> bool:
    """Access through a grant: granted, and the shared mailbox still enabled (as
    ``names.granted_mailboxes`` lists them)."""
    return conn.execute(select(db.mailbox_grants.c.mailbox_id)
                        .join(db.mailboxes, db.mailboxes.c.id == db.mailbox_grants.c.mailbox_id)
                        .where(and_(db.mailbox_grants.c.mailbox_id == mailbox_id,
                                    db.mailbox_grants.c.grantee_id == grantee_id,
                                    db.mailboxes.c.enabled.is_(True)))).first() is not None
