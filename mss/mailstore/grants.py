"""Shared mailboxes: an ORG or APP mailbox granted to named users (``mss mailbox grant``).

A grantee sees the shared mailbox's folders under ``Shared/<address>/`` (docs/imap.md);
every access through a grant is audited as ``imap.delegated``. A grant with the send
right (``mss mailbox grant A U --send``, ``can_send``) also lets the grantee submit mail
as the shared mailbox, the message then carrying ``Sender:`` the grantee (RFC 5322
§3.6.2; docs/flow.md "Submission"). Only usable mailboxes (``Mailbox.usable``: not
disabled, suspended or being deleted) are reached through a grant.
"""

from __future__ import annotations

import time

from sqlalchemy import Connection, and_, delete, insert, select, update

from mss import db
from mss.mailstore.errors import StoreError
from mss.mailstore.mailboxes import Mailbox, mailbox_of, require_mailbox


def grant(conn: Connection, address: str, user: str, send: bool = False
          ) -> tuple[Mailbox, Mailbox]:
    """Grant *address* (ORG/APP) to *user*, with the send right when *send*. An existing
    grant takes the rights asked for (the send right added or withdrawn); asking for the
    rights it already has is refused."""
    shared = require_mailbox(conn, address)
    grantee = require_mailbox(conn, user)
    if shared.type not in ("ORG", "APP", "CAB"):  # CAB: a practice's, shared by its staff
        raise StoreError(f"mailbox {shared.address} is {shared.type}: only ORG, APP and "
                         "CAB mailboxes can be shared")
    if grantee.id == shared.id:
        raise StoreError("a mailbox cannot be granted to itself")
    current = _granted(conn, shared.id, grantee.id)
    if current is not None and current == send:
        raise StoreError(f"{grantee.address} already has access to {shared.address}"
                         + (" with the send right" if send else " (no send right)"))
    if current is not None:
        conn.execute(update(db.mailbox_grants).where(and_(
            db.mailbox_grants.c.mailbox_id == shared.id,
            db.mailbox_grants.c.grantee_id == grantee.id)).values(can_send=send))
        return shared, grantee
    conn.execute(insert(db.mailbox_grants).values(mailbox_id=shared.id, grantee_id=grantee.id,
                                                  created_at=time.time(), can_send=send))
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


def _granted(conn: Connection, mailbox_id: int, grantee_id: int) -> bool | None:
    """None: no grant; else whether it carries the send right."""
    row = conn.execute(select(db.mailbox_grants.c.can_send).where(and_(
        db.mailbox_grants.c.mailbox_id == mailbox_id,
        db.mailbox_grants.c.grantee_id == grantee_id))).first()
    return None if row is None else bool(row.can_send)


_G, _M = db.mailbox_grants, db.mailboxes


def has_grant(conn: Connection, mailbox_id: int, grantee_id: int) -> bool:
    """Access through a grant: granted, and the shared mailbox still usable (as
    ``granted_mailboxes`` lists them)."""
    row = conn.execute(select(_M).join(_G, _M.c.id == _G.c.mailbox_id).where(and_(
        _G.c.mailbox_id == mailbox_id, _G.c.grantee_id == grantee_id))).first()
    return row is not None and mailbox_of(row).usable


def granted_mailboxes(conn: Connection, user_id: int) -> list[Mailbox]:
    """The usable mailboxes granted to *user_id* (not disabled, suspended or being
    deleted), by address."""
    rows = conn.execute(select(_M).join(_G, _M.c.id == _G.c.mailbox_id)
                        .where(_G.c.grantee_id == user_id).order_by(_M.c.address))
    return [m for m in map(mailbox_of, rows) if m.usable]


def send_as(conn: Connection, user_id: int) -> list[Mailbox]:
    """The usable mailboxes *user_id* may send as through a grant with the send right."""
    rows = conn.execute(select(_M).join(_G, _M.c.id == _G.c.mailbox_id)
                        .where(and_(_G.c.grantee_id == user_id, _G.c.can_send.is_(True)))
                        .order_by(_M.c.address))
    return [m for m in map(mailbox_of, rows) if m.usable]

