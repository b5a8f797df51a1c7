"""SMTP delivery and DSNs: sealed copies for local INBOXes and outbound queue rows, written
with their audit records in one transaction (the group committer's)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import Connection, insert, select

from audit.journal import AuditRecord, append
from mss import crypto, db
from mss.mailstore.messages import new_id
from mss.mailstore.state import bump


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
    notify: str | None = None  # RFC 3461 NOTIFY of this recipient (mss.dsn stored form)
    orcpt: str | None = None  # its ORCPT, "addr-type;address"


@dataclass
class Delivery:
    """Everything one accepted message writes, in one transaction."""

    mail_from: str
    local: list[LocalCopy]
    queued: list[QueuedCopy]
    audit: list[AuditRecord]
    header_message_id: str | None
    received_at: float = field(default_factory=time.time)
    ret: str | None = None  # RFC 3461 RET and ENVID of the transaction (queued copies)
    envid: str | None = None


def seal_local(keyring: crypto.Keyring, mailbox_id: int, address: str, data: bytes) -> LocalCopy:
    key_id = crypto.mailbox_key_id(mailbox_id)
    message_id = new_id()
    sealed = crypto.seal_message(keyring.key(key_id), key_id, message_id, data)
    return LocalCopy(mailbox_id, address, message_id, sealed, len(data))


def seal_queued(keyring: crypto.Keyring, rcpt: str, data: bytes,
                transaction: str | None = None, *, notify: str | None = None,
                orcpt: str | None = None) -> QueuedCopy:
    """A queue row's copy. Its id starts with the 16 characters of the SMTP transaction id
    (*transaction*, the id of ``250 ... queued as``) when given, so ``mss queue`` finds
    every row of that transaction by it."""
    queue_id = transaction[:16] + new_id()[:16] if transaction else new_id()
    sealed = crypto.seal_message(keyring.key(crypto.QUEUE_KEY_ID), crypto.QUEUE_KEY_ID,
                                 queue_id, data)
    return QueuedCopy(rcpt, rcpt.rsplit("@", 1)[1], queue_id, sealed, len(data), notify,
                      orcpt)


def write_delivery(conn: Connection, delivery: Delivery) -> list[int]:
    """Store every copy and the audit records; returns the UIDs given in INBOX."""
    uids: list[int] = []
    message_rows = []
    for copy in delivery.local:
        inbox = bump(conn, None, 1, inbox_of=copy.mailbox_id)
        uid = inbox.first_uid
        uids.append(uid)
        message_rows.append({
            "id": copy.message_id, "mailbox_id": copy.mailbox_id, "folder_id": inbox.folder_id,
            "uid": uid, "size": copy.size, "internal_date": delivery.received_at, "flags": "",
            "modseq": inbox.modseq, "key_blob": copy.sealed.key_blob,
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
            "dsn_notify": q.notify, "dsn_orcpt": q.orcpt, "dsn_ret": delivery.ret,
            "dsn_envid": delivery.envid,
        } for q in delivery.queued])
    append(conn, delivery.audit)
    return uids


def read_queued(conn: Connection, keyring: crypto.Keyring, queue_id: str) -> bytes:
    row = conn.execute(select(db.outbound_queue.c.key_blob, db.outbound_queue.c.body_blob)
                       .where(db.outbound_queue.c.id == queue_id)).one()
    return crypto.open_message(keyring.key(crypto.QUEUE_KEY_ID, conn), crypto.QUEUE_KEY_ID,
                               queue_id, row.key_blob, row.body_blob)
