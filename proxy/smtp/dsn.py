"""The listeners' part of RFC 3461: the ``delivered`` report of a local delivery.

The parameters themselves are read by :class:`proxy.smtp.protocol.MssSMTP` (``RET``,
``ENVID``, ``NOTIFY``, ``ORCPT``, :mod:`mss.dsn`) and kept on the envelope; remote
recipients carry theirs through the outbound queue, where the worker passes them to
DSN-capable peers or reports ``relayed`` / ``delayed`` / ``failed`` itself
(proxy/outbound/notify.py). A recipient stored here whose NOTIFY has SUCCESS gets a
``delivered`` report (RFC 3461 §6.2.1 "delivered": the message reached the mailbox),
written in the message's own transaction (proxy/smtp/handler.py), routed by
:mod:`mss.mailstore.reports` (never for a null sender or a report, never outside the
trust space).
"""

from __future__ import annotations

import time

from mss.dsn import RecipientReport, build_report, is_report, wants
from proxy.smtp.session import MssEnvelope


def delivered_report(reporting_mta: str, mail_from: str, stored: bytes,
                     envelope: MssEnvelope, now: float | None = None) -> bytes | None:
    """One report naming every local recipient that asked for SUCCESS, or None."""
    if not mail_from or is_report(stored):
        return None
    now = time.time() if now is None else now
    recipients = []
    for address in envelope.local:
        params = envelope.dsn_rcpt.get(address)
        if params is None or params.notify is None or not wants(params.notify, "SUCCESS"):
            continue  # absent NOTIFY: no success report (RFC 3461 §4.1)
        recipients.append(RecipientReport(address, "delivered", "2.0.0",
                                          params.original_recipient, last_attempt=now))
    if not recipients:
        return None
    return build_report(reporting_mta=reporting_mta, mail_from=mail_from, original=stored,
                        recipients=recipients, arrival=now,
                        explanation="The message was stored in the recipient's mailbox.",
                        envid=envelope.dsn_mail.envid, now=now)
