"""Delivery status notifications read back with Python's email package (RFC 6522, RFC 3464),
for the DSN tests against mss and against Postfix."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage, Message


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def status_fields(raw: bytes) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The per-message fields and each recipient's fields of a report (RFC 3464 §2)."""
    report = parse(raw)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    parts = list(report.iter_parts())
    status = parts[1]
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    assert isinstance(blocks, list)

    def fields(block: Message) -> dict[str, str]:
        return {k: str(v) for k, v in block.items()}
    return fields(blocks[0]), [fields(b) for b in blocks[1:]]
