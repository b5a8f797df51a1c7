"""The store side of IMAP: folders and messages over the SQLAlchemy tables of :mod:`mss.db`.

Reads are plain functions of a reader connection; writes are functions of the group
committer's connection (``await committer.run(lambda conn: ...)``) and take the audit records
to append in the same transaction. Message bytes are decrypted in memory only
(:func:`open_messages`); nothing plaintext is written anywhere.

Every change to a folder's messages (new message, flags, expunge, move) increments the
folder's ``highestmodseq`` (RFC 7162 §3.1.1): sessions compare it to detect changes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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
from mss import crypto, db, folder_names, store

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


class BackendError(Exception):
    """A refused store operation; *code* is the IMAP response code (without brackets)."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.code = code


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


@dataclass(frozen=True, slots=True)
class Row:
    """One message as a session holds it (no content); immutable, so that folder snapshots
    are shared between sessions (a change replaces the row, see ``Selected.update``)."""

    uid: int
    id: str  # store id (bound into the ciphertext)
    flags: tuple[str, ...]
    internal_date: float
    size: int
    modseq: int


def flags_text(flags: Iterable[str]) -> str:
    return " ".join(flags)


def parse_flags(text: str) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()


def _folder(conn: Connection, row: object) -> Folder:
    m = row._mapping  # type: ignore[attr-defined]
    return Folder(m["id"], m["mailbox_id"], folder_names.display(conn, m), m["special_use"],
                  m["uidvalidity"], m["uidnext"], m["highestmodseq"], bool(m["subscribed"]))


# ------------------------------------------------------------------------------ reads

_FOLDERS_OF = select(db.folders).where(db.folders.c.mailbox_id == bindparam("mailbox"))
_FOLDER_BY_ID = select(db.folders).where(db.folders.c.id == bindparam("folder"))
_FOLDER_BY_NAME = _FOLDERS_OF.where(db.folders.c.name == bindparam("name"))
_FOLDER_STATE = select(db.folders.c.uidnext, db.folders.c.highestmodseq).where(
    db.folders.c.id == bindparam("folder"))
_ROWS = (select(db.messages.c.uid, db.messages.c.id, db.messages.c.flags,
                db.messages.c.internal_date, db.messages.c.size, db.messages.c.modseq)
         .where(db.messages.c.folder_id == bindparam("folder")).order_by(db.messages.c.uid))
_ROWS_SINCE = _ROWS.where(db.messages.c.modseq > bindparam("modseq"))
_UIDS = (select(db.messages.c.uid).where(db.messages.c.folder_id == bindparam("folder"))
         .order_by(db.messages.c.uid))


def folders(conn: Connection, mailbox_id: int) -> list[Folder]:
    return [_folder(conn, r) for r in conn.execute(_FOLDERS_OF, {"mailbox": mailbox_id})]


def folder_by_name(conn: Connection, mailbox_id: int, name: str) -> Folder | None:
    if name.upper() == "INBOX":  # RFC 3501 §5.1: INBOX in any case
        name = "INBOX"
    row = conn.execute(_FOLDER_BY_NAME, {"mailbox": mailbox_id,  # the keyed lookup value
                                         "name": folder_names.lookup(conn, mailbox_id, name)}
                       ).first()
    return _folder(conn, row) if row is not None else None


def folder_by_id(conn: Connection, folder_id: int) -> Folder | None:
    row = conn.execute(_FOLDER_BY_ID, {"folder": folder_id}).first()
    return _folder(conn, row) if row else None


def folder_state(conn: Connection, folder_id: int) -> tuple[int, int] | None:
    """(uidnext, highestmodseq), None when the folder is gone."""
    row = conn.execute(_FOLDER_STATE, {"folder": folder_id}).first()
    return (row.uidnext, row.highestmodseq) if row else None


_ROWS_SQL = ("SELECT uid, id, flags, internal_date, size, modseq FROM messages "
             "INDEXED BY ix_messages_folder_meta WHERE folder_id = ? ORDER BY uid")


