"""Messages of a folder: reads (metadata rows, decryption in memory) and every write (append,
copy, move, flags, expunge). Each write moves the folder's state through
:func:`mss.mailstore.state.bump` in the same transaction (RFC 7162 §3.1.1), and takes the
audit records to append with it. A write that reads rows to rewrite them (flags, expunge)
takes :func:`mss.mailstore.state.lock` before the read: with several nodes on PostgreSQL
(READ COMMITTED) the rows read are then the ones committed last, not a copy another node
is rewriting (on SQLite the writer transaction is BEGIN IMMEDIATE already).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, select, update

from audit.journal import AuditRecord, append
from mss import crypto, db
from mss.mailstore.errors import StoreError
from mss.mailstore.holds import refuse_if_folder_held
from mss.mailstore.state import bump, lock

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


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


_ROWS = (select(db.messages.c.uid, db.messages.c.id, db.messages.c.flags,
                db.messages.c.internal_date, db.messages.c.size, db.messages.c.modseq)
         .where(db.messages.c.folder_id == bindparam("folder")).order_by(db.messages.c.uid))


_ROWS_SINCE = _ROWS.where(db.messages.c.modseq > bindparam("modseq"))


_UIDS = (select(db.messages.c.uid).where(db.messages.c.folder_id == bindparam("folder"))
         .order_by(db.messages.c.uid))


_ROWS_SQL = ("SELECT uid, id, flags, internal_date, size, modseq FROM messages "
             "INDEXED BY ix_messages_folder_meta WHERE folder_id = ? ORDER BY uid")


def rows(conn: Connection, folder_id: int, since_modseq: int | None = None) -> list[Row]:
    """The folder's messages in UID order (only those changed after *since_modseq*)."""
    result: Iterable[tuple[Any, ...]]
    if since_modseq is not None:
        result = conn.execute(_ROWS_SINCE, {"folder": folder_id, "modseq": since_modseq})
    elif conn.dialect.name == "sqlite":  # the hot path of SELECT: the driver directly
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        result = cursor.execute(_ROWS_SQL, (folder_id,)).fetchall()
        cursor.close()
    else:
        result = conn.execute(_ROWS, {"folder": folder_id})  # rows unpack as tuples
    return [Row(uid, row_id, tuple(flags.split()) if flags else (), date, size, modseq)
            for uid, row_id, flags, date, size, modseq in result]


_COUNT = select(func.count()).select_from(db.messages).where(
    db.messages.c.folder_id == bindparam("folder"))


def count(conn: Connection, folder_id: int) -> int:
    """The folder's number of messages (counted on the folder's index)."""
    return int(conn.execute(_COUNT, {"folder": folder_id}).scalar() or 0)


def uids(conn: Connection, folder_id: int) -> list[int]:
    return list(conn.execute(_UIDS, {"folder": folder_id}).scalars())


@dataclass(frozen=True)
class Opened:
    """A decrypted message, or the error that prevented it."""

    row_id: str
    data: bytes | None
    error: str | None = None


_OPEN_SQL = "SELECT id, key_blob, body_blob FROM messages WHERE id IN (%s)"


def open_messages(conn: Connection, keyring: crypto.Keyring, mailbox_id: int,
                  ids: Sequence[str]) -> dict[str, Opened]:
    """Decrypt messages by store id, in memory; a tampered one has ``error`` set."""
    key_id = crypto.mailbox_key_id(mailbox_id)
    owner_key = keyring.key(key_id, conn)
    out: dict[str, Opened] = {}
    sqlite = conn.dialect.name == "sqlite"
    for start in range(0, len(ids), 500):
        chunk = list(ids[start:start + 500])
        found: Iterable[tuple[Any, ...]]
        if sqlite:  # FETCH and SEARCH of a whole folder: the driver directly (as rows())
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            found = cursor.execute(_OPEN_SQL % ",".join("?" * len(chunk)), chunk).fetchall()
            cursor.close()
        else:
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
    lock(conn)  # two nodes' STOREs on one message: the second applies its change to the first's
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
        modseq = bump(conn, folder_id).modseq
        conn.execute(_WRITE_FLAGS, [{"b_folder": folder_id, "b_uid": u,
                                     "b_flags": flags_text(new), "b_modseq": modseq}
                                    for u, new in changes.items()])
        current.update((u, (new, modseq)) for u, new in changes.items())
    append(conn, audit_for(deleted))
    return FlagsChange(current, set(changes), failed, modseq)


