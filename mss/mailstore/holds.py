"""Legal hold of a mailbox (issue 16, ``mss mailbox hold`` / ``release``).

A held mailbox keeps every message it holds: no IMAP EXPUNGE (nor the implicit one of
CLOSE), no MOVE of its messages to another mailbox, no DELETE of a folder holding
messages, no retention, no deletion of the mailbox nor shredding of its key, until the
hold is released. What stays allowed changes nothing that a court may ask for: reading,
flags (\\Deleted included: a flagged message stays), COPY, APPEND, MOVE between its own
folders, RENAME.

The check is made in the writer's transaction, after the writer's lock
(:func:`mss.mailstore.state.lock`), and :func:`hold` takes that lock before setting the
hold: a hold acknowledged to the operator is never followed by a deletion begun before it
(the two transactions serialise on the lock, on every node).
"""

from __future__ import annotations

import time

from sqlalchemy import Connection, bindparam, select, update

from mss import db
from mss.mailstore.errors import HoldError, StoreError
from mss.mailstore.state import lock

_HELD = select(db.mailboxes.c.held_at).where(db.mailboxes.c.id == bindparam("mailbox"))
_FOLDER_HELD = (select(db.mailboxes.c.held_at)
                .join(db.folders, db.folders.c.mailbox_id == db.mailboxes.c.id)
                .where(db.folders.c.id == bindparam("folder")))

# what an IMAP client is told (RFC 5530 §3 CANNOT: the operation cannot succeed in this
# state; the client should not retry it); the same text for every refused operation
REFUSAL = "Mailbox is under legal hold: its messages cannot be removed"


def is_held(conn: Connection, mailbox_id: int) -> bool:
    return conn.execute(_HELD, {"mailbox": mailbox_id}).scalar() is not None


def refuse_if_held(conn: Connection, mailbox_id: int) -> None:
    """In the writer's transaction, after its lock: HoldError when the mailbox is held."""
    if is_held(conn, mailbox_id):
        raise HoldError(REFUSAL, "CANNOT")


def refuse_if_folder_held(conn: Connection, folder_id: int) -> None:
    """The same for the mailbox holding folder *folder_id*."""
    if conn.execute(_FOLDER_HELD, {"folder": folder_id}).scalar() is not None:
        raise HoldError(REFUSAL, "CANNOT")


def hold(conn: Connection, mailbox_id: int, address: str, reason: str | None,
         now: float | None = None) -> float:
    """Put the mailbox under legal hold (the time it took effect); StoreError if it is
    already held (the first hold's time and reason stay)."""
    lock(conn)  # after any deletion in flight, before any that follows
    held_at = conn.execute(_HELD, {"mailbox": mailbox_id}).scalar()
    if held_at is not None:
        raise StoreError(f"mailbox {address} is already under legal hold (mss mailbox show "
                         f"{address})")
    at = time.time() if now is None else now
    conn.execute(update(db.mailboxes).where(db.mailboxes.c.id == mailbox_id)
                 .values(held_at=at, hold_reason=reason or None))
    return at


def release(conn: Connection, mailbox_id: int, address: str) -> None:
    """End the mailbox's legal hold; StoreError if it is not held."""
    lock(conn)
    if conn.execute(_HELD, {"mailbox": mailbox_id}).scalar() is None:
        raise StoreError(f"mailbox {address} is not under legal hold")
    conn.execute(update(db.mailboxes).where(db.mailboxes.c.id == mailbox_id)
                 .values(held_at=None, hold_reason=None))
