"""IMAP string encoding for responses (RFC 3501 §4.3, §9 "string", "astring", "literal")."""

from __future__ import annotations

_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0x00, 0x20)) | {0x7F}
_QUOTABLE_OUT = frozenset(b"\r\n\0")


def string(value: bytes | str) -> bytes:
    """A quoted string when it can be one, else a synchronising literal."""
    data = value.encode() if isinstance(value, str) else value
    if any(b in _QUOTABLE_OUT or b > 0x7F for b in data) or len(data) > 1024:
        return literal(data)
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def astring(value: bytes | str) -> bytes:
    """An atom when every byte is an ATOM-CHAR (and it is not NIL), else a string."""
    data = value.encode() if isinstance(value, str) else value
    if data and data.upper() != b"NIL" and not any(b in _ATOM_SPECIALS or b > 0x7F
                                                    for b in data):
        return data
    return string(data)


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data