def expunge(conn: Connection, folder_id: int, only: Sequence[int] | None,
            audit_for: object) -> list[tuple[int, str]]:
    """Delete the folder's \\Deleted messages (only those UIDs when given); returns
    [(uid, store id)]. *audit_for* maps that list to the audit records to append.
    HoldError when there are some and the mailbox is under legal hold (nothing removed)."""
    lock(conn)  # two nodes' EXPUNGEs: the second sees the messages the first deleted gone
    found = conn.execute(select(db.messages.c.uid, db.messages.c.id, db.messages.c.flags)
                         .where(db.messages.c.folder_id == folder_id)).all()
    wanted = set(only) if only is not None else None
    gone = sorted((u, i) for u, i, f in found if "\\Deleted" in parse_flags(f)
                  and (wanted is None or u in wanted))
    if gone:
        refuse_if_folder_held(conn, folder_id)
        bump(conn, folder_id)
        for start in range(0, len(gone), 500):
            conn.execute(delete(db.messages).where(
                db.messages.c.id.in_([i for _, i in gone[start:start + 500]])))
    append(conn, audit_for(gone))  # type: ignore[operator]
    return gone


def append_message(conn: Connection, folder_id: int, mailbox_id: int, message_id: str,
                   sealed: crypto.SealedMessage, size: int, flags: tuple[str, ...],
                   internal_date: float, audit: list[AuditRecord]) -> tuple[int, int]:
    """Store one sealed message; returns (uidvalidity, uid)."""
    state = bump(conn, folder_id, 1)
    modseq, uid = state.modseq, state.first_uid
    conn.execute(insert(db.messages).values(
        id=message_id, mailbox_id=mailbox_id, folder_id=folder_id, uid=uid, size=size,
        internal_date=internal_date, flags=flags_text(flags), modseq=modseq,
        key_blob=sealed.key_blob, body_blob=sealed.body_blob))
    for record in audit:
        record.detail["uid"] = uid
    append(conn, audit)
    return state.uidvalidity, uid


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
    state = bump(conn, dest_id, len(sources))
    modseq, first = state.modseq, state.first_uid
    new_uids = list(range(first, first + len(sources)))
    if sources:
        conn.execute(insert(db.messages), [{
            "id": s.new_id, "mailbox_id": mailbox_id, "folder_id": dest_id, "uid": uid,
            "size": s.size, "internal_date": s.internal_date, "flags": flags_text(s.flags),
            "modseq": modseq, "key_blob": s.sealed.key_blob, "body_blob": s.sealed.body_blob,
        } for s, uid in zip(sources, new_uids, strict=True)])
    append(conn, audit)
    return state.uidvalidity, new_uids


def move_messages(conn: Connection, source_id: int, dest_id: int,
                  moved: list[tuple[int, str]], audit: list[AuditRecord]
                  ) -> tuple[int, list[int]]:
    """Move messages of one mailbox between its folders without re-sealing (the ciphertext
    is bound to the mailbox key and the store id, both unchanged); (uidvalidity, new UIDs)."""
    state = bump(conn, dest_id, len(moved))
    modseq, first = state.modseq, state.first_uid
    bump(conn, source_id)
    new_uids = list(range(first, first + len(moved)))
    now = time.time()  # its age in the destination counts from now (retention)
    for (_, row_id), uid in zip(moved, new_uids, strict=True):
        conn.execute(update(db.messages).where(and_(db.messages.c.id == row_id,
                                                    db.messages.c.folder_id == source_id))
                     .values(folder_id=dest_id, uid=uid, modseq=modseq, saved_at=now))
    append(conn, audit)
    return state.uidvalidity, new_uids