def rows(conn: Connection, folder_id: int, since_modseq: int | None = None) -> list[Row]:
    """The folder's messages in UID order (only those changed after *since_modseq*)."""
    result: Iterable[tuple[Any, ...]]
    if since_modseq is not None:
        result = conn.execute(_ROWS_SINCE, {"folder": folder_id, "modseq": since_modseq}
                              ).tuples()
    elif conn.dialect.name == "sqlite":  # the hot path of SELECT: the driver directly
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        result = cursor.execute(_ROWS_SQL, (folder_id,)).fetchall()
        cursor.close()
    else:
        result = conn.execute(_ROWS, {"folder": folder_id}).tuples()
    return [Row(uid, row_id, tuple(flags.split()) if flags else (), date, size, modseq)
            for uid, row_id, flags, date, size, modseq in result]


@dataclass(frozen=True)
class Snapshot:
    """A folder's message list at one (uidvalidity, uidnext, highestmodseq)."""

    rows: tuple[Row, ...]
    keywords: frozenset[str]
    first_unseen: int | None  # sequence number (RFC 3501 §7.1 UNSEEN)


class SnapshotCache:
    """Folder message lists kept per process, keyed by the folder's state.

    Every write to a folder's messages moves its UIDNEXT or HIGHESTMODSEQ (``_bump``, and
    ``store.write_delivery`` for SMTP), and both only grow, so a snapshot whose key equals
    the folder row just read is exactly the current list: SELECT of an unchanged folder
    needs no message scan. Bounded by the total number of rows held (LRU); no content.
    """

    def __init__(self, max_rows: int = 400_000) -> None:
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._items: OrderedDict[int, tuple[tuple[int, int, int], Snapshot]] = OrderedDict()
        self._rows = 0

    @staticmethod
    def _key(folder: Folder) -> tuple[int, int, int]:
        return folder.uidvalidity, folder.uidnext, folder.highestmodseq

    def peek(self, folder: Folder) -> Snapshot | None:
        """The snapshot of *folder* in its current state if held, without a scan."""
        with self._lock:
            hit = self._items.get(folder.id)
            if hit is not None and hit[0] == self._key(folder):
                self._items.move_to_end(folder.id)
                return hit[1]
        return None

    def get(self, conn: Connection, folder: Folder) -> Snapshot:
        held = self.peek(folder)
        if held is not None:
            return held
        found = rows(conn, folder.id)
        snap = Snapshot(tuple(found),
                        frozenset(f for r in found for f in r.flags if not f.startswith("\\")),
                        next((i for i, r in enumerate(found, 1) if "\\Seen" not in r.flags),
                             None))
        with self._lock:
            old = self._items.pop(folder.id, None)
            if old is not None:
                self._rows -= len(old[1].rows)
            if len(found) <= self.max_rows:
                self._items[folder.id] = (self._key(folder), snap)
                self._rows += len(found)
            while self._rows > self.max_rows:
                _, (_, dropped) = self._items.popitem(last=False)
                self._rows -= len(dropped.rows)
        return snap


SNAPSHOTS = SnapshotCache()


def ensure_indexes(engine: Engine) -> None:
    """Create the IMAP covering index on databases created before it existed."""
    with engine.begin() as conn:  # IF NOT EXISTS: several worker processes start at once
        conn.execute(CreateIndex(db.IMAP_FOLDER_INDEX, if_not_exists=True))


def uids(conn: Connection, folder_id: int) -> list[int]:
    return list(conn.execute(_UIDS, {"folder": folder_id}).scalars())


def mailbox_enabled(conn: Connection, mailbox_id: int) -> bool:
    return bool(conn.execute(select(db.mailboxes.c.enabled)
                             .where(db.mailboxes.c.id == mailbox_id)).scalar())


# flags are stored space-separated; keywords never start with a backslash (RFC 3501 §9)
_SEEN = (" " + db.messages.c.flags + " ").like("% \\Seen %")
_COUNTS = select(func.count(), func.coalesce(func.sum(case((_SEEN, 0), else_=1)), 0)).where(
    db.messages.c.folder_id == bindparam("folder"))


def folder_counts(conn: Connection, folder_id: int) -> tuple[int, int, int]:
    """(messages, unseen, recent=0) for STATUS, counted by SQLite on the covering index."""
    messages, unseen = conn.execute(_COUNTS, {"folder": folder_id}).one()
    return int(messages), int(unseen), 0


