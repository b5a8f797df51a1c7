"""The queue's delivery reports (RFC 3464), to a row's sender wherever it is.

RFC 5321 §6.1: a server that accepted a message and then cannot deliver it MUST send a
notification to the reverse-path; RFC 3461 lets the sender ask for more, per recipient
(NOTIFY, kept on the row): ``failed`` (bounced or expired), ``delayed`` (still queued after
delivery.delay_warning), ``relayed`` (delivered to a peer that does not offer DSN, so no
report of the final delivery will come, RFC 3461 §5.2.2). NOTIFY=NEVER: none; absent:
failures and delays. Where a report goes (the sender's INBOX, or the queue with
``MAIL FROM:<>``), and never for a null reverse-path, a report, or outside the trust space:
:mod:`mss.mailstore.reports`. The report is written in the same transaction as the row's
new status, so it exists exactly once.
"""

from __future__ import annotations

from types import MappingProxyType

from sqlalchemy import Connection

from mss import crypto
from mss.dsn import build_dsn, wants
from mss.mailstore import deliveries
from mss.mailstore.reports import may_report as report_refusal
from mss.mailstore.reports import report_copy, report_delivery
from proxy.outbound.claims import Claim
from trustspace.whitelist import Whitelist

DsnCopy = deliveries.LocalCopy | deliveries.QueuedCopy
# RFC 3461 §4.1: the NOTIFY keyword of each action
KINDS = MappingProxyType({"failed": "FAILURE", "delayed": "DELAY", "relayed": "SUCCESS",
                          "delivered": "SUCCESS"})


def dsn_copy(conn: Connection, keyring: crypto.Keyring, reporting_mta: str, c: Claim,
             original: bytes | None, status: str, reason: str, reply: str | None,
             remote_mta: str | None, whitelist: Whitelist, *, action: str = "failed",
             will_retry_until: float | None = None) -> tuple[DsnCopy | None, str]:
    """The sealed report for *c*'s sender (a local copy or a queue row), or None and why
    not."""
    why_not = report_refusal(c.mail_from, original)
    if why_not is not None:
        return None, why_not
    if not wants(c.dsn_notify, KINDS[action]):
        return None, f"NOTIFY={c.dsn_notify}: no {action} DSN"
    data = build_dsn(reporting_mta=reporting_mta, mail_from=c.mail_from, rcpt=c.rcpt,
                     original=original or b"", action=action, status=status,
                     diagnostic=reply, remote_mta=remote_mta, arrival=c.created_at,
                     explanation=reason, envid=c.dsn_envid, ret=c.dsn_ret,
                     original_recipient=_original_recipient(c.dsn_orcpt),
                     will_retry_until=will_retry_until)
    return report_copy(conn, keyring, c.mail_from, data, whitelist.is_whitelisted)


def _original_recipient(orcpt: str | None) -> str | None:
    if orcpt is None:
        return None
    kind, _, address = orcpt.partition(";")
    return f"{kind}; {address}"


def dsn_delivery(copy: DsnCopy, c: Claim, action: str = "failed") -> deliveries.Delivery:
    return report_delivery(copy, c.message_id, c.id, action)
