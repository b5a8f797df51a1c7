"""Folders of a mailbox: reads, counts, and the writes of the folder tree (create, delete,
rename, subscribe). Folder names are content, sealed at rest (:mod:`mss.mailstore.names`)
under the mailbox key: the functions that read or write a name take the caller's keyring
(its :class:`mss.app.App`'s). A folder's message state only moves through
:func:`mss.mailstore.state.bump`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.schema import CreateIndex

from audit.journal import AuditRecord, append
from mss import crypto, db
from mss.mailstore import names
from mss.mailstore.errors import BackendError, StoreError
from mss.mailstore.holds import refuse_if_held
from mss.mailstore.messages import move_messages
from mss.mailstore.names import DEFAULT_FOLDERS
from mss.mailstore.state import LIVE as _LIVE
from mss.mailstore.state import bump, lock


@dataclass(frozen=True)
class Folder:
    id: int
    mailbox_id: int
    name: str  # Unicode, "/" delimited
    special_use: str | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    subscribed: bool
    recent_uid: int = 0  # RFC 3501 §2.3.2: UIDs above it are \\Recent for the next claimer


def _folder(conn: Connection, keyring: crypto.Keyring, row: object) -> Folder:
    m = row._mapping  # type: ignore[attr-defined]
    return Folder(m["id"], m["mailbox_id"], names.display(conn, keyring, m), m["special_use"],
                  m["uidvalidity"], m["uidnext"], m["highestmodseq"], bool(m["subscribed"]),
                  m["recent_uid"] or 0)


_FOLDERS_OF = select(db.folders).where(and_(db.folders.c.mailbox_id == bindparam("mailbox"),
                                            _LIVE))


_FOLDER_BY_ID = select(db.folders).where(and_(db.folders.c.id == bindparam("folder"), _LIVE))


_TOMBSTONES = select(db.folders).where(and_(
    db.folders.c.mailbox_id == bindparam("mailbox"), db.folders.c.deleted_at.is_not(None)))


_DEFAULTS_PRESENT = select(db.folders.c.name).where(and_(
    db.folders.c.mailbox_id == bindparam("mailbox"), _LIVE,
    db.folders.c.name.in_([name for name, _ in DEFAULT_FOLDERS])))


_FOLDER_BY_NAME = _FOLDERS_OF.where(db.folders.c.name == bindparam("name"))


_FOLDER_STATE = select(db.folders.c.mailbox_id, db.folders.c.uidvalidity,
                       db.folders.c.uidnext, db.folders.c.highestmodseq,
                       db.folders.c.recent_uid).where(
    and_(db.folders.c.id == bindparam("folder"), _LIVE))


def folders(conn: Connection, keyring: crypto.Keyring, mailbox_id: int) -> list[Folder]:
    return [_folder(conn, keyring, r) for r in conn.execute(_FOLDERS_OF, {"mailbox": mailbox_id})]


def folder_by_name(conn: Connection, keyring: crypto.Keyring, mailbox_id: int, name: str
                   ) -> Folder | None:
    if name.upper() == "INBOX":  # RFC 3501 §5.1: INBOX in any case
        name = "INBOX"
    row = conn.execute(_FOLDER_BY_NAME, {"mailbox": mailbox_id,  # the keyed lookup value
                                         "name": names.lookup(conn, keyring, mailbox_id, name)}
                       ).first()
    return _folder(conn, keyring, row) if row is not None else None


def deleted_subscriptions(conn: Connection, keyring: crypto.Keyring, mailbox_id: int
                          ) -> dict[str, int]:
    """Names of deleted folders still subscribed (RFC 3501 §6.3.6) -> their row id."""
    return {names.display(conn, keyring, r._mapping): r.id
            for r in conn.execute(_TOMBSTONES, {"mailbox": mailbox_id})}


def folder_by_id(conn: Connection, keyring: crypto.Keyring, folder_id: int) -> Folder | None:
    row = conn.execute(_FOLDER_BY_ID, {"folder": folder_id}).first()
    return _folder(conn, keyring, row) if row else None


def folder_state(conn: Connection, folder: Folder) -> tuple[int, int, int] | None:
    """(uidnext, highestmodseq, recent_uid) of *folder*; None when it is gone, also when
    its row id now holds another folder (deleted and recreated: a new UIDVALIDITY)."""
    row = conn.execute(_FOLDER_STATE, {"folder": folder.id}).first()
    if row is None or (row.mailbox_id, row.uidvalidity) != (folder.mailbox_id,
                                                            folder.uidvalidity):
        return None
    return row.uidnext, row.highestmodseq, row.recent_uid or 0


def ensure_indexes(engine: Engine) -> None:
    """Create the IMAP covering index on databases created before it existed."""
    with engine.begin() as conn:  # IF NOT EXISTS: several worker processes start at once
        conn.execute(CreateIndex(db.IMAP_FOLDER_INDEX, if_not_exists=True))


# flags are stored space-separated; keywords never start with a backslash (RFC 3501 §9).
# An explicit ESCAPE: PostgreSQL's LIKE takes the backslash as its default escape
# (PostgreSQL 15 §9.7.1), which made the pattern "% Seen %"; SQLite has no default
_SEEN = (" " + db.messages.c.flags + " ").like("% \\Seen %", escape="/")


_COUNTS = select(func.count(), func.coalesce(func.sum(case((_SEEN, 0), else_=1)), 0),
                 func.coalesce(func.sum(case((db.messages.c.uid > bindparam("recent"), 1),
                                             else_=0)), 0)).where(
    db.messages.c.folder_id == bindparam("folder"))


def folder_counts(conn: Connection, folder: Folder) -> tuple[int, int, int]:
    """(messages, unseen, recent) for STATUS, counted by SQLite on the covering index;
    recent: not yet claimed by a session (RFC 3501 §2.3.2)."""
    messages, unseen, recent = conn.execute(_COUNTS, {"folder": folder.id,
                                                      "recent": folder.recent_uid}).one()
    return int(messages), int(unseen), int(recent)


def claim_recent(conn: Connection, folder_id: int, upto: int) -> int:
    """In the writer's transaction: this session is the first to see the folder's UIDs up
    to *upto* (RFC 3501 §2.3.2: \\Recent for exactly one session); returns the UID
    claimed before, the session's recent messages are those above it (and <= *upto*).
    The row is read FOR UPDATE after the writer's lock: two nodes' sessions selecting the
    folder at once never both claim one UID."""
    lock(conn)
    before = conn.execute(select(db.folders.c.recent_uid).where(db.folders.c.id == folder_id)
                          .with_for_update()).scalar() or 0
    if upto > before:
        conn.execute(update(db.folders).where(db.folders.c.id == folder_id)
                     .values(recent_uid=upto))
    return int(before)


def folder_size(conn: Connection, folder_id: int) -> int:
    return int(conn.execute(select(func.coalesce(func.sum(db.messages.c.size), 0))
                            .where(db.messages.c.folder_id == folder_id)).scalar() or 0)


def next_uidvalidity(conn: Connection, mailbox_id: int, count: int = 1) -> int:
    """The first of *count* new IMAP UIDVALIDITY values for folders of a mailbox.

    RFC 3501 §2.3.1.1: a (UIDVALIDITY, UID) pair never names two messages, so a folder
    deleted and recreated (even within the same second) must get a higher value. Values
    come from a per-mailbox counter (``mailboxes.last_uidvalidity``), above the clock and
    every value its folders hold (databases from before the counter), each used once: the
    counter is read FOR UPDATE after the writer's lock (two nodes never take one value)."""
    lock(conn)
    last = conn.execute(select(db.mailboxes.c.last_uidvalidity)
                        .where(db.mailboxes.c.id == mailbox_id).with_for_update()
                        ).scalar() or 0
    held = conn.execute(select(func.max(db.folders.c.uidvalidity))
                        .where(db.folders.c.mailbox_id == mailbox_id)).scalar() or 0
    first = max(int(time.time()), last + 1, held + 1)
    if first + count - 1 > 0xFFFFFFFF:  # nz-number (RFC 3501 §9): 32 bits
        raise StoreError("UIDVALIDITY values of this mailbox are exhausted")
    conn.execute(update(db.mailboxes).where(db.mailboxes.c.id == mailbox_id)
                 .values(last_uidvalidity=first + count - 1))
    return first