def folder_size(conn: Connection, folder_id: int) -> int:
    return int(conn.execute(select(func.coalesce(func.sum(db.messages.c.size), 0))
                            .where(db.messages.c.folder_id == folder_id)).scalar() or 0)


@dataclass(frozen=True)
class Opened:
    """A decrypted message, or the error that prevented it."""

    row_id: str
    data: bytes | None
    error: str | None = None


def open_messages(conn: Connection, keyring: crypto.Keyring, mailbox_id: int,
                  ids: Sequence[str]) -> dict[str, Opened]:
    """Decrypt messages by store id, in memory; a tampered one has ``error`` set."""
    key_id = crypto.mailbox_key_id(mailbox_id)
    owner_key = keyring.key(key_id, conn)
    out: dict[str, Opened] = {}
    for start in range(0, len(ids), 500):
        chunk = list(ids[start:start + 500])
        found = conn.execute(select(db.messages.c.id, db.messages.c.key_blob,
                                    db.messages.c.body_blob)
                             .where(db.messages.c.id.in_(chunk)))
        for row_id, key_blob, body_blob in found:
            try:
                out[row_id] = Opened(row_id, crypto.open_message(owner_key, key_id, row_id,
                                                                 key_blob, body_blob))
            except crypto.TamperedError:
                out[row_id] = Opened(row_id, None, "tampered")
    for row_id in ids:
        out.setdefault(row_id, Opened(row_id, None, "expunged"))
    return out


# ------------------------------------------------------------------------------ writes

def ensure_default_folders(conn: Connection, mailbox_id: int) -> None:
    """Create any of INBOX, Sent, Drafts, Trash, Junk, Archive a mailbox lacks (mailboxes
    created before a folder was added to store.DEFAULT_FOLDERS get it lazily)."""
    present = {f.name for f in folders(conn, mailbox_id)}
    missing = [(n, u) for n, u in store.DEFAULT_FOLDERS if n not in present]
    if missing:
        validity = int(time.time()) & 0x7FFFFFFF
        conn.execute(insert(db.folders), [
            {"mailbox_id": mailbox_id, "name": n, "special_use": u, "uidvalidity": validity,
             "uidnext": 1, "highestmodseq": 1, "subscribed": True} for n, u in missing])


def _bump(conn: Connection, folder_id: int, uids: int = 0) -> tuple[int, int]:
    """Next modseq (and the first of *uids* new UIDs) of a folder."""
    row = conn.execute(update(db.folders).where(db.folders.c.id == folder_id)
                       .values(highestmodseq=db.folders.c.highestmodseq + 1,
                               uidnext=db.folders.c.uidnext + uids)
                       .returning(db.folders.c.highestmodseq, db.folders.c.uidnext)).first()
    if row is None:
        raise BackendError("Mailbox no longer exists", "NONEXISTENT")
    return row.highestmodseq, row.uidnext - uids


def set_flags(conn: Connection, folder_id: int, changes: dict[int, tuple[str, ...]],
              audit: list[AuditRecord], unchanged_since: int | None = None
              ) -> tuple[int, dict[int, int], list[int]]:
    """Write new flags for UIDs; returns (modseq, {uid: modseq}, UIDs refused by
    UNCHANGEDSINCE, RFC 7162 §3.1.3)."""
    failed: list[int] = []
    written: dict[int, int] = {}
    if unchanged_since is not None:
        current = dict(conn.execute(select(db.messages.c.uid, db.messages.c.modseq).where(
            and_(db.messages.c.folder_id == folder_id,
                 db.messages.c.uid.in_(list(changes))))).tuples().all())
        failed = sorted(u for u in changes if current.get(u, 0) > unchanged_since)
    if len(failed) == len(changes):
        append(conn, audit)
        return 0, written, failed
    modseq, _ = _bump(conn, folder_id)
    for uid, new in changes.items():
        if uid in failed:
            continue
        done = conn.execute(update(db.messages).where(and_(
            db.messages.c.folder_id == folder_id, db.messages.c.uid == uid))
            .values(flags=flags_text(new), modseq=modseq)).rowcount
        if done:
            written[uid] = modseq
    append(conn, audit)
    return modseq, written, failed


