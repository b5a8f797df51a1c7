"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3).

Printable US-ASCII except ``&`` stands for itself, ``&`` is ``&-``, every other run of
characters is ``&`` + modified BASE64 (``,`` for ``/``, no padding) of its UTF-16BE + ``-``.
Decoding accepts only the canonical form, so one name has one spelling on the wire.
"""

from __future__ import annotations

import binascii

from proxy.imap.tokens import ImapParseError

_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


def _printable(ch: str) -> bool:
    return "\x20" <= ch <= "\x7e"


def _encode_run(run: str) -> str:
    data = run.encode("utf-16-be")
    return "&" + binascii.b2a_base64(data, newline=False).decode().rstrip("=").replace(
        "/", ",") + "-"


def encode_mailbox_name(name: str) -> str:
    """Modified UTF-7 of a mailbox name (raises UnicodeEncodeError on lone surrogates)."""
    if all(_printable(ch) and ch != "&" for ch in name):
        return name
    out: list[str] = []
    run_start = -1
    for i, ch in enumerate(name):
        if _printable(ch):
            if run_start >= 0:
                out.append(_encode_run(name[run_start:i]))
                run_start = -1
            out.append("&-" if ch == "&" else ch)
        elif run_start < 0:
            run_start = i
    if run_start >= 0:
        out.append(_encode_run(name[run_start:]))
    return "".join(out)


def _bad(name: str, why: str) -> ImapParseError:
    return ImapParseError(f"invalid modified UTF-7 mailbox name {name!r}: {why}")


def _decode_run(name: str, b64: str) -> str:
    if any(c not in _B64_CHARS for c in b64):
        raise _bad(name, "invalid character in BASE64 part")
    nbits = len(b64) * 6
    nbytes = nbits // 8
    if nbytes % 2 or len(b64) != -(-nbytes * 8 // 6):
        raise _bad(name, "BASE64 part is not whole UTF-16 units")
    padded = b64.replace(",", "/") + "=" * (-len(b64) % 4)
    try:
        data = binascii.a2b_base64(padded, strict_mode=True)
    except binascii.Error as exc:
        raise _bad(name, "invalid BASE64") from exc
    # RFC 3501 §5.1.3 / RFC 2152: the bits after the last whole octet must be zero.
    if binascii.b2a_base64(data, newline=False).decode().rstrip("=") != padded.rstrip("="):
        raise _bad(name, "non-zero padding bits in BASE64 part")
    try:
        text = data.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise _bad(name, "invalid UTF-16 (unpaired surrogate)") from exc
    if any(_printable(ch) for ch in text):
        raise _bad(name, "printable US-ASCII must not be BASE64 encoded")
    return text


def decode_mailbox_name(name: str) -> str:
    """The Unicode name; :class:`ImapParseError` unless ``name`` is canonical modified UTF-7."""
    if "&" not in name and all(_printable(ch) for ch in name):
        return name
    out: list[str] = []
    i = 0
    last_shift_end = -1  # index just after the "-" closing the previous BASE64 run
    while i < len(name):
        ch = name[i]
        if ch != "&":
            if not _printable(ch):
                raise _bad(name, f"character {ch!r} must be BASE64 encoded")
            out.append(ch)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise _bad(name, "unterminated & shift (missing '-')")
        if end == i + 1:
            out.append("&")
        else:
            if last_shift_end == i:
                raise _bad(name, "adjacent BASE64 shifts must be one shift")
            out.append(_decode_run(name, name[i + 1:end]))
            last_shift_end = end + 1
        i = end + 1
    return "".join(out)
