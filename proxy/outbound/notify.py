"""The DSN for a failed row, stored in the sender's own mailbox (RFC 3464).

Only a hosted, enabled sender gets one (submission mail); never for a null reverse-path or
for a message that is itself a report (RFC 3464 §2, RFC 5321 §4.5.5). The DSN copy is
written in the same transaction as the row's final status, so it exists exactly once.
"""

from __future__ import annotations

import time

from sqlalchemy import Connection

from audit.journal import AuditRecord
from mss import crypto, store
from proxy.outbound.claims import Claim
from proxy.outbound.dsn import build_dsn, is_report


def dsn_copy(conn: Connection, keyring: crypto.Keyring, reporting_mta: str, c: Claim,
             original: bytes | None, status: str, reason: str, reply: str | None,
             remote_mta: str | None) -> tuple[store.LocalCopy | None, str]:
    """The sealed DSN for *c*'s sender, or None and why not."""
    if not c.mail_from:
        return None, "null reverse-path: no DSN"
    if original is not None and is_report(original):
        return None, "the message is a delivery report: no DSN for a DSN"
    mailbox = store.get_mailbox(conn, c.mail_from)
    if mailbox is None or not mailbox.enabled:
        return None, f"sender {c.mail_from} has no local mailbox: no DSN"
    data = build_dsn(reporting_mta=reporting_mta, mail_from=c.mail_from, rcpt=c.rcpt,
                     original=original or b"", action="failed", status=status,
                     diagnostic=reply, remote_mta=remote_mta, arrival=c.created_at,
                     explanation=reason)
    return store.seal_local(keyring, mailbox.id, mailbox.address, data), "DSN stored"


def dsn_delivery(copy: store.LocalCopy, c: Claim) -> store.Delivery:
    record = AuditRecord("delivery.local", actor="mss", mailbox=copy.address,
                         rcpt=copy.address, message_id=c.message_id,
                         detail={"store_id": copy.message_id, "dsn_for": c.id,
                                 "size": copy.size})
    return store.Delivery(mail_from="", local=[copy], queued=[], audit=[record],
                          header_message_id=None, received_at=time.time())
