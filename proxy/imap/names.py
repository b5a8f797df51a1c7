"""Mailbox names: modified UTF-7 at the edge (RFC 3501 §5.1.3), the personal namespace and
the shared one (``Shared/<address>/<folder>``, mss mailbox grant), LIST patterns."""

from __future__ import annotations

import re

from sqlalchemy import Connection

from audit.events import Event
from mss.crypto import Keyring
from mss.mailstore import folders, grants, mailboxes
from proxy.imap import wire
from proxy.imap.args import astring
from proxy.imap.state import (
    ImapSession,
    No,
)
from proxy.imap.tokens import ImapParseError, Token
from proxy.imap.utf7 import decode_mailbox_name, encode_mailbox_name

SHARED_PREFIX = "Shared/"
DELIMITER = "/"


def mailbox_name(token: Token) -> str:
    """A mailbox argument, decoded from modified UTF-7 (RFC 3501 §5.1.3); INBOX in any case
    is INBOX (§5.1)."""
    raw = astring(token)
    try:
        name = decode_mailbox_name(raw.decode("ascii") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError:
        raise ImapParseError("Mailbox name must be 7-bit (modified UTF-7)") from None
    name = str(name).rstrip(DELIMITER)
    if _is_inbox(name):
        name = "INBOX" + name[5:]
    return name


def _is_inbox(name: str) -> bool:
    """INBOX or below it, in any ASCII case (RFC 3501 §5.1: case-insensitive in US-ASCII;
    "ınbox" with a dotless i is another folder, though Python upper-cases it to INBOX)."""
    head = name[:5]
    return head.isascii() and head.upper() == "INBOX" and name[5:6] in ("", DELIMITER)


def encode_name(name: str) -> bytes:
    return wire.astring(encode_mailbox_name(name))


class Target:
    """A resolved mailbox name: which mailbox holds it, and the folder name inside it."""

    def __init__(self, owner: mailboxes.Mailbox, folder: str, delegated: bool) -> None:
        self.owner = owner
        self.folder = folder
        self.delegated = delegated


async def resolve(s: ImapSession, name: str, *, access: str) -> Target:
    """The mailbox and folder behind a client's name; delegated access is audited."""
    assert s.user is not None
    if not name.startswith(SHARED_PREFIX):
        return Target(s.user, name, False)
    rest = name[len(SHARED_PREFIX):]
    address, _, folder = rest.partition(DELIMITER)
    granted = {m.address: m for m in await s.db(grants.granted_mailboxes, s.user.id)}
    owner = granted.get(address.lower())
    if owner is None or not folder:
        raise No("No such mailbox", "NONEXISTENT")
    await s.audit(s.record(Event.IMAP_DELEGATED, mailbox=owner.address,
                           detail={"command": access}))  # no folder name: content
    return Target(owner, folder, True)


async def require_folder(s: ImapSession, target: Target) -> folders.Folder:
    folder = await s.db(folders.folder_by_name, s.ctx.keyring, target.owner.id, target.folder)
    if folder is None:
        raise No("No such mailbox", "NONEXISTENT")
    return folder



def list_pattern(reference: str, pattern: str) -> re.Pattern[str]:
    """RFC 3501 §6.3.8: ``*`` matches anything, ``%`` anything but the delimiter."""
    text = reference + pattern
    out = []
    for char in text:
        out.append(".*" if char == "*" else "[^/]*" if char == "%" else re.escape(char))
    regex = "".join(out)
    if text[:5].isascii() and text[:5].upper() == "INBOX":
        regex = "(?i:INBOX)" + "".join(out[5:])
    return re.compile(regex + r"\Z")


def all_names(conn: Connection, keyring: Keyring, user: mailboxes.Mailbox
              ) -> list[tuple[str, folders.Folder | None]]:
    own = sorted(folders.folders(conn, keyring, user.id), key=lambda f: (f.name != "INBOX", f.name))
    names: list[tuple[str, folders.Folder | None]] = [(f.name, f) for f in own]
    shared = grants.granted_mailboxes(conn, user.id)
    if shared:
        names.append(("Shared", None))
        for owner in shared:
            names.append((f"{SHARED_PREFIX}{owner.address}", None))
            names += [(f"{SHARED_PREFIX}{owner.address}/{f.name}", f)
                      for f in folders.folders(conn, keyring, owner.id)]
    return names


