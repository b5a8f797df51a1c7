"""MIME reader of the node, protocol-neutral (RFC 5322, RFC 2045/2046/2047/2231).

One reader for every component that looks into a message: the SMTP DATA checks (author
fields, header values), the audit's patient identifiers (attachments), IMAP FETCH/SEARCH
(which render what is read here as ENVELOPE and BODYSTRUCTURE, in ``proxy.imap.mime``).

The parser works on byte offsets into the message as stored (no copies, no email object
model). Work is done on demand: :meth:`MimeMessage.fields` reads the top header block
only; the part tree is built the first time :attr:`MimeMessage.root` is asked for. Lines may end in
CRLF or bare LF. Where the RFCs leave a choice the reading is Dovecot 2.3's (so that what a
check reads is what a mail client is shown): lower-case defaults ``text/plain``, addresses
with MISSING_MAILBOX/MISSING_DOMAIN placeholders, at most ``MAX_DEPTH`` nesting levels and
``MAX_PARTS`` parts. Every function is linear in its input (nesting adds at most a factor
``MAX_DEPTH``) and never raises on arbitrary bytes.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import quopri
import re
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

MAX_DEPTH = 100  # nesting bound (multipart / message/rfc822), as Dovecot's message parser
MAX_PARTS = 10_000

_BLANK_LINE = re.compile(rb"\n\r?\n")
# RFC 5322 §2.2: field-name is printable US-ASCII except ":"; unfolded value up to the next
# line that does not start with white space.
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.M)
_MIME_FIELD = re.compile(
    rb"^(mime-version|content-[!-9;-~]*)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.M | re.I)


# ---------------------------------------------------------------- header fields


class HeaderField(NamedTuple):
    name: bytes  # lower case
    start: int  # offset of the first byte of the field
    end: int  # offset after the field's last line ending
    value: bytes  # white space after the colon stripped, folds kept as LF


def field_value(value: bytes) -> bytes:
    """RFC 5322 §2.2.3 unfolding, keeping the line breaks as LF (as Dovecot does, so that
    the ENVELOPE quoting can tell a folded value)."""
    value = value.lstrip(b" \t")
    if b"\n" in value:
        value = value.replace(b"\r\n", b"\n")
    if value.endswith(b"\r"):
        value = value[:-1]
    return value


def header_fields(raw: bytes, start: int, end: int) -> list[HeaderField]:
    """The fields of the header block ``raw[start:end]``, in order."""
    return _fields_of(_FIELD, raw, start, end)


def _mime_fields(raw: bytes, start: int, end: int) -> list[HeaderField]:
    """Only the MIME-Version and Content-* fields (what the part tree needs): the same
    fields as :func:`header_fields` finds, the others skipped at C speed."""
    return _fields_of(_MIME_FIELD, raw, start, end)


def _fields_of(pattern: re.Pattern[bytes], raw: bytes, start: int, end: int) -> (
        list[HeaderField]):
    fields: list[HeaderField] = []
    for m in pattern.finditer(raw, start, end):
        value = field_value(m.group(2))
        stop = m.end()
        if stop < end and raw[stop] == 0x0A:
            stop += 1
        fields.append(HeaderField(m.group(1).lower(), m.start(), stop, value))
    return fields


def header_bounds(raw: bytes, start: int, limit: int,
                  blank: Callable[[int, int], re.Match[bytes] | None] | None = None) -> (
        tuple[int, int]):
    """``(end of the fields, start of the body)`` of the header block at ``start``
    (``blank``: how to find the next blank line, :meth:`_TreeBuilder.blank_line`)."""
    if raw.startswith(b"\n", start):
        return start, start + 1
    if raw.startswith(b"\r\n", start):
        return start, start + 2
    m = _BLANK_LINE.search(raw, start, limit) if blank is None else blank(start, limit)
    if m is None:
        return limit, limit
    return m.start() + 1, m.end()


# ---------------------------------------------------------------- RFC 5322 / 2045 lexer


_SPECIALS = b'()<>@,;:\\".[]'
_TSPECIALS = b'()<>@,;:\\"/[]?='


_WHITE = re.compile(rb"[ \t\r\n]*")
_SIMPLE_QUOTED = re.compile(rb'"([^"\\\r\n]*)"')


def _skip_cfws(s: bytes, i: int, comments: list[bytes] | None = None) -> int:
    n = len(s)
    while i < n:
        c = s[i]
        if c in b" \t\r\n":
            i = _WHITE.match(s, i).end()  # type: ignore[union-attr]  # "*" always matches
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
    simple = _SIMPLE_QUOTED.match(s, i)  # no quoted-pair, no line break: as it stands
    if simple is not None:
        return simple.group(1), simple.end()
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


def _word(s: bytes, i: int, stop: bytes) -> tuple[bytes, int]:
    """A token of the address parser, at least one byte: a control byte (not white space)
    that starts no token is a word of its own (it looped forever: the parser did not move
    on, and a "From: a\\x01b" hung the IMAP worker rendering its ENVELOPE)."""
    word, j = _token(s, i, stop)
    if j == i and i < len(s):
        return s[i:i + 1], i + 1
    return word, j


def _token(s: bytes, i: int, stop: bytes) -> tuple[bytes, int]:
    """The run of bytes from ``s[i]`` that are neither controls, space, DEL nor in ``stop``
    (8-bit bytes are token bytes: raw UTF-8, RFC 6532)."""
    m = _token_pattern(stop).match(s, i)
    assert m is not None  # "*" always matches
    return m.group(), m.end()


@functools.cache
def _token_pattern(stop: bytes) -> re.Pattern[bytes]:
    """One compiled pattern per stop set (the stop sets are the few constants of this
    module)."""
    return re.compile(b"[^\\x00-\\x20\\x7f" + b"".join(b"\\x%02x" % c for c in stop) + b"]*")


# ---------------------------------------------------------------- addresses (RFC 5322 §3.4)


@dataclass(frozen=True, slots=True)
class Address:
    """One address of an address-list: display name, obs-route (``adl``), local part and
    domain; a group start has host None and mailbox the group name, a group end has all four
    None (the shape of RFC 3501 §7.4.2's ENVELOPE address, which renders it)."""

    name: bytes | None
    adl: bytes | None
    mailbox: bytes | None
    host: bytes | None


# What the lenient parser puts where a part of an address is missing (as Dovecot).
MISSING_MAILBOX = b"MISSING_MAILBOX"
MISSING_DOMAIN = b"MISSING_DOMAIN"
SYNTAX_ERROR = b"SYNTAX_ERROR"
PLACEHOLDERS = (MISSING_MAILBOX, MISSING_DOMAIN, SYNTAX_ERROR)


class _AddressParser:
    """RFC 5322 §3.4 address-list, lenient like Dovecot's message-address parser."""

    def __init__(self, s: bytes) -> None:
        self.s = s
        self.i = 0
        self.out: list[Address] = []
        self.broken = False
        self._found: dict[int, tuple[int, int]] = {}  # byte -> (searched from, found at)

    def find(self, byte: int, i: int) -> int:
        """``s.find(byte, i)``, remembering the last answer per byte: the parser moves
        forward, so its look-aheads cost one pass over the value, not one each."""
        start, at = self._found.get(byte, (len(self.s) + 1, -1))
        if start <= i and (at < 0 or i <= at):  # nothing in [start, at): at is the answer
            return at
        at = self.s.find(bytes((byte,)), i)
        self._found[byte] = (i, at)
        return at

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
                word, self.i = _word(s, self.i, _SPECIALS)
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
                close = self.find(0x5D, self.i)
                close = len(s) - 1 if close < 0 else close
                domain += s[self.i:close + 1]
                self.i = close + 1
            elif c == 0x2E:
                domain.append(c)
                self.i += 1
            elif c in _SPECIALS:
                self.i += 1
            else:
                word, self.i = _word(s, self.i, _SPECIALS)
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
                colon = self.find(0x3A, self.i)
                close = self.find(0x3E, self.i)
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
                self.out.append(Address(name, None, MISSING_MAILBOX, MISSING_DOMAIN))
                return
            name = comments[-1] if comments else None
        if domain == b"":  # "user@" with nothing after: Dovecot stops the list there
            self.out.append(Address(name or None, adl, local or MISSING_MAILBOX,
                                    SYNTAX_ERROR))
            self.broken = True
            return
        self.out.append(Address(name or None, adl, local or MISSING_MAILBOX,
                                domain or MISSING_DOMAIN))

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


def parse_address_list(value: bytes) -> list[Address]:
    """The addresses of an address-list field value (RFC 5322 §3.4), leniently."""
    return _AddressParser(value).parse()


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
    return _join_rfc2231(params) if b"*" in s else params


def _join_rfc2231(params: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """RFC 2231 §3: ``title*0*=us-ascii'en'a; title*1=b`` -> ``title*=us-ascii'en'ab``.

    Like Dovecot, continuations are joined and the encoded form kept (``name*`` with the
    charset''value), as the ENVELOPE and BODYSTRUCTURE carry header text undecoded.
    """
    if not any(b"*" in k for k, _ in params):
        return params
    plain: list[tuple[bytes, bytes]] = []
    pieces: dict[bytes, list[tuple[int, bool, bytes]]] = {}  # in order of first appearance
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
    out = list(plain)
    for base, pieces_of_base in pieces.items():
        parts = sorted(pieces_of_base, key=lambda p: p[0])
        any_encoded = any(enc for _, enc, _ in parts)
        if any_encoded:
            value = b"".join(v if enc else _pct_encode(v) for _, enc, v in parts)
            out.append((base + b"*", value))
        else:
            out.append((base, b"".join(v for _, _, v in parts)))
    return out


def param_text(params: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The text of parameter ``name`` (lower case) of a Content-Type or Content-Disposition:
    RFC 2231 §4 ``name*=charset'language'%XX`` decoded (continuations already joined),
    else the value as written, RFC 2047 words decoded (as many writers use them in a
    ``filename``); None if absent."""
    encoded = plain = None
    for key, value in params:
        low = key.lower()
        if low == name + b"*" and encoded is None:
            encoded = value
        elif low == name and plain is None:
            plain = value
    if encoded is not None:
        return decode_rfc2231(encoded)
    return None if plain is None else decode_header_value(plain)


def decode_rfc2231(value: bytes) -> str:
    """RFC 2231 §4 ``charset'language'text`` with %XX octets: the text (UTF-8 when the
    charset is absent or unknown)."""
    charset, quote, rest = value.partition(b"'")
    if quote:
        _, quote2, text = rest.partition(b"'")
        if not quote2:  # one quote only: not the extended form, all of it is the text
            charset, text = b"", value
    else:
        charset, text = b"", value
    data = urllib.parse.unquote_to_bytes(text)
    return decode_bytes(data, charset.decode("ascii", "replace") or None)


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
    known_fields: list[HeaderField] | None = None  # the header's fields, once read
    children: list[Part] = field(default_factory=list)  # multipart/*
    message: Part | None = None  # the encapsulated message of message/rfc822
    multipart: bool = False  # multipart/* with a boundary
    mime_end: int = -1  # end of the header as MIME/HEADER return it (see _TreeBuilder.parse)

    @property
    def fields(self) -> list[HeaderField]:
        """The fields of the part's header, read the first time they are asked for (the
        tree is built from the Content-* fields alone)."""
        if self.known_fields is None:
            self.known_fields = header_fields(self.raw, self.start, self.header_end)
        return self.known_fields

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
        """This part and those inside it, in document order (no recursion: a nesting level
        costs nothing per part)."""
        todo: list[Part] = [self]
        while todo:
            part = todo.pop()
            yield part
            if part.message is not None:
                todo.append(part.message)
            todo.extend(reversed(part.children))


_PADDED = (b" \n", b"\t\n", b" \r\n", b"\t\r\n")  # white space before a line end


def _strip_line_ends(data: bytes) -> bytes:
    """White space removed before each CRLF or LF and at the very end: per line with
    rstrip, linear in any input (a regex retrying every blank of a long run was quadratic),
    and a substring test first, so unpadded text (nearly all of it) is not copied."""
    if not any(p in data for p in _PADDED) and not data.endswith((b" ", b"\t")):
        return data
    lines = data.split(b"\n")
    out = [line[:-1].rstrip(b" \t") + b"\r" if line.endswith(b"\r") else line.rstrip(b" \t")
           for line in lines[:-1]]
    out.append(lines[-1].rstrip(b" \t"))
    return b"\n".join(out)


def decode_quoted_printable(data: bytes) -> bytes:
    """RFC 2045 §6.7: white space at the end of an encoded line is transport padding and is
    deleted (rule 3), also after a soft line break "=" (rule 5); then the =XX escapes."""
    return quopri.decodestring(_strip_line_ends(data))


_FEW_BOUNDARIES = 4  # distinct enclosing boundaries searched for one by one
_LONG_BOUNDARY = 8  # ... when none is shorter than this


class _Boundaries:
    """The boundaries of the enclosing multiparts, outermost first (RFC 2046 §5.1.1), and
    an index of them by length, so that telling whether a line is a boundary costs one
    look-up per distinct length, not one test per nesting level."""

    __slots__ = ("items", "_by_length", "_lengths", "_few")

    def __init__(self, items: tuple[bytes, ...] = (),
                 by_length: dict[int, dict[bytes, int]] | None = None) -> None:
        self.items = items
        self._by_length = by_length or {}
        self._lengths = sorted(self._by_length, reverse=True)
        distinct = frozenset(items)
        self._few = distinct if (distinct and len(distinct) <= _FEW_BOUNDARIES
                                 and self._lengths[-1] >= _LONG_BOUNDARY) else None

    def __len__(self) -> int:
        return len(self.items)

    def few(self) -> frozenset[bytes] | None:
        """The distinct boundaries when there are a few long ones, else None. A long needle
        skips through a body (base64 above all) several times faster than the search for
        every line starting with "--" that the caller does otherwise."""
        return self._few

    def push(self, boundary: bytes) -> _Boundaries:
        by_length = dict(self._by_length)
        same = dict(by_length.get(len(boundary), {}))
        same[boundary] = len(self.items)  # the innermost of equal boundaries wins
        by_length[len(boundary)] = same
        return _Boundaries((*self.items, boundary), by_length)

    def at(self, raw: bytes, pos: int) -> tuple[int, bool] | None:
        """If a boundary line starts at ``pos``: (its index, is close); the longest of the
        boundaries the line starts with wins."""
        for length in self._lengths:  # longest first
            k = self._by_length[length].get(raw[pos + 2:pos + 2 + length])
            if k is not None:
                return k, raw.startswith(b"--", pos + 2 + length)
        return None


class _TreeBuilder:
    def __init__(self, raw: bytes, top_fields: list[HeaderField] | None = None,
                 max_parts: int = MAX_PARTS) -> None:
        self.raw = raw
        self.max_parts = max_parts
        self.count = 0
        self.top_fields = top_fields  # already parsed fields of the top header
        self._blank: tuple[int, int, re.Match[bytes] | None] | None = None
        # (boundary, search end) -> (searched from, "\n--boundary" found at or -1)
        self._found: dict[tuple[bytes, int], tuple[int, int]] = {}

    def blank_line(self, start: int, limit: int) -> re.Match[bytes] | None:
        """The first blank line at or after ``start``, the last answer reused while it
        still holds: parts come in document order, so all the searches of a message scan
        it once (a part whose header runs into the next boundary must not make its
        search scan on to the end of the message)."""
        if self._blank is not None:
            since, until, m = self._blank
            if until == limit and since <= start and (m is None or start <= m.start()):
                return m
        m = _BLANK_LINE.search(self.raw, start, limit)
        self._blank = (start, limit, m)
        return m

    def boundary_at(self, pos: int, stack: _Boundaries) -> tuple[int, bool] | None:
        """If a boundary line of ``stack`` starts at ``pos``: (its index, is close)."""
        return stack.at(self.raw, pos)

    def next_boundary(self, pos: int, limit: int, stack: _Boundaries) -> (
            tuple[int, int, bool]):
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
        few = stack.few()
        if few is not None:  # the line of each boundary, found by its own long needle
            nl = min((n for n in (self._find_line(b, search, limit) for b in few) if n >= 0),
                     default=-1)
            if nl < 0:
                return limit, -1, False
            hit = self.boundary_at(nl + 1, stack)
            assert hit is not None  # the line starts with one of the boundaries
            return nl + 1, hit[0], hit[1]
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

    def _find_line(self, boundary: bytes, search: int, limit: int) -> int:
        """Where the first ``"\\n--" + boundary`` at or after *search* starts, its "\\n--"
        before *limit* (the boundary itself may run past it, as :meth:`_Boundaries.at`
        reads it), or -1; the last answer per boundary reused while it still holds (the
        searches move forward: each boundary costs one pass over the message)."""
        end = min(len(self.raw), limit + len(boundary))
        key = (boundary, end)
        since, at = self._found.get(key, (end + 1, -1))
        if not (since <= search and (at < 0 or search <= at)):
            at = self.raw.find(b"\n--" + boundary, search, end)
            self._found[key] = (search, at)
        return at if at + 3 <= limit else -1

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

    def parse(self, start: int, limit: int, stack: _Boundaries, default: tuple[bytes, bytes],
              depth: int, root: bool = False) -> tuple[Part, int, int, bool]:
        """Parse the entity at ``start`` (``root``: a message, not a body part); returns it
        and where it stopped: (part, boundary line start or limit, stack index or -1, close).
        """
        raw = self.raw
        self.count += 1
        header_end, body = header_bounds(raw, start, limit, self.blank_line)
        # A boundary line inside the header block ends the entity there; the line break
        # before a boundary belongs to it, even the blank line after a header (as Dovecot:
        # that is what MIME and HEADER return).
        line, k, close = self.next_boundary(start, min(body + 2, limit), stack)
        mime_end = body
        cut = k >= 0 and line < body
        if cut:
            header_end = body = line
            mime_end = self.content_end(raw, line, start)
        known = self.top_fields if start == 0 else None
        fields = known if known is not None else _mime_fields(raw, start, header_end)
        if root and not any(f.name in (b"mime-version", b"content-type") for f in fields):
            info = ContentInfo()  # not MIME: Content-* fields are ignored (as Dovecot)
        else:
            info = _content_info(raw, fields, default)
        ctype = info.type.lower()
        own_boundary = info.param(b"boundary") if ctype == b"multipart" else None
        if (k >= 0 and line == body and body > header_end
                and not (own_boundary and raw.startswith(b"--" + own_boundary, body))):
            mime_end = header_end  # an empty body right before an enclosing boundary
        part = Part(raw, start, header_end, body, limit, info, known, mime_end=mime_end)
        if cut:  # cut short by a boundary: an empty multipart or message stays one
            part.end = line
            if ctype == b"multipart":
                part.multipart = True
            elif ctype == b"message" and info.subtype.lower() in (b"rfc822", b"global"):
                part.message = Part(raw, line, line, line, line, ContentInfo())
            return part, line, k, close
        boundary = info.param(b"boundary") if ctype == b"multipart" else None
        too_deep = depth >= MAX_DEPTH or self.count >= self.max_parts
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

    def parse_multipart(self, part: Part, boundary: bytes, limit: int, stack: _Boundaries,
                        depth: int) -> tuple[Part, int, int, bool]:
        raw = self.raw
        inner = stack.push(boundary)
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
            if self.count >= self.max_parts:
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


# ---------------------------------------------------------------- RFC 2047 and charsets


_ENCODED_WORD = re.compile(rb"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([QqBb])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(rb"(\?=)[ \t\r\n]+(=\?)")


# Codecs Python has that are no MIME charset (RFC 2978): they read escapes, are not linear
# in their input (punycode: 10 s for 200 kB) or refuse the "replace" error handler.
_NOT_CHARSETS = frozenset({"punycode", "idna", "unicode-escape", "raw-unicode-escape",
                           "undefined"})


def _codec(charset: str) -> str:
    """The Python text codec of a MIME charset name, "utf-8" when there is none (unknown
    name, NUL in it, a bytes-to-bytes codec such as hex or zlib, or one of _NOT_CHARSETS)."""
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError):
        return "utf-8"
    if info.name in _NOT_CHARSETS or not getattr(info, "_is_text_encoding", True):
        return "utf-8"
    return info.name


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


class MimeMessage:
    """A message as stored, read on demand (see the module docstring)."""

    def __init__(self, raw: bytes, *, max_parts: int = MAX_PARTS) -> None:
        """``max_parts``: the tree stops growing there (parts past it are content of the
        last one), for a reader that needs less than what IMAP shows."""
        self.raw = raw
        self.max_parts = max_parts
        self._top_fields: list[HeaderField] | None = None
        self._root: Part | None = None

    def fields(self) -> list[HeaderField]:
        """The fields of the top-level header block, in order."""
        if self._top_fields is None:
            if self._root is not None:
                self._top_fields = self._root.fields
            else:
                end, _ = header_bounds(self.raw, 0, len(self.raw))
                self._top_fields = header_fields(self.raw, 0, end)
        return self._top_fields

    def header_values(self, name: str) -> list[str]:
        """Decoded, unfolded values of the top-level header fields called ``name``."""
        key = name.lower().encode("ascii", "replace")
        return [decode_header_value(f.value) for f in self.fields() if f.name == key]

    def header_text(self, all_parts: bool = False) -> str:
        """Header fields as ``name: decoded value`` lines: the top-level ones, or those of
        every part and encapsulated message too."""
        fields = ([f for part in self.root.walk() for f in part.fields] if all_parts
                  else self.fields())
        return "\n".join(f"{f.name.decode('ascii', 'replace')}: {decode_header_value(f.value)}"
                         for f in fields)

    @property
    def root(self) -> Part:
        """The part tree (the message itself is the root entity)."""
        if self._root is None:
            builder = _TreeBuilder(self.raw, self._top_fields, self.max_parts)
            self._root, _, _, _ = builder.parse(0, len(self.raw), _Boundaries(),
                                                (b"text", b"plain"), 0, root=True)
        return self._root

    def leaves(self) -> Iterator[Part]:
        """The parts that hold content: neither multipart nor an encapsulated message."""
        for part in self.root.walk():
            if not part.children and part.message is None and not part.multipart:
                yield part

    def body_text(self) -> str:
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
