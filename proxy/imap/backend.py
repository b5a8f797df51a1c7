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
from collections.abc import Callable, Iterable, Sequence
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
from mss.committer import Refusal

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


class BackendError(Refusal):
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
    recent_uid: int = 0  # RFC 3501 §2.3.2: UIDs above it are \\Recent for the next claimer


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
                  m["uidvalidity"], m["uidnext"], m["highestmodseq"], bool(m["subscribed"]),
                  m["recent_uid"] or 0)


# ------------------------------------------------------------------------------ reads

# a row with deleted_at set is a deleted folder's subscription only (delete_folder)
_LIVE = db.folders.c.deleted_at.is_(None)
_FOLDERS_OF = select(db.folders).where(and_(db.folders.c.mailbox_id == bindparam("mailbox"),
                                            _LIVE))
_FOLDER_BY_ID = select(db.folders).where(and_(db.folders.c.id == bindparam("folder"), _LIVE))
_TOMBSTONES = select(db.folders).where(and_(
    db.folders.c.mailbox_id == bindparam("mailbox"), db.folders.c.deleted_at.is_not(None)))
_FOLDER_BY_NAME = _FOLDERS_OF.where(db.folders.c.name == bindparam("name"))
_FOLDER_STATE = select(db.folders.c.mailbox_id, db.folders.c.uidvalidity,
                       db.folders.c.uidnext, db.folders.c.highestmodseq,
                       db.folders.c.recent_uid).where(
    and_(db.folders.c.id == bindparam("folder"), _LIVE))
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


def deleted_subscriptions(conn: Connection, mailbox_id: int) -> dict[str, int]:
    """Names of deleted folders still subscribed (RFC 3501 §6.3.6) -> their row id."""
    return {folder_names.display(conn, r._mapping): r.id
            for r in conn.execute(_TOMBSTONES, {"mailbox": mailbox_id})}


def folder_by_id(conn: Connection, folder_id: int) -> Folder | None:
    row = conn.execute(_FOLDER_BY_ID, {"folder": folder_id}).first()
    return _folder(conn, row) if row else None


def folder_state(conn: Connection, folder: Folder) -> tuple[int, int, int] | None:
    """(uidnext, highestmodseq, recent_uid) of *folder*; None when it is gone, also when
    its row id now holds another folder (deleted and recreated: a new UIDVALIDITY)."""
    row = conn.execute(_FOLDER_STATE, {"folder": folder.id}).first()
    if row is None or (row.mailbox_id, row.uidvalidity) != (folder.mailbox_id,
                                                            folder.uidvalidity):
        return None
    return row.uidnext, row.highestmodseq, row.recent_uid or 0


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
        self._items: OrderedDict[int, tuple[tuple[int, int, int, int], Snapshot]] = \
            OrderedDict()
        self._rows = 0

    @staticmethod
    def _key(folder: Folder) -> tuple[int, int, int, int]:
        # a row id can be reused by a later folder (SQLite rowids), of this mailbox or
        # another: the mailbox and UIDVALIDITY (unique per mailbox, store.next_uidvalidity)
        # tell a recreated folder from the one the snapshot was taken of
        return folder.mailbox_id, folder.uidvalidity, folder.uidnext, folder.highestmodseq

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
    claimed before, the session's recent messages are those above it (and <= *upto*)."""
    before = conn.execute(select(db.folders.c.recent_uid)
                          .where(db.folders.c.id == folder_id)).scalar() or 0
    if upto > before:
        conn.execute(update(db.folders).where(db.folders.c.id == folder_id)
                     .values(recent_uid=upto))
    return int(before)


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
    for name, use in missing:
        create_folder(conn, mailbox_id, name, [], use)


def _uidvalidity(conn: Connection, mailbox_id: int) -> int:
    try:
        return store.next_uidvalidity(conn, mailbox_id)
    except store.StoreError as exc:
        raise BackendError(str(exc), "LIMIT") from None


def _bump(conn: Connection, folder_id: int, uids: int = 0) -> tuple[int, int]:
    """Next modseq (and the first of *uids* new UIDs) of a folder."""
    row = conn.execute(update(db.folders).where(and_(db.folders.c.id == folder_id, _LIVE))
                       .values(highestmodseq=db.folders.c.highestmodseq + 1,
                               uidnext=db.folders.c.uidnext + uids)
                       .returning(db.folders.c.highestmodseq, db.folders.c.uidnext)).first()
    if row is None:
        raise BackendError("Mailbox no longer exists", "NONEXISTENT")
    return row.highestmodseq, row.uidnext - uids


@dataclass
class FlagsChange:
    """What a STORE did, as the database has it after the transaction."""

    current: dict[int, tuple[tuple[str, ...], int]]  # uid -> (flags, modseq), every UID found
    changed: set[int]  # UIDs whose flags the operation changed
    failed: list[int]  # refused by UNCHANGEDSINCE (RFC 7162 §3.1.3)
    modseq: int  # of the changed rows (0: nothing changed)


def apply_flags(sign: str, old: tuple[str, ...], flags: tuple[str, ...]) -> tuple[str, ...]:
    """RFC 3501 §6.4.6: ``+FLAGS`` adds, ``-FLAGS`` removes, ``FLAGS`` replaces."""
    if sign == "+":
        return old + tuple(f for f in flags if f not in old)
    if sign == "-":
        return tuple(f for f in old if f not in flags)
    return flags


_FLAGS_OF = select(db.messages.c.uid, db.messages.c.flags, db.messages.c.modseq).where(
    and_(db.messages.c.folder_id == bindparam("folder"),
         db.messages.c.uid.in_(bindparam("uids", expanding=True))))
