"""The encrypted store: domains, mailboxes, folders, messages and the outbound queue.

Read helpers take a connection; write helpers run inside the caller's transaction (the CLI's
own, or the group committer's for SMTP) so that ciphertext, queue rows and audit records
commit together.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, bindparam, func, insert, select, update

from audit.journal import AuditRecord, append
from mss import crypto, db
from mss.addresses import AddressError, normalize_address, normalize_domain

MAILBOX_TYPES = ("PER", "ORG", "APP")
# RFC 6154 special-use folders every mailbox gets, besides INBOX
DEFAULT_FOLDERS: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None), ("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"),
    ("Junk", "\\Junk"), ("Archive", "\\Archive"),
)


class StoreError(ValueError):
    """Bad input to a store operation; the message is one line naming what is wrong."""


@dataclass(frozen=True)
class Mailbox:
    id: int
    address: str
    type: str
    enabled: bool
    rpps: str | None
    finess: str | None
    created_at: float
    password_hash: str | None = field(default=None, repr=False)
    liste_rouge: bool = False


def _address(address: str) -> str:
    """*address* normalised (mss.addresses), a StoreError when invalid."""
    try:
        return normalize_address(address)
    except AddressError as exc:
        raise StoreError(str(exc)) from None


# --------------------------------------------------------------------------- domains

def add_domain(conn: Connection, name: str) -> str:
    try:
        domain = normalize_domain(name)
    except ValueError as exc:
        raise StoreError(f"invalid domain {name!r}: {exc}") from None
    if conn.execute(select(db.domains.c.id).where(db.domains.c.name == domain)).first():
        raise StoreError(f"domain {domain} is already hosted")
    conn.execute(insert(db.domains).values(name=domain, created_at=time.time()))
    return domain


def list_domains(conn: Connection) -> list[str]:
    return list(conn.execute(select(db.domains.c.name).order_by(db.domains.c.name)).scalars())


def set_relay(conn: Connection, domain: str, relay_to: str | None) -> None:
    """Send inbound mail for hosted *domain* to ``host:port`` (None: store it here)."""
    done = conn.execute(update(db.domains).where(db.domains.c.name == domain)
                        .values(relay_to=relay_to)).rowcount
    if not done:
        raise StoreError(f"domain {domain} is not hosted here")


def relay_of(conn: Connection, domain: str) -> str | None:
    """The next hop of a hosted domain, None when its mail is stored here."""
    value = conn.execute(_RELAY_BY_NAME, {"name": domain}).scalar()
    return str(value) if value else None


def list_relays(conn: Connection) -> dict[str, str]:
    rows = conn.execute(select(db.domains.c.name, db.domains.c.relay_to)
                        .where(db.domains.c.relay_to.is_not(None)))
    return {r.name: r.relay_to for r in rows}


def is_hosted_domain(conn: Connection, domain: str) -> bool:
    return conn.execute(_DOMAIN_BY_NAME, {"name": domain}).first() is not None


def domain_hosting(conn: Connection, domain: str) -> tuple[bool, str | None]:
    """(hosted, next hop) of *domain* in one query; the next hop is None when its mail is
    stored here (or the domain is not hosted)."""
    row = conn.execute(_RELAY_BY_NAME, {"name": domain}).first()
    if row is None:
        return False, None
    return True, (str(row.relay_to) if row.relay_to else None)


# --------------------------------------------------------------------------- mailboxes

def _mailbox_of(row: object) -> Mailbox:
    m = row._mapping  # type: ignore[attr-defined]
    return Mailbox(id=m["id"], address=m["address"], type=m["type"], enabled=bool(m["enabled"]),
                   rpps=m["rpps"], finess=m["finess"], created_at=m["created_at"],
                   password_hash=m["password_hash"], liste_rouge=bool(m["liste_rouge"]))


def add_mailbox(conn: Connection, keyring: crypto.Keyring, address: str, mailbox_type: str,
                *, rpps: str | None = None, finess: str | None = None,
                password_hash: str | None = None, liste_rouge: bool = False) -> Mailbox:
    address = _address(address)
    mailbox_type = mailbox_type.upper()
    if mailbox_type not in MAILBOX_TYPES:
        raise StoreError(f"invalid mailbox type {mailbox_type!r}: use PER, ORG or APP")
    if rpps is not None and not re.fullmatch(r"\d{11}", rpps):
        raise StoreError(f"invalid RPPS {rpps!r}: 11 digits expected")
    if finess is not None and not re.fullmatch(r"\d[0-9AB]\d{7}", finess):
        raise StoreError(f"invalid FINESS {finess!r}: 9 characters expected")
    if mailbox_type == "PER" and finess and not rpps:
        raise StoreError("a PER mailbox is a professional's: give --rpps")
    domain = address.split("@", 1)[1]
    domain_id = conn.execute(select(db.domains.c.id).where(db.domains.c.name == domain)).scalar()
    if domain_id is None:
        raise StoreError(f"domain {domain} is not hosted here (mss domain add {domain})")
    if conn.execute(select(db.mailboxes.c.id).where(db.mailboxes.c.address == address)).first():
        raise StoreError(f"mailbox {address} already exists")
    now = time.time()
    mailbox_id = conn.execute(insert(db.mailboxes).values(
        address=address, domain_id=domain_id, type=mailbox_type, rpps=rpps, finess=finess,
        password_hash=password_hash, enabled=True, created_at=now, liste_rouge=liste_rouge,
    )).inserted_primary_key[0]  # type: ignore[index]
    keyring.create_key(conn, crypto.mailbox_key_id(mailbox_id))
    first = next_uidvalidity(conn, mailbox_id, len(DEFAULT_FOLDERS))
    conn.execute(insert(db.folders), [
        {"mailbox_id": mailbox_id, "name": name, "special_use": use,
         "uidvalidity": first + i, "uidnext": 1, "highestmodseq": 1, "subscribed": True}
        for i, (name, use) in enumerate(DEFAULT_FOLDERS)
    ])
    return Mailbox(mailbox_id, address, mailbox_type, True, rpps, finess, now, password_hash,
                   liste_rouge)


def next_uidvalidity(conn: Connection, mailbox_id: int, count: int = 1) -> int:
    """The first of *count* new IMAP UIDVALIDITY values for folders of a mailbox.

    RFC 3501 §2.3.1.1: a (UIDVALIDITY, UID) pair never names two messages, so a folder
    deleted and recreated (even within the same second) must get a higher value. Values
    come from a per-mailbox counter (``mailboxes.last_uidvalidity``), above the clock and
    every value its folders hold (databases from before the counter), each used once."""
    last = conn.execute(select(db.mailboxes.c.last_uidvalidity)
                        .where(db.mailboxes.c.id == mailbox_id)).scalar() or 0
    held = conn.execute(select(func.max(db.folders.c.uidvalidity))
                        .where(db.folders.c.mailbox_id == mailbox_id)).scalar() or 0
    first = max(int(time.time()), last + 1, held + 1)
    if first + count - 1 > 0xFFFFFFFF:  # nz-number (RFC 3501 §9): 32 bits
        raise StoreError("UIDVALIDITY values of this mailbox are exhausted")
    conn.execute(update(db.mailboxes).where(db.mailboxes.c.id == mailbox_id)
                 .values(last_uidvalidity=first + count - 1))
    return first


# Statements on the SMTP hot path are built once; SQLAlchemy caches their compiled form.
_MAILBOX_BY_ADDRESS = select(db.mailboxes).where(db.mailboxes.c.address == bindparam("address"))
_DOMAIN_BY_NAME = select(db.domains.c.id).where(db.domains.c.name == bindparam("name"))
_RELAY_BY_NAME = select(db.domains.c.relay_to).where(db.domains.c.name == bindparam("name"))
_NEXT_INBOX_UID = (
    update(db.folders)
    .where((db.folders.c.mailbox_id == bindparam("mailbox")) & (db.folders.c.name == "INBOX"))
    .values(uidnext=db.folders.c.uidnext + 1, highestmodseq=db.folders.c.highestmodseq + 1)
    .returning(db.folders.c.id, db.folders.c.uidnext, db.folders.c.highestmodseq)
)


def get_mailbox(conn: Connection, address: str) -> Mailbox | None:
    row = conn.execute(_MAILBOX_BY_ADDRESS, {"address": address.lower()}).first()
    return _mailbox_of(row) if row else None


def require_mailbox(conn: Connection, address: str) -> Mailbox:
    mailbox = get_mailbox(conn, _address(address))
    if mailbox is None:
        raise StoreError(f"no mailbox {address}")
    return mailbox


def list_mailboxes(conn: Connection) -> list[Mailbox]:
    rows = conn.execute(select(db.mailboxes).order_by(db.mailboxes.c.address))
    return [_mailbox_of(r) for r in rows]


def disable_mailbox(conn: Connection, address: str) -> Mailbox:
    mailbox = require_mailbox(conn, address)
    if not mailbox.enabled:
        raise StoreError(f"mailbox {mailbox.address} is already disabled")
    conn.execute(update(db.mailboxes).where(db.mailboxes.c.id == mailbox.id)
                 .values(enabled=False, disabled_at=time.time()))
    return mailbox


def mailbox_counts(conn: Connection, mailbox_id: int) -> tuple[int, int]:
    """(messages, total bytes) in a mailbox."""
    row = conn.execute(select(func.count(), func.coalesce(func.sum(db.messages.c.size), 0))
                       .where(db.messages.c.mailbox_id == mailbox_id)).one()
    return int(row[0]), int(row[1])


# --------------------------------------------------------------------------- delivery

def new_id() -> str:
    return secrets.token_hex(16)


@dataclass
class LocalCopy:
    mailbox_id: int
    address: str
    message_id: str  # store id, bound into the ciphertext
    sealed: crypto.SealedMessage
    size: int


@dataclass
class QueuedCopy:
    rcpt: str
    domain: str
    queue_id: str
    sealed: crypto.SealedMessage
    size: int


@dataclass
class Delivery:
    """Everything one accepted message writes, in one transaction."""

    mail_from: str
    local: list[LocalCopy]
    queued: list[QueuedCopy]
    audit: list[AuditRecord]
    header_message_id: str | None
    received_at: float = field(default_factory=time.time)


def seal_local(keyring: crypto.Keyring, mailbox_id: int, address: str, data: bytes) -> LocalCopy:
    key_id = crypto.mailbox_key_id(mailbox_id)
    message_id = new_id()
    sealed = crypto.seal_message(keyring.key(key_id), key_id, message_id, data)
    return LocalCopy(mailbox_id, address, message_id, sealed, len(data))


def seal_queued(keyring: crypto.Keyring, rcpt: str, data: bytes,
                transaction: str | None = None) -> QueuedCopy:
    """A queue row's copy. Its id starts with the 16 characters of the SMTP transaction id
    (*transaction*, the id of ``250 ... queued as``) when given, so ``mss queue`` finds
    every row of that transaction by it."""
    queue_id = transaction[:16] + new_id()[:16] if transaction else new_id()
    sealed = crypto.seal_message(keyring.key(crypto.QUEUE_KEY_ID), crypto.QUEUE_KEY_ID,
                                 queue_id, data)
    return QueuedCopy(rcpt, rcpt.rsplit("@", 1)[1], queue_id, sealed, len(data))


def write_delivery(conn: Connection, delivery: Delivery) -> list[int]:
    """Store every copy and the audit records; returns the UIDs given in INBOX."""
    uids: list[int] = []
    message_rows = []
    for copy in delivery.local:
        folder = conn.execute(_NEXT_INBOX_UID, {"mailbox": copy.mailbox_id}).one()
        uid = folder.uidnext - 1
        uids.append(uid)
        message_rows.append({
            "id": copy.message_id, "mailbox_id": copy.mailbox_id, "folder_id": folder.id,
            "uid": uid, "size": copy.size, "internal_date": delivery.received_at, "flags": "",
            "modseq": folder.highestmodseq, "key_blob": copy.sealed.key_blob,
            "body_blob": copy.sealed.body_blob,
        })
    if message_rows:
        conn.execute(insert(db.messages), message_rows)
    if delivery.queued:
        patients = {r.detail.get("queue_id"): r.detail.get("patient") for r in delivery.audit
                    if r.event == "delivery.queued" and r.detail.get("patient")}
        conn.execute(insert(db.outbound_queue), [{
            "id": q.queue_id, "created_at": delivery.received_at,
            "mail_from": delivery.mail_from, "rcpt": q.rcpt, "domain": q.domain,
            "message_id": delivery.header_message_id, "size": q.size, "status": "queued",
            "attempts": 0, "next_attempt_at": delivery.received_at,
            "key_blob": q.sealed.key_blob, "body_blob": q.sealed.body_blob,
            "patient": patients.get(q.queue_id),
        } for q in delivery.queued])
    append(conn, delivery.audit)
    return uids


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


def read_queued(conn: Connection, keyring: crypto.Keyring, queue_id: str) -> bytes:
    row = conn.execute(select(db.outbound_queue.c.key_blob, db.outbound_queue.c.body_blob)
                       .where(db.outbound_queue.c.id == queue_id)).one()
    return crypto.open_message(keyring.key(crypto.QUEUE_KEY_ID, conn), crypto.QUEUE_KEY_ID,
                               queue_id, row.key_blob, row.body_blob)


def list_uids(conn: Connection, mailbox_id: int, folder: str = "INBOX") -> Sequence[int]:
    return list(conn.execute(
        select(db.messages.c.uid).join(db.folders, db.folders.c.id == db.messages.c.folder_id)
        .where((db.messages.c.mailbox_id == mailbox_id) & (db.folders.c.name == folder))
        .order_by(db.messages.c.uid)
    ).scalars())
