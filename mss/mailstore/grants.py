"""Shared mailboxes: an ORG or APP mailbox granted to named users (``mss mailbox grant``).

A grantee sees the shared mailbox's folders under ``Shared/<address>/`` (docs/imap.md);
every access through a grant is audited as ``imap.delegated``.
"""

from __future__ import annotations

import time

from sqlalchemy import Connection, and_, delete, insert, select

from mss import db
from mss.mailstore.errors import StoreError
from mss.mailstore.mailboxes import Mailbox, mailbox_of, require_mailbox


def grant(conn: Connection, address: str, user: str) -> tuple[Mailbox, Mailbox]:
    shared = require_mailbox(conn, address)
    grantee = require_mailbox(conn, user)
    if shared.type not in ("ORG", "APP", "CAB"):  # CAB: a practice's, shared by its staff
        raise StoreError(f"mailbox {shared.address} is {shared.type}: only ORG, APP and "
                         "CAB mailboxes can be shared")
    if grantee.id == shared.id:
        raise StoreError("a mailbox cannot be granted to itself")
    if _granted(conn, shared.id, grantee.id):
        raise StoreError(f"{grantee.address} already has access to {shared.address}")
    conn.execute(insert(db.mailbox_grants).values(mailbox_id=shared.id, grantee_id=grantee.id,
                                                  created_at=time.time()))
    return shared, grantee


def revoke(conn: Connection, address: str, user: str) -> tuple[Mailbox, Mailbox]:
    shared = require_mailbox(conn, address)
    grantee = require_mailbox(conn, user)
    done = conn.execute(delete(db.mailbox_grants).where(and_(
        db.mailbox_grants.c.mailbox_id == shared.id,
        db.mailbox_grants.c.grantee_id == grantee.id))).rowcount
    if not done:
        raise StoreError(f"{grantee.address} has no access to {shared.address}")
    return shared, grantee


def _granted(conn: Connection, mailbox_id: int, grantee_id: int) -> bool:
    return conn.execute(select(db.mailbox_grants.c.mailbox_id).where(and_(
        db.mailbox_grants.c.mailbox_id == mailbox_id,
        db.mailbox_grants.c.grantee_id == grantee_id))).first() is not None


def has_grant(conn: Connection, mailbox_id: int, grantee_id: int) -> bool:
    """Access through a grant: granted, and the shared mailbox still enabled (as
    ``granted_mailboxes`` lists them)."""
    return conn.execute(select(db.mailbox_grants.c.mailbox_id)
                        .join(db.mailboxes, db.mailboxes.c.id == db.mailbox_grants.c.mailbox_id)
                        .where(and_(db.mailbox_grants.c.mailbox_id == mailbox_id,
                                    db.mailbox_grants.c.grantee_id == grantee_id,
                                    db.mailboxes.c.enabled.is_(True)))).first() is not None


def granted_mailboxes(conn: Connection, user_id: int) -> list[Mailbox]:
    """The enabled mailboxes granted to *user_id*."""
    ids = list(conn.execute(select(db.mailbox_grants.c.mailbox_id)
                            .where(db.mailbox_grants.c.grantee_id == user_id)).scalars())
    if not ids:
        return []
    rows = conn.execute(select(db.mailboxes).where(db.mailboxes.c.id.in_(ids)))
    return [mailbox_of(r) for r in rows if r.enabled]