def expunge(conn: Connection, folder_id: int, only: Sequence[int] | None,
            audit_for: object) -> list[tuple[int, str]]:
    """Delete the folder's \\Deleted messages (only those UIDs when given); returns
    [(uid, store id)]. *audit_for* maps that list to the audit records to append."""
    found = conn.execute(select(db.messages.c.uid, db.messages.c.id, db.messages.c.flags)
                         .where(db.messages.c.folder_id == folder_id)).all()
    wanted = set(only) if only is not None else None
    gone = sorted((u, i) for u, i, f in found if "\\Deleted" in parse_flags(f)
                  and (wanted is None or u in wanted))
    if gone:
        _bump(conn, folder_id)
        for start in range(0, len(gone), 500):
            conn.execute(delete(db.messages).where(
                db.messages.c.id.in_([i for _, i in gone[start:start + 500]])))
    append(conn, audit_for(gone))  # type: ignore[operator]
    return gone


def append_message(conn: Connection, folder_id: int, mailbox_id: int, message_id: str,
                   sealed: crypto.SealedMessage, size: int, flags: tuple[str, ...],
                   internal_date: float, audit: list[AuditRecord]) -> tuple[int, int]:
    """Store one sealed message; returns (uidvalidity, uid)."""
    modseq, uid = _bump(conn, folder_id, 1)
    conn.execute(insert(db.messages).values(
        id=message_id, mailbox_id=mailbox_id, folder_id=folder_id, uid=uid, size=size,
        internal_date=internal_date, flags=flags_text(flags), modseq=modseq,
        key_blob=sealed.key_blob, body_blob=sealed.body_blob))
    folder = folder_by_id(conn, folder_id)
    assert folder is not None
    for record in audit:
        record.detail["uid"] = uid
    append(conn, audit)
    return folder.uidvalidity, uid


@dataclass(frozen=True)
class CopySource:
    new_id: str
    sealed: crypto.SealedMessage
    size: int
    flags: tuple[str, ...]
    internal_date: float


def copy_messages(conn: Connection, dest_id: int, mailbox_id: int,
                  sources: list[CopySource], audit: list[AuditRecord]) -> tuple[int, list[int]]:
    """Insert re-sealed copies in *dest*; returns (uidvalidity, new UIDs in order)."""
    modseq, first = _bump(conn, dest_id, len(sources))
    new_uids = list(range(first, first + len(sources)))
    if sources:
        conn.execute(insert(db.messages), [{
            "id": s.new_id, "mailbox_id": mailbox_id, "folder_id": dest_id, "uid": uid,
            "size": s.size, "internal_date": s.internal_date, "flags": flags_text(s.flags),
            "modseq": modseq, "key_blob": s.sealed.key_blob, "body_blob": s.sealed.body_blob,
        } for s, uid in zip(sources, new_uids, strict=True)])
    dest = folder_by_id(conn, dest_id)
    assert dest is not None
    append(conn, audit)
    return dest.uidvalidity, new_uids


def move_messages(conn: Connection, source_id: int, dest_id: int,
                  moved: list[tuple[int, str]], audit: list[AuditRecord]
                  ) -> tuple[int, list[int]]:
    """Move messages of one mailbox between its folders without re-sealing (the ciphertext
    is bound to the mailbox key and the store id, both unchanged); (uidvalidity, new UIDs)."""
    modseq, first = _bump(conn, dest_id, len(moved))
    _bump(conn, source_id)
    new_uids = list(range(first, first + len(moved)))
    for (_, row_id), uid in zip(moved, new_uids, strict=True):
        conn.execute(update(db.messages).where(and_(db.messages.c.id == row_id,
                                                    db.messages.c.folder_id == source_id))
                     .values(folder_id=dest_id, uid=uid, modseq=modseq))
    dest = folder_by_id(conn, dest_id)
    assert dest is not None
    append(conn, audit)
    return dest.uidvalidity, new_uids


