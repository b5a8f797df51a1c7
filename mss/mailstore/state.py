"""A folder's state, and the one function that moves it.

Every write that changes the messages of a folder or their flags (SMTP delivery, DSN,
APPEND, COPY, MOVE, STORE, EXPUNGE, DELETE of the folder) calls :func:`bump` in its
transaction: the folder's ``highestmodseq`` grows by one (RFC 7162 §3.1.1) and its
``uidnext`` by the number of UIDs given out (RFC 3501 §2.3.1.1). Both only grow, so a
(uidvalidity, uidnext, highestmodseq) read from the folder row names exactly one message
list: IMAP sessions compare it to detect changes, and the snapshot cache
(:mod:`mss.mailstore.snapshots`) serves a cached list only for the key it was taken at.
No other code writes these two columns (tests/test_mailstore.py checks the source).

Several nodes on one PostgreSQL database: the UPDATE ... RETURNING is one atomic statement
(the row stays locked until commit; a concurrent one waits, then re-reads the committed row:
PostgreSQL docs, "13.2.1. Read Committed Isolation Level"), so two nodes never give out the
same UID or modseq. Before it, :func:`lock` takes the audit chain's cluster lock: every write
of a folder also appends audit records, and taking that lock first gives every writing
transaction one lock order (chain, then rows), so two nodes' batches never deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, bindparam, update

from audit.journal import lock_chain
from mss import db
from mss.mailstore.errors import BackendError

# a row with deleted_at set is a deleted folder's subscription only (folders.delete_folder)
LIVE = db.folders.c.deleted_at.is_(None)

_BUMP = (update(db.folders)
         .values(highestmodseq=db.folders.c.highestmodseq + 1,
                 uidnext=db.folders.c.uidnext + bindparam("b_uids"))
         .returning(db.folders.c.id, db.folders.c.uidvalidity, db.folders.c.highestmodseq,
                    db.folders.c.uidnext))
_BUMP_BY_ID = _BUMP.where(and_(db.folders.c.id == bindparam("b_folder"), LIVE))
# SMTP delivery's hot path: INBOX of a mailbox in the same statement
_BUMP_INBOX = _BUMP.where(and_(db.folders.c.mailbox_id == bindparam("b_mailbox"),
                               db.folders.c.name == "INBOX", LIVE))


@dataclass(frozen=True, slots=True)
class Bumped:
    folder_id: int
    uidvalidity: int
    modseq: int  # the folder's new highestmodseq: the modseq of the rows just written
    first_uid: int  # the first of the UIDs given out (the old uidnext)


def lock(conn: Connection) -> None:
    """Take the writer's first lock (the audit chain's) before reading rows to change
    (no-op on SQLite, whose writer transaction is BEGIN IMMEDIATE)."""
    lock_chain(conn)


def bump(conn: Connection, folder_id: int | None, uids: int = 0, *,
         inbox_of: int | None = None) -> Bumped:
    """Move the state of folder *folder_id* (or of the INBOX of mailbox *inbox_of*): next
    modseq, and *uids* new UIDs. Raises BackendError NONEXISTENT when the folder is gone."""
    lock(conn)
    if folder_id is not None:
        row = conn.execute(_BUMP_BY_ID, {"b_folder": folder_id, "b_uids": uids}).first()
    else:
        row = conn.execute(_BUMP_INBOX, {"b_mailbox": inbox_of, "b_uids": uids}).first()
    if row is None:
        raise BackendError("Mailbox no longer exists", "NONEXISTENT")
    return Bumped(row.id, row.uidvalidity, row.highestmodseq, row.uidnext - uids)
