"""Helpers on RFC 5322 messages for SMTP: header values, author fields, trace fields.

Header fields are read by the node's one MIME reader (:mod:`mss.mime`, the header block only:
no MIME parse on the SMTP hot path), so a check sees the fields an IMAP client is shown.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from email import errors as email_errors
from email import policy as email_policy
from email.utils import formatdate
from typing import Any

from mss.mime import HeaderField, header_bounds, header_fields


def header_block(data: bytes) -> bytes:
    """The header section including its final CRLF (the whole message if no body)."""
    end, _ = header_bounds(data, 0, len(data))
    return data[:end]


def _fields(data: bytes) -> list[HeaderField]:
    end, _ = header_bounds(data, 0, len(data))
    return header_fields(data, 0, end)


def find_header(data: bytes, name: str) -> str | None:
    """First value of header *name*, unfolded (RFC 5322 §2.2.3), or None."""
    wanted = name.lower().encode("ascii")
    for f in _fields(data):
        if f.name == wanted:
            return f.value.replace(b"\n", b"").decode("utf-8", "replace").strip()
    return None


def _address_field(data: bytes, f: HeaderField) -> Any:
    """The stdlib's strict reading of an address field (its defects tell a syntax a reader
    might show otherwise), from the value as the stdlib parser would give it (RFC 5322
    §2.2.3 unfolded; 8-bit bytes surrogate-escaped)."""
    name = data[f.start:f.start + len(f.name)].decode("ascii")
    # the registry's class: BaseHeader (name, defects) + AddressHeader (groups, addresses)
    return email_policy.default.header_fetch_parse(
        name, f.value.decode("ascii", "surrogateescape"))


@dataclass(frozen=True)
class Authors:
    """The author fields of a message (RFC 5322 §3.6.2), as addr-specs."""

    from_: tuple[str, ...] = ()
    sender: str | None = None
    problem: str | None = None  # why the fields are not valid RFC 5322, when they are not


def authors(data: bytes) -> Authors:
    """``From:`` and ``Sender:`` addresses, or the problem that makes them unusable: no or
    several ``From`` fields, several ``Sender`` fields or addresses, a group, a syntax
    defect (where a reader might display another address than the one parsed). 8-bit
    display names (raw UTF-8) are tolerated."""
    try:
        fields = _fields(data)  # the fields every reader of the node sees (mss.mime)
        froms = [_address_field(data, f) for f in fields if f.name == b"from"]
        senders = [_address_field(data, f) for f in fields if f.name == b"sender"]
        if len(froms) != 1:
            return Authors(problem=f"{len(froms)} From fields (RFC 5322 §3.6: exactly one)")
        if len(senders) > 1:
            return Authors(problem=f"{len(senders)} Sender fields (RFC 5322 §3.6: at most one)")
        for field in (*froms, *senders):
            defects = [d for d in field.defects
                       if not isinstance(d, email_errors.UndecodableBytesDefect)]
            if defects:
                return Authors(problem=f"{field.name}: {type(defects[0]).__name__}")
            if any(group.display_name is not None for group in field.groups):
                return Authors(problem=f"{field.name}: a group (RFC 5322 §3.6.2: mailboxes)")
        from_ = tuple(a.addr_spec for a in froms[0].addresses)
        sender = [a.addr_spec for a in senders[0].addresses] if senders else []
    except Exception as exc:  # noqa: BLE001 - the stdlib parser on hostile input
        return Authors(problem=f"unparsable author field ({type(exc).__name__})")
    if not from_:
        return Authors(problem="From: no address")
    if len(sender) > 1:
        return Authors(problem="Sender: several addresses (RFC 5322 §3.6.2: one mailbox)")
    return Authors(from_=from_, sender=sender[0] if sender else None)


def message_id(data: bytes) -> str | None:
    value = find_header(data, "Message-ID")
    return value[:998] if value else None


def has_bare_cr_or_lf(data: bytes | bytearray) -> bool:
    """True when CR or LF occurs outside a CRLF pair (RFC 5321 §2.3.8)."""
    crlf = data.count(b"\r\n")
    return data.count(b"\r") != crlf or data.count(b"\n") != crlf


def longest_line(data: bytes | bytearray) -> int:
    """Length of the longest line, its CRLF included (C-speed split, one pass)."""
    return max(map(len, data.split(b"\n"))) + 1


def new_message_id(hostname: str) -> str:
    return f"<{int(time.time())}.{secrets.token_hex(8)}@{hostname}>"


def received_header(*, helo: str, peer_ip: str, hostname: str, protocol: str, queue_id: str,
                    recipient: str | None) -> bytes:
    """RFC 5321 §4.4 trace header (RFC 3848 protocol names: ESMTPS, ESMTPSA)."""
    for_clause = f"\r\n\tfor <{recipient}>" if recipient else ""
    helo_clean = re.sub(r"[^A-Za-z0-9.\-\[\]:_]", "?", helo)[:255]
    return (f"Received: from {helo_clean} ([{peer_ip}])\r\n\tby {hostname} (mss) with "
            f"{protocol} id {queue_id}{for_clause};\r\n\t{formatdate(usegmt=True)}\r\n"
            ).encode("ascii")
