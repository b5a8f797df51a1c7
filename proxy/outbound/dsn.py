"""Delivery status notifications (RFC 3464) for the sender of a failed message.

A ``multipart/report; report-type=delivery-status`` (RFC 6522) with three parts: a short
human-readable text, the ``message/delivery-status`` fields, and the original message's
header block only (``text/rfc822-headers``), never its body.
"""

from __future__ import annotations

import email.utils
import secrets
import time

from mss import message as rfc5322


def is_report(data: bytes) -> bool:
    """Is *data* itself a delivery report? (RFC 3464 §2: never a DSN for a DSN.)"""
    ctype = (rfc5322.find_header(data, "Content-Type") or "").lower()
    return "multipart/report" in ctype and "delivery-status" in ctype


def _field(text: str) -> str:
    """One header field value: no CR/LF, bounded."""
    return " ".join(text.split())[:900]


def build_dsn(*, reporting_mta: str, mail_from: str, rcpt: str, original: bytes,
              action: str, status: str, diagnostic: str | None, remote_mta: str | None,
              arrival: float, explanation: str, now: float | None = None) -> bytes:
    """The whole DSN message (CRLF line ends). *action* is ``failed`` (RFC 3464 §2.3.3)."""
    now = time.time() if now is None else now
    boundary = f"mss-dsn-{secrets.token_hex(12)}"
    date = email.utils.formatdate(now)
    headers = rfc5322.header_block(original).rstrip(b"\r\n") + b"\r\n"
    lines = [
        f"From: Mail Delivery System <mailer-daemon@{reporting_mta}>",
        f"To: <{mail_from}>",
        "Subject: Undelivered message (delivery status notification)",
        f"Date: {date}",
        f"Message-ID: {rfc5322.new_message_id(reporting_mta)}",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        f"Your message to <{rcpt}> could not be delivered.",
        "",
        _field(explanation),
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        # RFC 3464 §2.2 per-message fields
        f"Reporting-MTA: dns; {reporting_mta}",
        f"Arrival-Date: {email.utils.formatdate(arrival)}",
        "",
        # RFC 3464 §2.3 per-recipient fields
        f"Final-Recipient: rfc822; {rcpt}",
        f"Action: {action}",
        f"Status: {status}",
    ]
    if remote_mta:
        lines.append(f"Remote-MTA: dns; {_field(remote_mta)}")
    if diagnostic:
        lines.append(f"Diagnostic-Code: smtp; {_field(diagnostic)}")
    lines += [f"Last-Attempt-Date: {date}", "", f"--{boundary}",
              "Content-Type: text/rfc822-headers", "", ""]
    text = "\r\n".join(lines).encode("utf-8")
    return text + headers + f"\r\n--{boundary}--\r\n".encode("ascii")
