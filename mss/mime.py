"""MIME structure of a message for FETCH and SEARCH (RFC 2045/2046, RFC 3501 §6.4.5, §7.4.2).

The parser works on byte offsets into the message as stored (no copies, no email object
model). Work is done on demand: :meth:`ParsedMessage.envelope` reads the top header block
only; the part tree is built the first time a part, BODYSTRUCTURE or text is asked for.
Lines may end in CRLF or bare LF. Output mimics Dovecot 2.3 where RFC 3501 leaves a choice
(lower-case defaults ``"text" "plain"``, ``"7bit"``; MISSING_DOMAIN for incomplete addresses).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from proxy.imap.tokens import ImapParseError

_MAX_DEPTH = 100  # nesting bound (multipart / message/rfc822), as Dovecot's message parser
_MAX_PARTS = 10_000

_BLANK_LINE = re.compile(rb"\n\r?\n")
# RFC 5322 §2.2: field-name is printable US-ASCII except ":"; unfolded value up to the next
# line that does not start with white space.
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.M)
_ENVELOPE_FIELD = re.compile(
    rb"^(date|subject|from|sender|reply-to|to|cc|bcc|in-reply-to|message-id)[ \t]*:"
    rb"([^\n]*(?:\n[ \t][^\n]*)*)", re.M | re.I)


# ---------------------------------------------------------------- header fields


class HeaderField(NamedTuple):
    name: bytes  # lower case
    start: int  # offset of the first byte of the field
    end: int  # offset after the field's last line ending
    value: bytes  # white space after the colon stripped, folds kept as LF


def _field_value(value: bytes) -> bytes:
    """RFC 5322 §2.2.3 unfolding, keeping the line breaks as LF (as Dovecot does, so that
    the ENVELOPE quoting can tell a folded value)."""
    value = value.lstrip(b" \t")
    if b"\n" in value:
        value = value.replace(b"\r\n", b"\n")
    if value.endswith(b"\r"):
        value = value[:-1]
    return value


def _header_fields(raw: bytes, start: int, end: int) -> list[HeaderField]:
    fields: list[HeaderField] = []
    for m in _FIELD.finditer(raw, start, end):
        value = _field_value(m.group(2))
        stop = m.end()
        if stop < end and raw[stop] == 0x0A:
            stop += 1
        fields.append(HeaderField(m.group(1).lower(), m.start(), stop, value))
    return fields


def _header_end(raw: bytes, start: int, limit: int) -> tuple[int, int]:
    """``(end of the fields, start of the body)`` of the header block at ``start``."""
    if raw.startswith(b"\n", start):
        return start, start + 1
    if raw.startswith(b"\r\n", start):
        return start, start + 2
    m = _BLANK_LINE.search(raw, start, limit)
    if m is None:
        return limit, limit
    return m.start() + 1, m.end()


# ---------------------------------------------------------------- RFC 5322 / 2045 lexer


_SPECIALS = b'()<>@,;:\\".[]'
_TSPECIALS = b'()<>@,;:\\"/[]?='


def _skip_cfws(s: bytes, i: int, comments: list[bytes] | None = None) -> int:
    n = len(s)
    while i < n:
        c = s[i]
        if c in b" \t\r\n":
            i += 1
        elif c == 0x28:  # "(" comment, nested (RFC 5322 §3.2.2)
            depth, j, buf = 1, i + 1, bytearray()
            while j < n and depth:
                d = s[j]
                if d == 0x5C and j + 1 < n:
                    buf.append(s[j + 1])
                    j += 2
                    continue
                if d == 0x28:
                    depth += 1
                elif d == 0x29:
                    depth -= 1
                    if not depth:
                        break
                buf.append(d)
                j += 1
            if comments is not None:
                comments.append(bytes(buf))
            i = j + 1
        else:
            break
    return i


def _quoted(s: bytes, i: int) -> tuple[bytes, int]:
    """Content of the quoted-string opening at ``s[i]`` and the index after it."""
    n, j, buf = len(s), i + 1, bytearray()
    while j < n:
        c = s[j]
        if c == 0x5C and j + 1 < n:
            buf.append(s[j + 1])
            j += 2
            continue
        if c == 0x22:
            return bytes(buf), j + 1
        if c not in b"\r\n":
            buf.append(c)
        j += 1
    return bytes(buf), n


def _token(s: bytes, i: int, stop: bytes) -> tuple[bytes, int]:
    j, n = i, len(s)
    while j < n and s[j] not in stop and s[j] > 0x20 and s[j] != 0x7F:
        j += 1
    return s[i:j], j


# ---------------------------------------------------------------- IMAP strings (RFC 3501 §4.3)
# Written as Dovecot does, so answers are byte-identical: a quoted string unless the value has
# CR, LF, 8-bit or more than 4 quoted-specials, then a literal.

_QUOTE_FAST = re.compile(rb'[\x00\r\n"\\\x80-\xff]')
_HUMAN_FAST = re.compile(rb'[\x00\t\r\n"\\\x80-\xff]|  |^ | $')
_LWSP_RUN = re.compile(rb"[ \t]+")


def _nstring(value: bytes | None) -> bytes:
    if value is None:
        return b"NIL"
    if _QUOTE_FAST.search(value) is None:
        return b'"' + value + b'"'
    if (b"\r" in value or b"\n" in value or not value.isascii()
            or value.count(b'"') + value.count(b"\\") > 4):
        return b"{%d}\r\n" % len(value) + value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


_LINE_BREAK_BEFORE_TEXT = re.compile(rb"[\r\n](?=[^ \t\r\n])")


def _nstring_nolf(value: bytes | None) -> bytes:
    """A folded header value on one line (a break before text becomes a space)."""
    if value is not None and (b"\n" in value or b"\r" in value):
        value = _LINE_BREAK_BEFORE_TEXT.sub(b" ", value).replace(b"\r", b"").replace(b"\n", b"")
    return _nstring(value)


def _humans(value: bytes) -> bytes:
    """Subject and display names: white space runs made one space and trimmed, NUL made
    0x80; any such change, a quote or 8-bit makes it a literal (Dovecot's "for humans")."""
    if _HUMAN_FAST.search(value) is None:
        return b'"' + value + b'"'
    text = _LWSP_RUN.sub(b" ", value.replace(b"\r", b"").replace(b"\n", b"")).strip(b" ")
    if not text:
        return b'""'
    return b"{%d}\r\n" % len(text) + text.replace(b"\0", b"\x80")


# ---------------------------------------------------------------- addresses (RFC 5322 §3.4)


@dataclass(frozen=True, slots=True)
class Address:
    """One ENVELOPE address: ``(name adl mailbox host)``; a group start has host None and
    mailbox the group name, a group end has all four None (RFC 3501 §7.4.2)."""

    name: bytes | None
    adl: bytes | None
    mailbox: bytes | None
    host: bytes | None


_MISSING_MAILBOX = b"MISSING_MAILBOX"
_MISSING_DOMAIN = b"MISSING_DOMAIN"


class _AddressParser:
    """RFC 5322 §3.4 address-list, lenient like Dovecot's message-address parser."""

    def __init__(self, s: bytes) -> None:
        self.s = s
        self.i = 0
        self.out: list[Address] = []
        self.broken = False

    def phrase(self, stop: bytes) -> bytes | None:
        """Display-name words up to a character of ``stop``: runs of white space and comments
        between words become one space, "." (obs-phrase) is kept; None if no word."""
        s, out = self.s, bytearray()
        seen = False
        while True:
            before = self.i
            self.i = _skip_cfws(s, self.i)
            if self.i >= len(s) or s[self.i] in stop:
                return bytes(out) if seen else None
            if seen and self.i > before:
                out.append(0x20)
            c = s[self.i]
            if c == 0x22:
                word, self.i = _quoted(s, self.i)
                out += word
            elif c in _SPECIALS:
                if c == 0x2E:
                    out.append(c)
                self.i += 1
            else:
                word, self.i = _token(s, self.i, _SPECIALS)
                out += word
            seen = True

    def addr_spec(self, stop: bytes, comments: list[bytes] | None = None) -> (
            tuple[bytes, bytes | None]):
        """``local-part [@ domain]`` up to ``stop``; comments after the start are collected."""
        s = self.s
        local = bytearray()
        self.i = _skip_cfws(s, self.i)
        want_word = True
        while True:
            if self.i >= len(s) or s[self.i] in stop or s[self.i] == 0x40:
                break
            c = s[self.i]
            if c == 0x2E:
                local.append(c)
                self.i += 1
                want_word = True
            elif not want_word:  # a second word without a dot: not a local-part
                break
            elif c == 0x22:
                word, self.i = _quoted(s, self.i)
                local += word
                want_word = False
            elif c in _SPECIALS:
                self.i += 1
            else:
                word, self.i = _token(s, self.i, _SPECIALS)
                local += word
                want_word = False
            self.i = _skip_cfws(s, self.i, comments)
        if self.i >= len(s) or s[self.i] != 0x40:
            return bytes(local), None
        self.i += 1
        domain = bytearray()
        while True:
            self.i = _skip_cfws(s, self.i, comments)
            if self.i >= len(s) or s[self.i] in stop:
                break
            c = s[self.i]
            if c == 0x5B:  # domain-literal
                close = s.find(b"]", self.i)
                close = len(s) - 1 if close < 0 else close
                domain += s[self.i:close + 1]
                self.i = close + 1
            elif c == 0x2E:
                domain.append(c)
                self.i += 1
            elif c in _SPECIALS:
                self.i += 1
            else:
                word, self.i = _token(s, self.i, _SPECIALS)
                domain += word
        return bytes(local), bytes(domain)

    def mailbox(self, stop: bytes) -> None:
        s, start = self.s, self.i
        comments: list[bytes] = []
        name = self.phrase(stop + b"<")
        adl: bytes | None = None
        if self.i < len(s) and s[self.i] == 0x3C:  # name-addr: [phrase] "<" ... ">"
            self.i += 1
            self.i = _skip_cfws(s, self.i)
            if self.i < len(s) and s[self.i] == 0x40:  # obs-route "@a,@b:" (RFC 5322 §4.4)
                colon = s.find(b":", self.i)
                close = s.find(b">", self.i)
                if colon >= 0 and (close < 0 or colon < close):
                    adl = b"".join(s[self.i:colon].split())
                    self.i = colon + 1
            local, domain = self.addr_spec(b">" + stop)
            if self.i < len(s) and s[self.i] == 0x3E:
                self.i += 1
            self.i = _skip_cfws(s, self.i)
        else:  # addr-spec; a comment after it is the display name (as Dovecot does)
            self.i = start
            local, domain = self.addr_spec(stop, comments)
            self.i = _skip_cfws(s, self.i, comments)
            if self.i < len(s) and s[self.i] not in stop:  # words only: a name, no address
                self.i = start
                name = self.phrase(stop)
                self.out.append(Address(name, None, _MISSING_MAILBOX, _MISSING_DOMAIN))
                return
            name = comments[-1] if comments else None
        if domain == b"":  # "user@" with nothing after: Dovecot stops the list there
            self.out.append(Address(name or None, adl, local or _MISSING_MAILBOX,
                                    b"SYNTAX_ERROR"))
            self.broken = True
            return
        self.out.append(Address(name or None, adl, local or _MISSING_MAILBOX,
                                domain or _MISSING_DOMAIN))

    def parse(self) -> list[Address]:
        """Like Dovecot: an empty element before a comma is a MISSING_MAILBOX address, and
        anything but a comma after an address ends the list."""
        s = self.s
        while not self.broken:
            self.i = _skip_cfws(s, self.i)
            if self.i >= len(s):
                break
            start = self.i
            group = self.phrase(b",;<:@")
            if self.i < len(s) and s[self.i] == 0x3A:  # group: display-name ":" [list] ";"
                self.i += 1
                self.out.append(Address(None, None, group or b"", None))
                while not self.broken:
                    self.i = _skip_cfws(s, self.i)
                    if self.i >= len(s):
                        break
                    if s[self.i] == 0x3B:
                        self.i += 1
                        break
                    if s[self.i] == 0x2C:
                        self.i += 1
                        continue
                    before = self.i
                    self.mailbox(b",;")
                    if self.i == before:
                        self.i += 1
                self.out.append(Address(None, None, None, None))
            else:
                self.i = start
                self.mailbox(b",")
            self.i = _skip_cfws(s, self.i)
            if self.i >= len(s) or s[self.i] != 0x2C:
                break
            self.i += 1
        return self.out


# Fast path for the common shapes (``a@b``, ``Name Words <a@b>``, ``"Quoted, Name" <a@b>``,
# ``<a@b>``), comma separated; anything else goes to the full parser.
_ATEXT = rb"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_DOT_ATOM = _ATEXT + rb"(?:\." + _ATEXT + rb")*"
_FAST_ADDRESS = re.compile(
    rb'[ \t]*(?:(?:"([^"\\\r\n]*)"|(' + _ATEXT + rb"(?: " + _ATEXT + rb")*))?[ \t]*<(" +
    _DOT_ATOM + rb")@(" + _DOT_ATOM + rb")>|(" + _DOT_ATOM + rb")@(" + _DOT_ATOM +
    rb"))[ \t]*(?:,|\Z)")


def _address_list(values: list[bytes] | None) -> bytes:
    """The ENVELOPE address list of a header field (RFC 3501 §7.4.2); the addresses of
    repeated fields are concatenated (as Dovecot does)."""
    if not values:
        return b"NIL"
    entries = b"".join(_address_entries(v) for v in values)
    return b"(" + entries + b")" if entries else b"NIL"


def _address_entries(value: bytes) -> bytes:
    # Fast path: dot-atoms need no quoting, names made of atoms neither.
    out = []
    pos, n, match = 0, len(value), _FAST_ADDRESS.match
    while pos < n:
        m = match(value, pos)
        if m is None or m.end() == pos:
            return _address_entries_full(value)
        quoted, atoms, local, domain, local2, domain2 = m.groups()
        if local2 is not None:
            out.append(b'(NIL NIL "%s" "%s")' % (local2, domain2))
        elif atoms is not None:
            out.append(b'("%s" NIL "%s" "%s")' % (atoms, local, domain))
        else:
            out.append(b'(%s NIL "%s" "%s")' % (_humans(quoted) if quoted else b"NIL", local,
                                                  domain))
        pos = m.end()
    if n == 0 or value.endswith(b","):
        return _address_entries_full(value)
    return b"".join(out)


def _address_entries_full(value: bytes) -> bytes:
    return b"".join(
        b"(%s %s %s %s)" % (b"NIL" if a.name is None else _humans(a.name), _nstring(a.adl),
                            _nstring(a.mailbox), _nstring(a.host))
        for a in _AddressParser(value).parse())


_PLACEHOLDERS = (_MISSING_MAILBOX, _MISSING_DOMAIN, b"SYNTAX_ERROR")


def address_search_text(value: bytes) -> str:
    """The addresses of a field as SEARCH FROM/TO/CC/BCC sees them (RFC 3501 §6.4.4: the
    string is in the ENVELOPE's address structure): each as the ENVELOPE gives it,
    ``name <mailbox@host>`` (a comment after an addr-spec is the name; ``<a (c)@ b>`` is
    ``a@b``), and group names ``group:``."""
    shown: list[str] = []
    for a in _AddressParser(value).parse():
        name = decode_header_value(a.name) if a.name else ""
        if a.host is None:  # group start (mailbox is the group name) or end (all None)
            if a.mailbox:
                shown.append(decode_header_value(a.mailbox) + ":")
            continue
        if a.mailbox in _PLACEHOLDERS or a.host in _PLACEHOLDERS:
            if name:
                shown.append(name)
            continue
        spec = decode_bytes(a.mailbox or b"") + "@" + decode_bytes(a.host)
        shown.append(f"{name} <{spec}>" if name else spec)
    return ", ".join(shown)


# ---------------------------------------------------------------- Content-* parsing (RFC 2045)


@dataclass(slots=True)
class ContentInfo:
    type: bytes = b"text"
    subtype: bytes = b"plain"
    params: list[tuple[bytes, bytes]] = field(default_factory=list)
    encoding: bytes | None = None
    id: bytes | None = None
    description: bytes | None = None
    md5: bytes | None = None
    disposition: bytes | None = None
    disposition_params: list[tuple[bytes, bytes]] = field(default_factory=list)
    language: list[bytes] | None = None
    location: bytes | None = None

    def param(self, name: bytes) -> bytes | None:
        for key, value in self.params:
            if key.lower() == name:
                return value
        return None


def _mime_params(s: bytes, i: int) -> list[tuple[bytes, bytes]]:
    """``; name=value`` parameters, RFC 2231 continuations joined (``name*0``, ``name*1*``)."""
    params: list[tuple[bytes, bytes]] = []
    n = len(s)
    while True:
        i = _skip_cfws(s, i)
        if i >= n:
            break
        if s[i] != 0x3B:
            i += 1
            continue
        i = _skip_cfws(s, i + 1)
        name, i = _token(s, i, _TSPECIALS)
        i = _skip_cfws(s, i)
        if i >= n or s[i] != 0x3D:  # (an empty name before "=" is kept, as Dovecot)
            continue
        i = _skip_cfws(s, i + 1)
        if i < n and s[i] == 0x22:
            value, i = _quoted(s, i)
        else:
            value, i = _token(s, i, b";")
            value = value.rstrip()
        params.append((name, value))
    return _join_rfc2231(params)


def _join_rfc2231(params: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """RFC 2231 §3: ``title*0*=us-ascii'en'a; title*1=b`` -> ``title*=us-ascii'en'ab``.

    Like Dovecot, continuations are joined and the encoded form kept (``name*`` with the
    charset''value), as the ENVELOPE and BODYSTRUCTURE carry header text undecoded.
    """
    if not any(b"*" in k for k, _ in params):
        return params
    plain: list[tuple[bytes, bytes]] = []
    pieces: dict[bytes, list[tuple[int, bool, bytes]]] = {}
    order: list[bytes] = []
    for key, value in params:
        base, star, rest = key.partition(b"*")
        if not star:
            plain.append((key, value))
            continue
        if rest in (b"", b"*"):
            index, encoded = 0, True
            pieces.setdefault(base.lower(), []).append((-1, True, value))
        else:
            num, _, enc = rest.partition(b"*")
            if not num.isdigit():
                plain.append((key, value))
                continue
            index, encoded = int(num), enc == b"" and rest.endswith(b"*")
            pieces.setdefault(base.lower(), []).append((index, encoded, value))
        if base.lower() not in order:
            order.append(base.lower())
    out = list(plain)
    for base in order:
        parts = sorted(pieces[base], key=lambda p: p[0])
        any_encoded = any(enc for _, enc, _ in parts)
        if any_encoded:
            value = b"".join(v if enc else _pct_encode(v) for _, enc, v in parts)
            out.append((base + b"*", value))
        else:
            out.append((base, b"".join(v for _, _, v in parts)))
    return out


def _pct_encode(value: bytes) -> bytes:
    return b"".join(b"%%%02X" % c if c in b"%' *\"" or c > 0x7E else bytes((c,))
                    for c in value)


def _content_type(v: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """``type "/" subtype *(";" parameter)`` (RFC 2045 §5.1); a broken value gives empty type
    and subtype, no parameters (as Dovecot; a lone type gets an empty subtype)."""
    ctype, i = _token(v, _skip_cfws(v, 0), _TSPECIALS)
    i = _skip_cfws(v, i)
    if not ctype:
        return b"", b"", []
    sub = b""
    if i < len(v) and v[i] == 0x2F:
        sub, i = _token(v, _skip_cfws(v, i + 1), _TSPECIALS)
        if not sub:
            return b"", b"", []
        i = _skip_cfws(v, i)
    if i < len(v) and v[i] != 0x3B:
        return b"", b"", []
    return ctype, sub, _mime_params(v, i)


def _content_info(raw: bytes, fields: list[HeaderField], default: tuple[bytes, bytes]) -> (
        ContentInfo):
    info = ContentInfo(type=default[0], subtype=default[1])
    seen: set[bytes] = set()
    for f in fields:
        if not f.name.startswith(b"content-") or f.name in seen:
            continue
        seen.add(f.name)
        v = f.value
        name = f.name[8:]
        if name == b"type":
            info.type, info.subtype, info.params = _content_type(v)
        elif name == b"transfer-encoding":
            token, i = _token(v, _skip_cfws(v, 0), _TSPECIALS)
            if token and _skip_cfws(v, i) == len(v):  # one token and nothing else
                info.encoding = token
        elif name == b"id":
            info.id = v
        elif name == b"description":
            info.description = v
        elif name == b"md5":
            info.md5 = v
        elif name == b"disposition":
            token, i = _token(v, _skip_cfws(v, 0), _TSPECIALS)
            if token:
                info.disposition = token
                info.disposition_params = _mime_params(v, i)
        elif name == b"language":  # RFC 3282: 1#Language-tag; stops at anything else
            langs: list[bytes] = []
            i = _skip_cfws(v, 0)
            while True:
                tag, i = _token(v, i, _SPECIALS)
                if not tag:
                    break
                langs.append(tag)
                i = _skip_cfws(v, i)
                if i >= len(v) or v[i] != 0x2C:
                    break
                i = _skip_cfws(v, i + 1)
            info.language = langs or None
        elif name == b"location":
            info.location = v
    return info


# ---------------------------------------------------------------- the part tree


@dataclass(slots=True, eq=False)
class Part:
    """One MIME entity: header at ``[start, header_end)``, blank line, body ``[body, end)``."""

    raw: bytes
    start: int
    header_end: int
    body: int
    end: int
    info: ContentInfo
    fields: list[HeaderField]
    children: list[Part] = field(default_factory=list)  # multipart/*
    message: Part | None = None  # the encapsulated message of message/rfc822
    multipart: bool = False  # multipart/* with a boundary
    mime_end: int = -1  # end of the header as MIME/HEADER return it (see _TreeBuilder.parse)

    def header_bytes(self) -> bytes:
        return self.raw[self.start:self.body if self.mime_end < 0 else self.mime_end]

    def body_bytes(self) -> bytes:
        return self.raw[self.body:self.end]

    def lines(self) -> int:
        """Body lines as Dovecot counts them: the line feeds."""
        return self.raw.count(b"\n", self.body, self.end)

    def decoded_body(self) -> bytes:
        """The body with its Content-Transfer-Encoding undone (RFC 2045 §6)."""
        data = self.body_bytes()
        enc = (self.info.encoding or b"").lower()
        if enc == b"base64":
            try:
                return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/]", b"", data) + b"===")
            except (binascii.Error, ValueError):
                return b""
        if enc == b"quoted-printable":
            return decode_quoted_printable(data)
        return data

    def walk(self) -> Iterator[Part]:
        yield self
        for child in self.children:
            yield from child.walk()
        if self.message is not None:
            yield from self.message.walk()


_TRAILING_WHITE = re.compile(rb"[ \t]+(?=\r?\n|\Z)")


def decode_quoted_printable(data: bytes) -> bytes:
    """RFC 2045 §6.7: white space at the end of an encoded line is transport padding and is
    deleted (rule 3), also after a soft line break "=" (rule 5); then the =XX escapes."""
    if b" " in data or b"\t" in data:
        data = _TRAILING_WHITE.sub(b"", data)
    return quopri.decodestring(data)


class _TreeBuilder:
    def __init__(self, raw: bytes, top_fields: list[HeaderField] | None = None) -> None:
        self.raw = raw
        self.count = 0
        self.top_fields = top_fields  # already parsed fields of the top header

    def boundary_at(self, pos: int, stack: list[bytes]) -> tuple[int, bool] | None:
        """If a boundary line of ``stack`` starts at ``pos``: (its index, is close)."""
        raw = self.raw
        best = -1
        for k in range(len(stack) - 1, -1, -1):  # innermost first, longest match wins
            b = stack[k]
            if raw.startswith(b, pos + 2) and (best < 0 or len(b) > len(stack[best])):
                best = k
        if best < 0:
            return None
        after = pos + 2 + len(stack[best])
        return best, raw.startswith(b"--", after)

    def next_boundary(self, pos: int, limit: int, stack: list[bytes]) -> tuple[int, int, bool]:
        """First boundary line at or after ``pos``: (line start, stack index, close);
        ``(limit, -1, False)`` when none."""
        raw = self.raw
        if not stack:
            return limit, -1, False
        if pos == 0 and raw.startswith(b"--"):
            hit = self.boundary_at(0, stack)
            if hit is not None:
                return 0, hit[0], hit[1]
        search = max(pos - 1, 0)
        while True:
            nl = raw.find(b"\n--", search, limit)
            if nl < 0:
                return limit, -1, False
            line = nl + 1
            if line >= pos:
                hit = self.boundary_at(line, stack)
                if hit is not None:
                    return line, hit[0], hit[1]
            search = nl + 1

    def line_end(self, pos: int, limit: int) -> int:
        nl = self.raw.find(b"\n", pos, limit)
        return limit if nl < 0 else nl + 1

    @staticmethod
    def content_end(raw: bytes, line: int, floor: int) -> int:
        """End of content before a boundary line: its preceding line ending belongs to the
        boundary (RFC 2046 §5.1.1)."""
        end = line
        if end > floor and raw[end - 1] == 0x0A:
            end -= 1
            if end > floor and raw[end - 1] == 0x0D:
                end -= 1
        return end

    def parse(self, start: int, limit: int, stack: list[bytes], default: tuple[bytes, bytes],
              depth: int, root: bool = False) -> tuple[Part, int, int, bool]:
        """Parse the entity at ``start`` (``root``: a message, not a body part); returns it
        and where it stopped: (part, boundary line start or limit, stack index or -1, close).
        """
        raw = self.raw
        self.count += 1
        header_end, body = _header_end(raw, start, limit)
        # A boundary line inside the header block ends the entity there; the line break
        # before a boundary belongs to it, even the blank line after a header (as Dovecot:
        # that is what MIME and HEADER return).
        line, k, close = self.next_boundary(start, min(body + 2, limit), stack)
        mime_end = body
        cut = k >= 0 and line < body
        if cut:
            header_end = body = line
            mime_end = self.content_end(raw, line, start)
        fields = (self.top_fields if start == 0 and self.top_fields is not None
                  else _header_fields(raw, start, header_end))
        if root and not any(f.name in (b"mime-version", b"content-type") for f in fields):
            info = ContentInfo()  # not MIME: Content-* fields are ignored (as Dovecot)
        else:
            info = _content_info(raw, fields, default)
        ctype = info.type.lower()
        own_boundary = info.param(b"boundary") if ctype == b"multipart" else None
        if (k >= 0 and line == body and body > header_end
                and not (own_boundary and raw.startswith(b"--" + own_boundary, body))):
            mime_end = header_end  # an empty body right before an enclosing boundary
        part = Part(raw, start, header_end, body, limit, info, fields, mime_end=mime_end)
        if cut:  # cut short by a boundary: an empty multipart or message stays one
            part.end = line
            if ctype == b"multipart":
                part.multipart = True
            elif ctype == b"message" and info.subtype.lower() in (b"rfc822", b"global"):
                part.message = Part(raw, line, line, line, line, ContentInfo(), [])
            return part, line, k, close
        boundary = info.param(b"boundary") if ctype == b"multipart" else None
        too_deep = depth >= _MAX_DEPTH or self.count >= _MAX_PARTS
        if ctype == b"multipart":  # without a boundary: a multipart without parts
            part.multipart = True
            if boundary and not too_deep:
                return self.parse_multipart(part, boundary, limit, stack, depth)
        if (ctype == b"message" and info.subtype.lower() in (b"rfc822", b"global")
                and not too_deep):
            # The enclosing boundaries still end the encapsulated message (as Dovecot).
            inner, line, k, close = self.parse(body, limit, stack, (b"text", b"plain"),
                                               depth + 1, root=True)
            part.message = inner
            part.end = inner.end
            return part, line, k, close
        line, k, close = self.next_boundary(body, limit, stack)
        part.end = self.content_end(raw, line, body) if k >= 0 else limit
        return part, line, k, close

    def parse_multipart(self, part: Part, boundary: bytes, limit: int, stack: list[bytes],
                        depth: int) -> tuple[Part, int, int, bool]:
        raw = self.raw
        inner = [*stack, boundary]
        me = len(inner) - 1
        child_default = ((b"message", b"rfc822") if part.info.subtype.lower() == b"digest"
                         else (b"text", b"plain"))
        line, k, close = self.next_boundary(part.body, limit, inner)  # skip the preamble
        while k == me and not close:
            if self.raw.find(b"\n", line, limit) < 0:  # a last boundary line without line
                line, k, close = limit, -1, False      # ending starts no part (as Dovecot)
                break
            child_start = self.line_end(line, limit)
            child, line, k, close = self.parse(child_start, limit, inner, child_default,
                                               depth + 1)
            part.children.append(child)
            if self.count >= _MAX_PARTS:
                break
        floor = part.body
        if k == me:  # close delimiter: the epilogue runs to the next outer boundary
            floor = self.line_end(line, limit)
            line, k, close = self.next_boundary(floor, limit, stack)
        if k >= 0:
            part.end = self.content_end(raw, line, floor)
            return part, line, k, close
        part.end = limit
        return part, limit, -1, False


# ---------------------------------------------------------------- sections (RFC 3501 §6.4.5)


@dataclass(frozen=True)
class Section:
    """A FETCH section: part numbers then one of ``""``, HEADER, HEADER.FIELDS,
    HEADER.FIELDS.NOT, TEXT, MIME; ``fields`` for the HEADER.FIELDS forms (upper case)."""

    part: tuple[int, ...] = ()
    text: str = ""
    fields: tuple[str, ...] = ()


_SECTION_TEXTS = ("HEADER.FIELDS.NOT", "HEADER.FIELDS", "HEADER", "TEXT", "MIME")


def parse_section(spec: str, fields: tuple[str, ...] = ()) -> Section:
    """``1.2.HEADER.FIELDS`` + fields -> :class:`Section` (grammar: RFC 3501 §9 "section")."""
    upper = spec.upper()
    part: list[int] = []
    rest = upper
    while rest and rest[0].isdigit():
        num, dot, tail = rest.partition(".")
        if not num.isascii() or not num.isdigit() or num[0] == "0" or len(num) > 9:
            raise ImapParseError(f"invalid section part number {num!r}")
        part.append(int(num))
        if not dot:
            rest = ""
            break
        if not tail:
            raise ImapParseError(f"invalid section {spec!r}")
        rest = tail
    if rest and rest not in _SECTION_TEXTS:
        raise ImapParseError(f"invalid section {spec!r}")
    if rest == "MIME" and not part:
        raise ImapParseError("section MIME needs a part number")
    if rest.startswith("HEADER.FIELDS"):
        if not fields:
            raise ImapParseError(f"section {rest} needs a list of field names")
    elif fields:
        raise ImapParseError(f"section {rest or spec!r} takes no field list")
    return Section(tuple(part), rest, tuple(f.upper() for f in fields))


def _field_lines(raw: bytes, fields: list[HeaderField], names: tuple[str, ...], keep: bool,
                 start: int, header_end: int, body: int) -> bytes:
    """HEADER.FIELDS (``keep``): the named fields as stored, then CRLF. HEADER.FIELDS.NOT:
    the header as stored without the named fields (lines that are not fields stay), then a
    blank line if the header has one. Both as Dovecot."""
    wanted = {n.lower().encode() for n in names}
    if keep:
        return b"".join([raw[f.start:f.end] for f in fields if f.name in wanted] + [b"\r\n"])
    out: list[bytes] = []
    pos = start
    for f in fields:
        if f.name in wanted:
            out.append(raw[pos:f.start])
            pos = f.end
    out.append(raw[pos:header_end])
    if body > header_end:
        out.append(b"\r\n")
    return b"".join(out)


# ---------------------------------------------------------------- RFC 2047 and charsets


_ENCODED_WORD = re.compile(rb"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([QqBb])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(rb"(\?=)[ \t\r\n]+(=\?)")


def _codec(charset: str) -> str:
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return "utf-8"


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Text of ``data`` in ``charset`` (UTF-8 when unknown or absent, Latin-1 fallback)."""
    if charset is None or charset.lower() in ("us-ascii", "ascii", "utf-8", "utf8"):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    return data.decode(_codec(charset), "replace")


_FOLD = re.compile(rb"\n[ \t]?")


def decode_header_value(value: bytes) -> str:
    """RFC 2047 encoded words decoded (white space between adjacent words dropped, §6.2),
    raw 8-bit as UTF-8 (RFC 6532)."""
    if b"\n" in value:  # a fold kept by the header parser reads as one space (as Dovecot)
        value = _FOLD.sub(b" ", value.replace(b"\r", b""))
    if b"=?" not in value:
        return decode_bytes(value)
    value = _BETWEEN_WORDS.sub(rb"\1\2", value)
    out: list[str] = []
    pos = 0
    for m in _ENCODED_WORD.finditer(value):
        out.append(decode_bytes(value[pos:m.start()]))
        charset, enc, text = m.group(1).decode("ascii", "replace"), m.group(2), m.group(3)
        try:
            if enc in b"Bb":
                data = base64.b64decode(text + b"=" * (-len(text) % 4))
            else:
                data = quopri.decodestring(text.replace(b"_", b" "), header=True)
        except (binascii.Error, ValueError):
            out.append(decode_bytes(m.group(0)))
        else:
            out.append(decode_bytes(data, charset))
        pos = m.end()
    out.append(decode_bytes(value[pos:]))
    return "".join(out)


# ---------------------------------------------------------------- the message


_ENVELOPE_FIELDS = (b"date", b"subject", b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc",
                    b"in-reply-to", b"message-id")


def _envelope_of(fields: list[HeaderField]) -> bytes:
    """RFC 3501 §7.4.2 ENVELOPE from a header's fields."""
    found: dict[bytes, list[bytes]] = {}
    for f in fields:
        if f.name in _ENVELOPE_FIELDS:
            found.setdefault(f.name, []).append(f.value)
    return _envelope_from(found)


def _envelope_from(found: dict[bytes, list[bytes]]) -> bytes:
    """Repeated fields: the last string wins, address lists add up (as Dovecot)."""
    get = found.get

    def last(name: bytes) -> bytes | None:
        values = found.get(name)
        return values[-1] if values else None

    from_ = _address_list(get(b"from"))
    sender = _address_list(get(b"sender"))
    reply_to = _address_list(get(b"reply-to"))
    # RFC 3501 §7.4.2: sender and reply-to default to from.
    if sender == b"NIL":
        sender = from_
    if reply_to == b"NIL":
        reply_to = from_
    return b"(%s %s %s %s %s %s %s %s %s %s)" % (
        _nstring_nolf(last(b"date")), b"NIL" if (subject := last(b"subject")) is None
        else _humans(subject), from_, sender,
        reply_to, _address_list(get(b"to")), _address_list(get(b"cc")),
        _address_list(get(b"bcc")), _nstring_nolf(last(b"in-reply-to")),
        _nstring_nolf(last(b"message-id")))




class ParsedMessage:
    """A message as stored, parsed on demand (see the module docstring)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._top_fields: list[HeaderField] | None = None
        self._root: Part | None = None

    # -- header only

    def _fields(self) -> list[HeaderField]:
        if self._top_fields is None:
            if self._root is not None:
                self._top_fields = self._root.fields
            else:
                header_end, _ = _header_end(self.raw, 0, len(self.raw))
                self._top_fields = _header_fields(self.raw, 0, header_end)
        return self._top_fields

    def envelope(self) -> bytes:
        """RFC 3501 §7.4.2 ENVELOPE (only the envelope fields of the top header are read)."""
        if self._top_fields is not None:
            return _envelope_of(self._top_fields)
        raw = self.raw
        header_end, _ = _header_end(raw, 0, len(raw))
        found: dict[bytes, list[bytes]] = {}
        for m in _ENVELOPE_FIELD.finditer(raw, 0, header_end):
            name = m.group(1).lower()
            if name in found:
                found[name].append(_field_value(m.group(2)))
            else:
                found[name] = [_field_value(m.group(2))]
        return _envelope_from(found)

    def header_values(self, name: str) -> list[str]:
        """Decoded, unfolded values of the top-level header fields called ``name``."""
        key = name.lower().encode("ascii", "replace")
        return [decode_header_value(f.value) for f in self._fields() if f.name == key]

    def address_values(self, name: str) -> list[str]:
        """For SEARCH FROM/TO/CC/BCC: the addresses of each top-level field called ``name``
        as :func:`address_search_text` writes them."""
        key = name.lower().encode("ascii", "replace")
        return [address_search_text(f.value) for f in self._fields() if f.name == key]

    def header_text(self, all_parts: bool = False) -> str:
        """Header fields as ``name: decoded value`` lines: the top-level ones, or (for SEARCH
        TEXT, as Dovecot) those of every part and encapsulated message too."""
        fields = ([f for part in self.root.walk() for f in part.fields] if all_parts
                  else self._fields())
        return "\n".join(f"{f.name.decode('ascii', 'replace')}: {decode_header_value(f.value)}"
                         for f in fields)

    # -- structure

    @property
    def root(self) -> Part:
        if self._root is None:
            builder = _TreeBuilder(self.raw, self._top_fields)
            self._root, _, _, _ = builder.parse(0, len(self.raw), [], (b"text", b"plain"), 0,
                                                root=True)
        return self._root

    def bodystructure(self, extended: bool) -> bytes:
        """BODYSTRUCTURE (``extended``) or BODY, RFC 3501 §7.4.2."""
        out: list[bytes] = [b"("]
        _write_structure(self.root, extended, out)
        out.append(b")")
        return b"".join(out)

    def find_part(self, numbers: tuple[int, ...]) -> Part | None:
        """The part named by section numbers (RFC 3501 §6.4.5), None if there is none."""
        part = self.root
        itself = False  # the previous number was 1 of a non-multipart: it named the part itself
        for step, n in enumerate(numbers):
            if part.message is not None and step:  # into an encapsulated message
                part = part.message
                itself = False
            if part.multipart:
                if n > len(part.children):
                    return None
                part = part.children[n - 1]
                itself = False
            elif n != 1 or itself:  # a non-multipart has only part 1, itself (as Dovecot)
                return None
            else:
                itself = True
        return part

    def section(self, spec: Section | str) -> bytes | None:
        """Content of BODY[spec] (the whole entity when spec is ""), None if absent."""
        if isinstance(spec, str):
            text_part, _, flist = spec.partition(" ")
            names = tuple(flist.strip("()").split()) if flist else ()
            spec = parse_section(text_part, names)
        raw = self.raw
        if not spec.part:
            target = self.root if spec.text == "TEXT" else None
            if spec.text == "":
                return raw
            return self._message_section(target, spec)
        part = self.find_part(spec.part)
        if part is None:
            return None
        if spec.text == "":
            return part.body_bytes()
        if spec.text == "MIME":
            return part.header_bytes()
        # HEADER, TEXT, HEADER.FIELDS of a part: only for message/rfc822 (§6.4.5).
        if part.message is None:
            return None
        return self._message_section(part.message, spec)

    def _message_section(self, msg: Part | None, spec: Section) -> bytes:
        raw = self.raw
        if msg is None:  # top level header: no need for the whole tree
            if spec.text == "HEADER" or spec.text.startswith("HEADER.FIELDS"):
                header_end, body = _header_end(raw, 0, len(raw))
                if spec.text == "HEADER":
                    return raw[:body]
                return _field_lines(raw, self._fields(), spec.fields,
                                    spec.text == "HEADER.FIELDS", 0, header_end, body)
            msg = self.root
        if spec.text == "HEADER":
            return msg.header_bytes()
        if spec.text == "TEXT":
            return msg.body_bytes()
        return _field_lines(raw, msg.fields, spec.fields, spec.text == "HEADER.FIELDS",
                            msg.start, msg.header_end, msg.body)

    # -- search

    def text_for_search(self) -> str:
        """Decoded text of the text/* parts (transfer encoding and charset undone)."""
        texts: list[str] = []
        for part in self.root.walk():
            if part.children or part.message is not None:
                continue
            if part.info.type.lower() != b"text":
                continue
            charset = part.info.param(b"charset")
            texts.append(decode_bytes(part.decoded_body(),
                                      charset.decode("ascii", "replace") if charset else None))
        return "\n".join(texts)


def parse_message(raw: bytes) -> ParsedMessage:
    return ParsedMessage(raw)


# ---------------------------------------------------------------- BODYSTRUCTURE writer


def _params(params: list[tuple[bytes, bytes]]) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(_nstring(k) + b" " + _nstring(v) for k, v in params) + b")"


def _extension(info: ContentInfo, out: list[bytes]) -> None:
    if info.disposition is None:
        out.append(b" NIL")
    else:
        out.append(b" (" + _nstring(info.disposition) + b" " +
                   _params(info.disposition_params) + b")")
    if info.language is None:
        out.append(b" NIL")
    else:
        out.append(b" (" + b" ".join(_nstring(x) for x in info.language) + b")")
    out.append(b" " + _nstring_nolf(info.location))


def _write_structure(part: Part, extended: bool, out: list[bytes]) -> None:
    info = part.info
    if part.multipart:
        if not part.children:  # no parts: Dovecot writes one empty text/plain
            out.append(b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0' +
                       (b" NIL NIL NIL NIL)" if extended else b")"))
        for child in part.children:
            out.append(b"(")
            _write_structure(child, extended, out)
            out.append(b")")
        out.append(b" " + _nstring(info.subtype))
        if extended:
            out.append(b" " + _params(info.params))
            _extension(info, out)
        return
    if part.message is not None:
        out.append(b'"message" "rfc822"')
        text = False
    else:
        out.append(_nstring(info.type) + b" " + _nstring(info.subtype))
        text = info.type.lower() == b"text"
    params = info.params
    if text and info.param(b"charset") is None:
        params = [*params, (b"charset", b"us-ascii")]
    out.append(b" " + _params(params))
    out.append(b" %s %s %s %d" % (_nstring_nolf(info.id), _nstring_nolf(info.description),
                                  _nstring(info.encoding or b"7bit"),
                                  part.end - part.body))
    if text:
        out.append(b" %d" % part.lines())
    elif part.message is not None:
        out.append(b" " + _envelope_of(part.message.fields) + b" (")
        _write_structure(part.message, extended, out)
        out.append(b") %d" % part.lines())
    if extended:
        out.append(b" " + _nstring_nolf(info.md5))
        _extension(info, out)
