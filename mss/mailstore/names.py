"""Folder names at rest: a keyed lookup value and the name sealed under the mailbox key.

Users name folders after patients ("Dupont Jean"), so a name is content
(docs/architecture.md "Invariants"):
the ``folders`` row keeps, in ``name``, only a deterministic lookup value (HMAC-SHA256 of
the NFC-normalised name under a key derived from the mailbox key) that the unique index
(mailbox_id, name) and IMAP's lookups by name use, and in ``name_sealed`` the name itself,
AES-256-GCM under the mailbox key, bound to the mailbox (a row moved to another mailbox
fails to open). The default folders (INBOX, Sent, Drafts, Trash, Junk, Archive) are the
same for everyone and say nothing: they stay in clear (``name_sealed`` NULL), so SMTP
delivery finds INBOX without a key. Names are decrypted in memory only (LIST matches its
patterns after decryption). Audit records name folders by id, never by name.

:func:`migrate` seals the plaintext names of a database written before this (at start).
The keyring is the caller's (its :class:`mss.app.App`'s), passed to every function that
seals or opens a name: two nodes in one process each read their own names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import unicodedata
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from mss import crypto, db

# RFC 6154 special-use folders every mailbox gets, besides INBOX (folders.ensure_default_folders)
DEFAULT_FOLDERS: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None), ("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"),
    ("Junk", "\\Junk"), ("Archive", "\\Archive"),
)
PUBLIC_NAMES = frozenset(name for name, _ in DEFAULT_FOLDERS)
LOOKUP_PREFIX = "~"  # a lookup value; no public name starts with it
_AD = b"mss:folder-name:v1|"



class FolderNameError(Exception):
    """A sealed name failed authentication."""


def normalise(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def lookup(conn: Connection, keyring: crypto.Keyring, mailbox_id: int, name: str) -> str:
    """The value stored in ``folders.name`` for *name* (the name itself when public)."""
    name = normalise(name)
    if name in PUBLIC_NAMES:
        return name
    key = keyring.lookup_key(crypto.mailbox_key_id(mailbox_id), conn)
    digest = hmac.new(key, name.encode("utf-8"), hashlib.sha256).digest()
    return LOOKUP_PREFIX + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def _ad(mailbox_id: int) -> bytes:
    return _AD + crypto.mailbox_key_id(mailbox_id).encode()


def columns(conn: Connection, keyring: crypto.Keyring, mailbox_id: int, name: str
            ) -> dict[str, Any]:
    """``name`` and ``name_sealed`` of a folder row named *name* (insert or rename)."""
    name = normalise(name)
    if name in PUBLIC_NAMES:
        return {"name": name, "name_sealed": None}
    key = keyring.key(crypto.mailbox_key_id(mailbox_id), conn)
    return {"name": lookup(conn, keyring, mailbox_id, name),
            "name_sealed": crypto.seal_bytes(key, name.encode("utf-8"), _ad(mailbox_id))}


def display(conn: Connection, keyring: crypto.Keyring, row: Any) -> str:
    """The folder's name from its row (a mapping with mailbox_id, name, name_sealed)."""
    sealed = row["name_sealed"]
    if sealed is None:
        return str(row["name"])
    key = keyring.key(crypto.mailbox_key_id(row["mailbox_id"]), conn)
    try:
        return crypto.open_bytes(key, sealed, _ad(row["mailbox_id"])).decode("utf-8")
    except crypto.TamperedError:
        raise FolderNameError(f"folder {row['id']}: sealed name failed authentication"
                              ) from None


def migrate(engine: Engine, keyring: crypto.Keyring) -> int:
    """Seal the plaintext names of folders written before names were encrypted; the
    number sealed. Freed bytes are zeroed (secure_delete) and the WAL checkpointed, so the
    old names leave the database file too."""
    f = db.folders
    plain = (select(f.c.id, f.c.mailbox_id, f.c.name)
             .where(f.c.name_sealed.is_(None) & f.c.name.notin_(sorted(PUBLIC_NAMES))))
    with engine.connect() as probe:
        if probe.execute(plain.limit(1)).first() is None:
            return 0
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        raw: Any = conn.connection.dbapi_connection  # pragmas outside any transaction
        if sqlite:
            raw.execute("PRAGMA secure_delete = ON")
        with conn.begin():  # re-read under the write lock: several workers start at once
            rows = conn.execute(plain).all()
            for row in rows:
                conn.execute(update(f).where(f.c.id == row.id)
                             .values(**columns(conn, keyring, row.mailbox_id, row.name)))
        if sqlite:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return len(rows)