def ensure_default_folders(conn: Connection, keyring: crypto.Keyring, mailbox_id: int
                           ) -> None:
    """Create any of INBOX, Sent, Drafts, Trash, Junk, Archive a mailbox lacks: the one
    place default folders are inserted, at ``mss mailbox add`` and at each IMAP login
    (mailboxes created before a folder was added to DEFAULT_FOLDERS get it lazily)."""
    # the hot path of a login: one read of the default names (stored in clear,
    # mailstore.names), nothing decrypted, no lock
    if len(conn.execute(_DEFAULTS_PRESENT, {"mailbox": mailbox_id}).all()) == \
            len(DEFAULT_FOLDERS):
        return
    lock(conn)  # another node's login may be creating them: read again under the lock
    present = {f.name for f in folders(conn, keyring, mailbox_id)}
    missing = [(n, u) for n, u in DEFAULT_FOLDERS if n not in present]
    for name, use in missing:
        create_folder(conn, keyring, mailbox_id, name, [], use)


def _uidvalidity(conn: Connection, mailbox_id: int) -> int:
    try:
        return next_uidvalidity(conn, mailbox_id)
    except StoreError as exc:
        raise BackendError(str(exc), "LIMIT") from None


def create_folder(conn: Connection, keyring: crypto.Keyring, mailbox_id: int, name: str,
                  audit: list[AuditRecord], special_use: str | None = None) -> None:
    lock(conn)  # before the reads the change depends on (several nodes)
    if folder_by_name(conn, keyring, mailbox_id, name) is not None:
        raise BackendError("Mailbox already exists", "ALREADYEXISTS")
    # RFC 3501 §2.3.1.1: never a UIDVALIDITY a deleted folder of that name may have had
    fresh = {"special_use": special_use, "uidvalidity": _uidvalidity(conn, mailbox_id),
             "uidnext": 1, "highestmodseq": 1, "recent_uid": None, "deleted_at": None}
    kept = deleted_subscriptions(conn, keyring, mailbox_id).get(name)
    if kept is not None:  # a deleted folder's subscription: the new folder takes its row
        conn.execute(update(db.folders).where(db.folders.c.id == kept).values(**fresh))
        folder_id = kept
    else:
        found = conn.execute(insert(db.folders).values(
            mailbox_id=mailbox_id, **names.columns(conn, keyring, mailbox_id, name),
            subscribed=True, **fresh).returning(db.folders.c.id))
        folder_id = found.scalar_one()
    _name_folder(audit, folder_id)
    append(conn, audit)