def create_folder(conn: Connection, mailbox_id: int, name: str,
                  audit: list[AuditRecord], special_use: str | None = None) -> None:
    if folder_by_name(conn, mailbox_id, name) is not None:
        raise BackendError("Mailbox already exists", "ALREADYEXISTS")
    # RFC 3501 §2.3.1.1: a new folder never reuses a UIDVALIDITY a deleted one of the same
    # name may have had: above every value of the mailbox and the clock
    highest = conn.execute(select(func.max(db.folders.c.uidvalidity))
                           .where(db.folders.c.mailbox_id == mailbox_id)).scalar() or 0
    found = conn.execute(insert(db.folders).values(
        mailbox_id=mailbox_id, **folder_names.columns(conn, mailbox_id, name),
        special_use=special_use,
        uidvalidity=min(max(int(time.time()), highest + 1), 0xFFFFFFFF), uidnext=1,
        highestmodseq=1,
        subscribed=True).returning(db.folders.c.id))
    _name_folder(audit, found.scalar_one())
    append(conn, audit)


def delete_folder(conn: Connection, mailbox_id: int, name: str,
                  audit: list[AuditRecord]) -> None:
    folder = folder_by_name(conn, mailbox_id, name)
    if folder is None:
        raise BackendError("No such mailbox", "NONEXISTENT")
    if folder.name == "INBOX":
        raise BackendError("INBOX cannot be deleted", "CANNOT")
    if any(f.name.startswith(folder.name + "/") for f in folders(conn, mailbox_id)):
        # RFC 3501 §6.3.4: a folder with inferiors would keep \Noselect; refuse instead
        raise BackendError("Mailbox has children, delete them first", "INUSE")
    conn.execute(delete(db.messages).where(db.messages.c.folder_id == folder.id))
    conn.execute(delete(db.folders).where(db.folders.c.id == folder.id))
    _name_folder(audit, folder.id)
    append(conn, audit)


def rename_folder(conn: Connection, mailbox_id: int, old: str, new: str,
                  audit: list[AuditRecord]) -> None:
    folder = folder_by_name(conn, mailbox_id, old)
    if folder is None:
        raise BackendError("No such mailbox", "NONEXISTENT")
    if folder_by_name(conn, mailbox_id, new) is not None:
        raise BackendError("Mailbox already exists", "ALREADYEXISTS")
    if folder.name == "INBOX":
        # RFC 3501 §6.3.5: renaming INBOX moves its messages to a new folder, INBOX stays
        create_folder(conn, mailbox_id, new, [])
        dest = folder_by_name(conn, mailbox_id, new)
        assert dest is not None
        moved = [(u, i) for u, i in conn.execute(
            select(db.messages.c.uid, db.messages.c.id)
            .where(db.messages.c.folder_id == folder.id).order_by(db.messages.c.uid))]
        _name_folder(audit, folder.id)
        move_messages(conn, folder.id, dest.id, moved, audit)
        return
    for child in folders(conn, mailbox_id):
        if child.name == folder.name or child.name.startswith(folder.name + "/"):
            conn.execute(update(db.folders).where(db.folders.c.id == child.id).values(
                **folder_names.columns(conn, mailbox_id, new + child.name[len(folder.name):])))
    _name_folder(audit, folder.id)
    append(conn, audit)


def _name_folder(audit: list[AuditRecord], folder_id: int) -> None:
    """Audit records name a folder by id: its name is content (mss/folder_names.py)."""
    for record in audit:
        record.detail.setdefault("folder_id", folder_id)


def set_subscribed(conn: Connection, mailbox_id: int, name: str, value: bool) -> None:
    folder = folder_by_name(conn, mailbox_id, name)
    if folder is None:
        raise BackendError("No such mailbox", "NONEXISTENT")
    conn.execute(update(db.folders).where(db.folders.c.id == folder.id)
                 .values(subscribed=value))


def remove_messages(conn: Connection, folder_id: int, ids: Sequence[str]) -> None:
    """Delete messages moved away to another mailbox (their copies were just inserted)."""
    _bump(conn, folder_id)
    for start in range(0, len(ids), 500):
        conn.execute(delete(db.messages).where(and_(
            db.messages.c.folder_id == folder_id,
            db.messages.c.id.in_(list(ids[start:start + 500])))))
