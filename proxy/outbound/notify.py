"""The DSN for a failed row (RFC 3464), to its sender wherever it is.

RFC 5321 §6.1: a server that accepted a message and then cannot deliver it MUST send a
notification to the reverse-path. A hosted, enabled sender (submission mail) gets the DSN
in its own INBOX. A sender elsewhere in the trust space (mail our MX accepted for a domain
we relay to its next hop) or behind a next hop of ours gets it through the outbound queue,
``MAIL FROM:<>`` (RFC 5321 §4.5.5), with the same checks as any delivery. Never for a null
reverse-path or for a message that is itself a report (RFC 3464 §2), so a DSN never loops;
never to a domain outside the trust space (default deny). The DSN copy is written in the
same transaction as the row's final status, so it exists exactly once.
"""

from __future__ import annotations

import time

from sqlalchemy import Connection

from audit.events import Event
from audit.journal import AuditRecord
from mss import crypto
from mss.mailstore import deliveries, domains, mailboxes
from proxy.outbound.claims import Claim
from proxy.outbound.dsn import build_dsn, is_report
from trustspace.whitelist import Whitelist

DsnCopy = deliveries.LocalCopy | deliveries.QueuedCopy


def _sender_route(conn: Connection, sender: str, whitelist: Whitelist
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
    if whitelist.is_whitelisted(domain):
        return None, None  # another operator of the trust space, through the queue
    return None, f"sender domain {domain} is outside the trust space: no DSN"


def dsn_copy(conn: Connection, keyring: crypto.Keyring, reporting_mta: str, c: Claim,
             original: bytes | None, status: str, reason: str, reply: str | None,
             remote_mta: str | None, whitelist: Whitelist) -> tuple[DsnCopy | None, str]:
    """The sealed DSN for *c*'s sender (a local copy or a queue row), or None and why not."""
    if not c.mail_from:
        return None, "null reverse-path: no DSN"
    if original is not None and is_report(original):
        return None, "the message is a delivery report: no DSN for a DSN"
    mailbox, why_not = _sender_route(conn, c.mail_from, whitelist)
    if why_not is not None:
        return None, why_not
    data = build_dsn(reporting_mta=reporting_mta, mail_from=c.mail_from, rcpt=c.rcpt,
                     original=original or b"", action="failed", status=status,
                     diagnostic=reply, remote_mta=remote_mta, arrival=c.created_at,
                     explanation=reason)
    if mailbox is not None:
        return deliveries.seal_local(keyring, mailbox.id, mailbox.address, data), "DSN stored"
    return deliveries.seal_queued(keyring, c.mail_from, data), "DSN queued to the sender"


def dsn_delivery(copy: DsnCopy, c: Claim) -> deliveries.Delivery:
    if isinstance(copy, deliveries.LocalCopy):
        record = AuditRecord(Event.DELIVERY_LOCAL, actor="mss", mailbox=copy.address,
                             rcpt=copy.address, message_id=c.message_id,
                             detail={"store_id": copy.message_id, "dsn_for": c.id,
                                     "size": copy.size})
        local, queued = [copy], []
    else:
        record = AuditRecord(Event.DELIVERY_QUEUED, actor="mss", rcpt=copy.rcpt,
                             message_id=c.message_id,
                             detail={"queue_id": copy.queue_id, "dsn_for": c.id,
                                     "size": copy.size})
        local, queued = [], [copy]
    return deliveries.Delivery(mail_from="", local=local, queued=queued, audit=[record],
                          header_message_id=None, received_at=time.time())