def delete_folder(conn: Connection, keyring: crypto.Keyring, mailbox_id: int, name: str,
                  audit: list[AuditRecord]) -> tuple[int, int]:
    """Delete a folder and its messages; returns its (row id, UIDVALIDITY). A subscribed
    folder's row stays as its subscription (RFC 3501 §6.3.6: DELETE does not unsubscribe)."""
    lock(conn)  # before the reads the change depends on (several nodes)
    folder = folder_by_name(conn, keyring, mailbox_id, name)
    if folder is None:
        raise BackendError("No such mailbox", "NONEXISTENT")
    if folder.name == "INBOX":
        raise BackendError("INBOX cannot be deleted", "CANNOT")
    if any(f.name.startswith(folder.name + "/") for f in folders(conn, keyring, mailbox_id)):
        # RFC 3501 §6.3.4: a folder with inferiors would keep \Noselect; refuse instead
        raise BackendError("Mailbox has children, delete them first", "INUSE")
    if conn.execute(select(db.messages.c.id).where(db.messages.c.folder_id == folder.id)
                    .limit(1)).first() is not None:
        refuse_if_held(conn, mailbox_id)  # legal hold: an empty folder may still go
    bump(conn, folder.id)  # its messages go: no snapshot of them may be served again
    conn.execute(delete(db.messages).where(db.messages.c.folder_id == folder.id))
    if folder.subscribed:
        conn.execute(update(db.folders).where(db.folders.c.id == folder.id)
                     .values(deleted_at=time.time()))
    else:
        conn.execute(delete(db.folders).where(db.folders.c.id == folder.id))
    _name_folder(audit, folder.id)
    append(conn, audit)
    return folder.id, folder.uidvalidity


def rename_folder(conn: Connection, keyring: crypto.Keyring, mailbox_id: int, old: str,
                  new: str, audit: list[AuditRecord]) -> None:
    lock(conn)  # before the reads the change depends on (several nodes)
    folder = folder_by_name(conn, keyring, mailbox_id, old)
    if folder is None:
        raise BackendError("No such mailbox", "NONEXISTENT")
    if folder_by_name(conn, keyring, mailbox_id, new) is not None:
        raise BackendError("Mailbox already exists", "ALREADYEXISTS")
    if folder.name == "INBOX":
        # RFC 3501 §6.3.5: renaming INBOX moves its messages to a new folder, INBOX stays
        create_folder(conn, keyring, mailbox_id, new, [])
        dest = folder_by_name(conn, keyring, mailbox_id, new)
        assert dest is not None
        moved = [(u, i) for u, i in conn.execute(
            select(db.messages.c.uid, db.messages.c.id)
            .where(db.messages.c.folder_id == folder.id).order_by(db.messages.c.uid))]
        _name_folder(audit, folder.id)
        move_messages(conn, folder.id, dest.id, moved, audit)
        return
    kept = deleted_subscriptions(conn, keyring, mailbox_id)
    for child in folders(conn, keyring, mailbox_id):
        if child.name == folder.name or child.name.startswith(folder.name + "/"):
            name = new + child.name[len(folder.name):]
            values: dict[str, object] = dict(names.columns(conn, keyring, mailbox_id, name))
            if name in kept:  # a deleted folder's subscription: the name stays subscribed
                conn.execute(delete(db.folders).where(db.folders.c.id == kept[name]))
                values["subscribed"] = True
            conn.execute(update(db.folders).where(db.folders.c.id == child.id)
                         .values(**values))
    _name_folder(audit, folder.id)
    append(conn, audit)


def _name_folder(audit: list[AuditRecord], folder_id: int) -> None:
    """Audit records name a folder by id: its name is content (mss/mailstore/names.py)."""
    for record in audit:
        record.detail.setdefault("folder_id", folder_id)


def set_subscribed(conn: Connection, keyring: crypto.Keyring, mailbox_id: int, name: str,
                   value: bool) -> None:
    lock(conn)  # before the reads the change depends on (several nodes)
    folder = folder_by_name(conn, keyring, mailbox_id, name)
    if folder is None:
        kept = deleted_subscriptions(conn, keyring, mailbox_id).get(name)
        if kept is not None and not value:  # RFC 3501 §6.3.7: a deleted folder's name too
            conn.execute(delete(db.folders).where(db.folders.c.id == kept))
            return
        raise BackendError("No such mailbox", "NONEXISTENT")
    conn.execute(update(db.folders).where(db.folders.c.id == folder.id)
                 .values(subscribed=value))
