"""IMAP views of a message: ENVELOPE, BODY/BODYSTRUCTURE, sections (RFC 3501 §6.4.5, §7.4.2).

The message is read by the node's MIME reader (:mod:`mss.mime`); this module only renders
what it reads in IMAP syntax, as pure functions of the parsed message. Output mimics Dovecot
2.3 where RFC 3501 leaves a choice (lower-case defaults ``"text" "plain"``, ``"7bit"``;
MISSING_DOMAIN for incomplete addresses), so answers are byte-identical to its.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mss.mime import (
    PLACEHOLDERS,
    ContentInfo,
    HeaderField,
    MimeMessage,
    Part,
    decode_bytes,
    decode_header_value,
    field_value,
    header_bounds,
    parse_address_list,
)
from proxy.imap.tokens import ImapParseError

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
        for a in parse_address_list(value))


def address_search_text(value: bytes) -> str:
    """The addresses of a field as SEARCH FROM/TO/CC/BCC sees them (RFC 3501 §6.4.4: the
    string is in the ENVELOPE's address structure): each as the ENVELOPE gives it,
    ``name <mailbox@host>`` (a comment after an addr-spec is the name; ``<a (c)@ b>`` is
    ``a@b``), and group names ``group:``."""
    shown: list[str] = []
    for a in parse_address_list(value):
        name = decode_header_value(a.name) if a.name else ""
        if a.host is None:  # group start (mailbox is the group name) or end (all None)
            if a.mailbox:
                shown.append(decode_header_value(a.mailbox) + ":")
            continue
        if a.mailbox in PLACEHOLDERS or a.host in PLACEHOLDERS:
            if name:
                shown.append(name)
            continue
        spec = decode_bytes(a.mailbox or b"") + "@" + decode_bytes(a.host)
        shown.append(f"{name} <{spec}>" if name else spec)
    return ", ".join(shown)


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


# ---------------------------------------------------------------- ENVELOPE (RFC 3501 §7.4.2)


_ENVELOPE_FIELD = re.compile(
    rb"^(date|subject|from|sender|reply-to|to|cc|bcc|in-reply-to|message-id)[ \t]*:"
    rb"([^\n]*(?:\n[ \t][^\n]*)*)", re.M | re.I)
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


# ---------------------------------------------------------------- the message


class ParsedMessage(MimeMessage):
    """A message as stored, with its IMAP renderings (computed on demand, never cached
    here: the same inputs always give the same bytes)."""

    def envelope(self) -> bytes:
        """RFC 3501 §7.4.2 ENVELOPE (only the envelope fields of the top header are read)."""
        if self._top_fields is not None or self._root is not None:
            return _envelope_of(self.fields())
        raw = self.raw
        end, _ = header_bounds(raw, 0, len(raw))
        found: dict[bytes, list[bytes]] = {}
        for m in _ENVELOPE_FIELD.finditer(raw, 0, end):
            found.setdefault(m.group(1).lower(), []).append(field_value(m.group(2)))
        return _envelope_from(found)

    def address_values(self, name: str) -> list[str]:
        """For SEARCH FROM/TO/CC/BCC: the addresses of each top-level field called ``name``
        as :func:`address_search_text` writes them."""
        key = name.lower().encode("ascii", "replace")
        return [address_search_text(f.value) for f in self.fields() if f.name == key]

    def text_for_search(self) -> str:
        """SEARCH BODY/TEXT: the decoded text of the text/* parts."""
        return self.body_text()

    def bodystructure(self, extended: bool) -> bytes:
        """BODYSTRUCTURE (``extended``) or BODY, RFC 3501 §7.4.2."""
        return b"(" + _structure(self.root, extended) + b")"

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
                end, body = header_bounds(raw, 0, len(raw))
                if spec.text == "HEADER":
                    return raw[:body]
                return _field_lines(raw, self.fields(), spec.fields,
                                    spec.text == "HEADER.FIELDS", 0, end, body)
            msg = self.root
        if spec.text == "HEADER":
            return msg.header_bytes()
        if spec.text == "TEXT":
            return msg.body_bytes()
        return _field_lines(raw, msg.fields, spec.fields, spec.text == "HEADER.FIELDS",
                            msg.start, msg.header_end, msg.body)


def parse_message(raw: bytes) -> ParsedMessage:
    return ParsedMessage(raw)


# ---------------------------------------------------------------- BODYSTRUCTURE writer


def _params(params: list[tuple[bytes, bytes]]) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(_nstring(k) + b" " + _nstring(v) for k, v in params) + b")"


def _extension(info: ContentInfo) -> bytes:
    """body-ext-1part / body-ext-mpart after the MD5 or parameters: disposition, language,
    location (RFC 3501 §9)."""
    disposition = (b" NIL" if info.disposition is None else
                   b" (" + _nstring(info.disposition) + b" " +
                   _params(info.disposition_params) + b")")
    language = (b" NIL" if info.language is None else
                b" (" + b" ".join(_nstring(x) for x in info.language) + b")")
    return disposition + language + b" " + _nstring_nolf(info.location)


_EMPTY_MULTIPART = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0'


def _structure(part: Part, extended: bool) -> bytes:
    """One part's body structure, without its enclosing parentheses (RFC 3501 §7.4.2)."""
    info = part.info
    out: list[bytes] = []
    if part.multipart:
        if not part.children:  # no parts: Dovecot writes one empty text/plain
            out.append(_EMPTY_MULTIPART + (b" NIL NIL NIL NIL)" if extended else b")"))
        out += [b"(" + _structure(child, extended) + b")" for child in part.children]
        out.append(b" " + _nstring(info.subtype))
        if extended:
            out.append(b" " + _params(info.params) + _extension(info))
        return b"".join(out)
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
        out.append(b" " + _envelope_of(part.message.fields) + b" (" +
                   _structure(part.message, extended) + b") %d" % part.lines())
    if extended:
        out.append(b" " + _nstring_nolf(info.md5) + _extension(info))
    return b"".join(out)