_WRITE_FLAGS = (update(db.messages)
                .where(and_(db.messages.c.folder_id == bindparam("b_folder"),
                            db.messages.c.uid == bindparam("b_uid")))
                .values(flags=bindparam("b_flags"), modseq=bindparam("b_modseq")))


def store_flags(conn: Connection, folder_id: int, uids: Sequence[int], sign: str,
                flags: tuple[str, ...], audit_for: Callable[[list[int]], list[AuditRecord]],
                unchanged_since: int | None = None) -> FlagsChange:
    """Apply a flag operation to UIDs in the writer's transaction, on the flags the rows
    hold now (never on a session's copy: concurrent STOREs of other sessions are kept).
    Only rows whose flags change get the new modseq (RFC 7162 §3.1.3); UNCHANGEDSINCE is
    checked against the stored modseq. *audit_for* gets the UIDs newly set \\Deleted."""
    current: dict[int, tuple[tuple[str, ...], int]] = {}
    for start in range(0, len(uids), 500):
        for uid, text, modseq in conn.execute(_FLAGS_OF, {
                "folder": folder_id, "uids": list(uids[start:start + 500])}):
            current[uid] = (parse_flags(text), modseq)
    failed = sorted(u for u, (_, m) in current.items()
                    if unchanged_since is not None and m > unchanged_since)
    refused = set(failed)
    changes = {u: new for u, (old, _) in current.items() if u not in refused
               and (new := apply_flags(sign, old, flags)) != old}
    deleted = sorted(u for u, new in changes.items()
                     if "\\Deleted" in new and "\\Deleted" not in current[u][0])
    modseq = 0
    if changes:
        modseq, _ = _bump(conn, folder_id)
        conn.execute(_WRITE_FLAGS, [{"b_folder": folder_id, "b_uid": u,
                                     "b_flags": flags_text(new), "b_modseq": modseq}
                                    for u, new in changes.items()])
        current.update((u, (new, modseq)) for u, new in changes.items())
    append(conn, audit_for(deleted))
    return FlagsChange(current, set(changes), failed, modseq)


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
    # RFC 3501 §2.3.1.1: never a UIDVALIDITY a deleted folder of that name may have had
    fresh = {"special_use": special_use, "uidvalidity": _uidvalidity(conn, mailbox_id),
             "uidnext": 1, "highestmodseq": 1, "recent_uid": None, "deleted_at": None}
    kept = deleted_subscriptions(conn, mailbox_id).get(name)
    if kept is not None:  # a deleted folder's subscription: the new folder takes its row
        conn.execute(update(db.folders).where(db.folders.c.id == kept).values(**fresh))
        folder_id = kept
    else:
        found = conn.execute(insert(db.folders).values(
            mailbox_id=mailbox_id, **folder_names.columns(conn, mailbox_id, name),
            subscribed=True, **fresh).returning(db.folders.c.id))
        folder_id = found.scalar_one()
    _name_folder(audit, folder_id)
    append(conn, audit)


def delete_folder(conn: Connection, mailbox_id: int, name: str,
                  audit: list[AuditRecord]) -> tuple[int, int]:
    """Delete a folder and its messages; returns its (row id, UIDVALIDITY). A subscribed
    folder's row stays as its subscription (RFC 3501 §6.3.6: DELETE does not unsubscribe)."""
    folder = folder_by_name(conn, mailbox_id, name)
    if folder is None:
        raise BackendError("No such mailbox", "NONEXISTENT")
    if folder.name == "INBOX":
        raise BackendError("INBOX cannot be deleted", "CANNOT")
    if any(f.name.startswith(folder.name + "/") for f in folders(conn, mailbox_id)):
        # RFC 3501 §6.3.4: a folder with inferiors would keep \Noselect; refuse instead
        raise BackendError("Mailbox has children, delete them first", "INUSE")
    conn.execute(delete(db.messages).where(db.messages.c.folder_id == folder.id))
    if folder.subscribed:
        conn.execute(update(db.folders).where(db.folders.c.id == folder.id)
                     .values(deleted_at=time.time()))
    else:
        conn.execute(delete(db.folders).where(db.folders.c.id == folder.id))
    _name_folder(audit, folder.id)
    append(conn, audit)
    return folder.id, folder.uidvalidity


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
    kept = deleted_subscriptions(conn, mailbox_id)
    for child in folders(conn, mailbox_id):
        if child.name == folder.name or child.name.startswith(folder.name + "/"):
            name = new + child.name[len(folder.name):]
            values: dict[str, object] = dict(folder_names.columns(conn, mailbox_id, name))
            if name in kept:  # a deleted folder's subscription: the name stays subscribed
                conn.execute(delete(db.folders).where(db.folders.c.id == kept[name]))
                values["subscribed"] = True
            conn.execute(update(db.folders).where(db.folders.c.id == child.id)
                         .values(**values))
    _name_folder(audit, folder.id)
    append(conn, audit)


def _name_folder(audit: list[AuditRecord], folder_id: int) -> None:
    """Audit records name a folder by id: its name is content (mss/folder_names.py)."""
    for record in audit:
        record.detail.setdefault("folder_id", folder_id)


def set_subscribed(conn: Connection, mailbox_id: int, name: str, value: bool) -> None:
    folder = folder_by_name(conn, mailbox_id, name)
    if folder is None:
        kept = deleted_subscriptions(conn, mailbox_id).get(name)
        if kept is not None and not value:  # RFC 3501 §6.3.7: a deleted folder's name too
            conn.execute(delete(db.folders).where(db.folders.c.id == kept))
            return
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
