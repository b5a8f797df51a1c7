"""Byte-level helpers on RFC 5322 messages (no full MIME parse on the SMTP hot path)."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from email import errors as email_errors
from email import policy as email_policy
from email.parser import BytesHeaderParser
from email.utils import formatdate

_HEADER_END = re.compile(rb"\r\n\r\n")


def header_block(data: bytes) -> bytes:
    """The header section including its final CRLF (the whole message if no body)."""
    if data.startswith(b"\r\n"):
        return b""
    match = _HEADER_END.search(data)
    return data[: match.start() + 2] if match else data


def find_header(data: bytes, name: str) -> str | None:
    """First value of header *name*, unfolded (RFC 5322 §2.2.3), or None."""
    wanted = name.lower().encode("ascii") + b":"
    lines = header_block(data).split(b"\r\n")
    for i, line in enumerate(lines):
        if line[: len(wanted)].lower() == wanted:
            parts = [line[len(wanted):]]  # joined once: linear in the folded lines
            for cont in lines[i + 1:]:
                if cont[:1] in (b" ", b"\t"):
                    parts.append(cont)
                else:
                    break
            return b"".join(parts).decode("utf-8", "replace").strip()
    return None


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
        fields = BytesHeaderParser(policy=email_policy.default).parsebytes(header_block(data))
        froms, senders = fields.get_all("From") or [], fields.get_all("Sender") or []
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
