"""Where a delivery report for a sender goes (RFC 3461 §6, RFC 5321 §6.1), sealed.

A hosted, enabled sender (submission mail) gets the report in its own INBOX. A sender
elsewhere in the trust space (mail our MX accepted from another operator, or for a domain
we relay to its next hop) or behind a next hop of ours gets it through the outbound queue
with ``MAIL FROM:<>`` (RFC 5321 §4.5.5), checked like any delivery. Never for a null
reverse-path or for a message that is itself a report (RFC 3464 §2), so a report never
loops; never to a domain outside the trust space (default deny: *whitelisted* is the
whitelist in force). Shared by the queue's reports (failed, delayed, relayed) and the
listeners' ``delivered`` reports; the caller writes the copy with its own transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection

from audit.events import Event
from audit.journal import AuditRecord
from mss import crypto
from mss.dsn import is_report
from mss.mailstore import deliveries, domains, mailboxes

ReportCopy = deliveries.LocalCopy | deliveries.QueuedCopy


def sender_route(conn: Connection, sender: str, whitelisted: Callable[[str], bool]
                 ) -> tuple[mailboxes.Mailbox | None, str | None]:
    """(the sender's local mailbox, None), (None, None) to queue it, or (None, why not)."""
    mailbox = mailboxes.get_mailbox(conn, sender)
    if mailbox is not None:
        return (mailbox, None) if mailbox.enabled else \
            (None, f"sender {sender} has a disabled mailbox: no DSN")
    domain = sender.rsplit("@", 1)[-1]
    hosted, next_hop = domains.domain_hosting(conn, domain)
    if hosted:
        if next_hop is not None:
            return None, None  # our institution's own server, through the queue
        return None, f"sender {sender} has no mailbox here: no DSN"
    if whitelisted(domain):
        return None, None  # another operator of the trust space, through the queue
    return None, f"sender domain {domain} is outside the trust space: no DSN"


def may_report(sender: str, original: bytes | None) -> str | None:
    """Why no report may be sent about *original* to *sender*, or None."""
    if not sender:
        return "null reverse-path: no DSN"
    if original is not None and is_report(original):
        return "the message is a delivery report: no DSN for a DSN"
    return None


def report_copy(conn: Connection, keyring: crypto.Keyring, sender: str, report: bytes,
                whitelisted: Callable[[str], bool]) -> tuple[ReportCopy | None, str]:
    """The sealed report for *sender* (a local copy or a queue row), or None and why not."""
    mailbox, why_not = sender_route(conn, sender, whitelisted)
    if why_not is not None:
        return None, why_not
    if mailbox is not None:
        return deliveries.seal_local(keyring, mailbox.id, mailbox.address, report), \
            "DSN stored"
    return deliveries.seal_queued(keyring, sender, report), "DSN queued to the sender"


def report_delivery(copy: ReportCopy, message_id: str | None, about: str,
                    action: str) -> deliveries.Delivery:
    """The copy's write with its audit record (delivery.local or delivery.queued, detail
    ``dsn_for``: the queue row or store id the report is about, ``dsn_action``)."""
    detail = {"dsn_for": about, "dsn_action": action, "size": copy.size}
    if isinstance(copy, deliveries.LocalCopy):
        record = AuditRecord(Event.DELIVERY_LOCAL, actor="mss", mailbox=copy.address,
                             rcpt=copy.address, message_id=message_id,
                             detail={"store_id": copy.message_id, **detail})
        local, queued = [copy], []
    else:
        record = AuditRecord(Event.DELIVERY_QUEUED, actor="mss", rcpt=copy.rcpt,
                             message_id=message_id,
                             detail={"queue_id": copy.queue_id, **detail})
        local, queued = [], [copy]
    return deliveries.Delivery(mail_from="", local=local, queued=queued, audit=[record],
                               header_message_id=None, received_at=time.time())