def remove_messages(conn: Connection, folder_id: int, ids: Sequence[str]) -> None:
    """Delete messages moved away to another mailbox (their copies were just inserted);
    HoldError when the source mailbox is under legal hold (the caller's copies roll back)."""
    refuse_if_folder_held(conn, folder_id)
    bump(conn, folder_id)
    for start in range(0, len(ids), 500):
        conn.execute(delete(db.messages).where(and_(
            db.messages.c.folder_id == folder_id,
            db.messages.c.id.in_(list(ids[start:start + 500])))))


def new_id() -> str:
    return secrets.token_hex(16)


def read_message(conn: Connection, keyring: crypto.Keyring, mailbox_id: int,
                 uid: int, folder: str = "INBOX") -> bytes:
    """Decrypt one stored message in memory; raises crypto.TamperedError if modified."""
    row = conn.execute(
        select(db.messages.c.id, db.messages.c.key_blob, db.messages.c.body_blob)
        .join(db.folders, db.folders.c.id == db.messages.c.folder_id)
        .where((db.messages.c.mailbox_id == mailbox_id) & (db.folders.c.name == folder)
               & (db.messages.c.uid == uid))
    ).first()
    if row is None:
        raise StoreError(f"no message uid {uid} in {folder}")
    key_id = crypto.mailbox_key_id(mailbox_id)
    return crypto.open_message(keyring.key(key_id, conn), key_id, row.id, row.key_blob,
                               row.body_blob)


def list_uids(conn: Connection, mailbox_id: int, folder: str = "INBOX") -> Sequence[int]:
    return list(conn.execute(
        select(db.messages.c.uid).join(db.folders, db.folders.c.id == db.messages.c.folder_id)
        .where((db.messages.c.mailbox_id == mailbox_id) & (db.folders.c.name == folder))
        .order_by(db.messages.c.uid)
    ).scalars())


def count_all(conn: Connection) -> tuple[int, int]:
    """(messages, mailboxes) of the whole store (a backup's manifest and its checks)."""
    count = select(func.count())
    return (int(conn.execute(count.select_from(db.messages)).scalar() or 0),
            int(conn.execute(count.select_from(db.mailboxes)).scalar() or 0))


def open_every_message(conn: Connection, keyring: crypto.Keyring) -> tuple[int, int]:
    """Decrypt every message of the store in memory (streamed, nothing kept): (opened,
    shredded), the second the rows of mailboxes whose key was crypto-shredded on purpose
    (a tombstone in key_shreds, no keyring row: unreadable by design, not opened).
    TamperedError or KeyringError names the first other row that does not open (a
    restore's check)."""
    shredded_keys = set(conn.execute(
        select(db.key_shreds.c.key_id).where(db.key_shreds.c.key_id.not_in(
            select(db.keyring.c.key_id)))).scalars())
    opened = shredded = 0
    rows = db.in_pages(conn, select(db.messages.c.id, db.messages.c.mailbox_id,
                                    db.messages.c.key_blob, db.messages.c.body_blob),
                       db.messages.c.id, 500)
    for row in rows:
        key_id = crypto.mailbox_key_id(row.mailbox_id)
        if key_id in shredded_keys:
            shredded += 1
            continue
        try:
            crypto.open_message(keyring.key(key_id, conn), key_id, row.id, row.key_blob,
                                row.body_blob)
        except (crypto.TamperedError, crypto.KeyringError) as exc:
            raise type(exc)(f"message {row.id} does not decrypt: {exc}") from None
        opened += 1
    return opened, shredded
