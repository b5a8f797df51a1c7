"""FETCH data items (RFC 3501 §6.4.5, §7.4.2; BINARY of RFC 3516; MODSEQ of RFC 7162).

:func:`parse_fetch_items` turns the tokenised argument into :class:`FetchItem` values;
:func:`render_fetch` writes one message's parenthesised answer, content always as literals
(as Dovecot does), a section that does not exist as an empty literal.
"""

from __future__ import annotations

import functools
import math
import operator
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import MappingProxyType

from proxy.imap import wire
from proxy.imap.mime import ParsedMessage, Section, parse_message, parse_section
from proxy.imap.tokens import (
    MONTHS,
    Atom,
    ImapParseError,
    MessageMeta,
    Token,
    astring_value,
    is_field_name,
)

# Items that are only metadata (no decryption needed).
_META = frozenset({"FLAGS", "INTERNALDATE", "RFC822.SIZE", "UID", "MODSEQ"})
_SIMPLE = _META | {"ENVELOPE", "BODYSTRUCTURE", "RFC822", "RFC822.HEADER", "RFC822.TEXT"}
_MACROS = MappingProxyType({  # RFC 3501 §6.4.5
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
})
_SECTIONED = frozenset({"BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"})


class UnknownCte(Exception):
    """BINARY of a part whose Content-Transfer-Encoding is unknown: ``NO [UNKNOWN-CTE]``
    (RFC 3516 §4.3)."""


@dataclass(frozen=True)
class FetchItem:
    """One data item. ``name`` is upper case: FLAGS, UID, BODY (structure when ``section`` is
    None), BODY.PEEK, BINARY, BINARY.PEEK, BINARY.SIZE, RFC822.HEADER..."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None

    @property
    def needs_content(self) -> bool:
        """The message must be read (decrypted) to answer."""
        return self.name not in _META

    @property
    def sets_seen(self) -> bool:
        """Sets \\Seen (RFC 3501 §6.4.5: BODY[...], RFC822, RFC822.TEXT; RFC 3516 BINARY)."""
        return (self.name in ("RFC822", "RFC822.TEXT", "BINARY")
                or (self.name == "BODY" and self.section is not None))

    @property
    def returns_content(self) -> bool:
        """Header or body text is returned (to audit): a section, BINARY, RFC822.*."""
        return self.name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT", "BINARY",
                             "BINARY.PEEK") or (self.name in ("BODY", "BODY.PEEK")
                                                and self.section is not None)

    @property
    def reveals_headers(self) -> bool:
        """Header fields are disclosed in a summarised form (ENVELOPE, BODY, BODYSTRUCTURE)."""
        return self.name in ("ENVELOPE", "BODYSTRUCTURE") or (self.name == "BODY"
                                                              and self.section is None)

    def response_name(self) -> bytes:
        """The item as named in the answer: ``BODY[HEADER.FIELDS (FROM)]<0>`` (no .PEEK)."""
        if self.section is None:
            return self.name.encode()
        base = self.name.removesuffix(".PEEK")
        spec = ".".join([*map(str, self.section.part), *([self.section.text]
                                                          if self.section.text else [])])
        out = base.encode() + b"[" + spec.encode()
        if self.section.text.startswith("HEADER.FIELDS"):
            out += b" (" + b" ".join(wire.astring(f) for f in self.section.fields) + b")"
        out += b"]"
        if self.partial is not None:
            out += b"<%d>" % self.partial[0]
        return out


def needs_content(items: Iterable[FetchItem]) -> bool:
    return any(i.needs_content for i in items)


def sets_seen(items: Iterable[FetchItem]) -> bool:
    return any(i.sets_seen for i in items)


# ---------------------------------------------------------------- parsing


def _field_name(token: Token) -> str:
    value = astring_value(token)
    if value is None:
        raise ImapParseError("invalid header field name in FETCH section")
    name = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if not is_field_name(name):
        raise ImapParseError(f"invalid header field name {name!r}")
    return name


def _section(name: str, tokens: tuple[Token, ...]) -> Section:
    if not tokens:
        return Section()
    spec = tokens[0]
    if not isinstance(spec, Atom) or spec.section is not None or spec.partial is not None:
        raise ImapParseError(f"invalid {name} section")
    if len(tokens) > 2:
        raise ImapParseError(f"invalid {name} section: unexpected data after the field list")
    fields: tuple[str, ...] = ()
    if len(tokens) == 2:
        flist = tokens[1]
        if not isinstance(flist, list):
            raise ImapParseError(f"invalid {name} section: a field list is expected")
        fields = tuple(_field_name(t) for t in flist)
        if not fields:
            raise ImapParseError(f"invalid {name} section: empty field list")
    section = parse_section(spec.value, fields)
    if name.startswith("BINARY") and section.text:
        raise ImapParseError(f"invalid {name} section: only part numbers are allowed")
    return section


def _item(token: Token) -> FetchItem:
    if not isinstance(token, Atom):
        raise ImapParseError("invalid FETCH item: an atom is expected")
    name = token.upper()
    if token.section is None:
        if token.partial is not None:
            raise ImapParseError(f"invalid FETCH item {name}: partial needs a section")
        if name in _SIMPLE or name == "BODY":
            return FetchItem(name)
        if name in _SECTIONED:
            raise ImapParseError(f"FETCH item {name} needs a section")
        raise ImapParseError(f"unknown FETCH item {token.value!r}")
    if name not in _SECTIONED:
        raise ImapParseError(f"FETCH item {name} takes no section")
    if token.partial is not None:
        offset, length = token.partial
        if name == "BINARY.SIZE":
            raise ImapParseError("BINARY.SIZE takes no partial")
        if offset < 0 or length < 0 or offset > 2**32 - 1 or length > 2**32 - 1:
            raise ImapParseError("invalid partial range")
    return FetchItem(name, _section(name, token.section), token.partial)


def parse_fetch_items(arg: Token) -> list[FetchItem]:
    """A macro, one item, or a parenthesised list of items (RFC 3501 §6.4.5, §9 "fetch")."""
    if isinstance(arg, Atom) and arg.section is None and arg.upper() in _MACROS:
        return [FetchItem(n) for n in _MACROS[arg.upper()]]
    if isinstance(arg, list):
        if not arg:
            raise ImapParseError("empty FETCH item list")
        for t in arg:
            if isinstance(t, Atom) and t.section is None and t.upper() in _MACROS:
                raise ImapParseError(f"FETCH macro {t.upper()} must be used alone")
        return [_item(t) for t in arg]
    return [_item(arg)]


# ---------------------------------------------------------------- rendering


def internal_date(posix: float) -> bytes:
    """RFC 3501 §9 date-time, in UTC: ``"23-Nov-2026 09:00:00 +0000"``."""
    t = time.gmtime(posix)
    return b'"%02d-%s-%04d %02d:%02d:%02d +0000"' % (
        t.tm_mday, MONTHS[t.tm_mon - 1].encode(), t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)


@functools.lru_cache(maxsize=4096)
def _day_prefix(day: int) -> bytes:
    """b'"03-Dec-2026 ' of a day number (days since the epoch)."""
    return internal_date(day * 86400)[:13]


def internal_date_fast(posix: float) -> bytes:
    """:func:`internal_date` with the day's part computed once per day (a folder's
    messages share few days): the FETCH of a whole folder's metadata formats one date per
    message."""
    seconds = math.floor(posix)
    day, rest = divmod(seconds, 86400)
    prefix = _day_prefix(day)
    hours, rest = divmod(rest, 3600)
    return prefix + b'%02d:%02d:%02d +0000"' % (hours, rest // 60, rest % 60)


def _literal(data: bytes, binary: bool = False) -> bytes:
    if binary and b"\0" in data:  # RFC 3516 §4.2: literal8 for BINARY content holding NUL
        return b"~" + wire.literal(data)
    return wire.literal(data)


def _binary(parsed: ParsedMessage, section: Section) -> bytes | None:
    if not section.part:
        return parsed.raw
    part = parsed.find_part(section.part)
    if part is None:
        return None
    if part.multipart or part.message is not None:
        return part.body_bytes()
    enc = (part.info.encoding or b"7bit").lower()
    if enc not in (b"7bit", b"8bit", b"binary", b"base64", b"quoted-printable"):
        raise UnknownCte(enc.decode("ascii", "replace"))
    return part.decoded_body()


def render_fetch(items: list[FetchItem], meta: MessageMeta, raw: bytes | None, *,
                 add_uid: bool, parsed: ParsedMessage | None = None) -> bytes:
    """``(UID 4 FLAGS (\\Seen) BODY[TEXT] {5}\\r\\nhello)`` for one message (RFC 3501 §7.4.2).

    ``add_uid`` (UID FETCH) puts UID first when not asked; FLAGS is added when an item sets
    \\Seen (``meta`` then carries the new flags). ``raw`` may be None when no item
    :attr:`~FetchItem.needs_content`. Raises :class:`UnknownCte` for BINARY of an unknown
    transfer encoding.
    """
    out: list[bytes] = []
    names = {i.name for i in items}
    if add_uid and "UID" not in names:
        out.append(b"UID %d" % meta.uid)
    if "FLAGS" not in names and any(i.sets_seen for i in items):
        out.append(b"FLAGS (" + " ".join(meta.flags).encode() + b")")
    if parsed is None and raw is not None and any(i.needs_content for i in items):
        parsed = parse_message(raw)
    for item in items:
        name = item.name
        if name == "UID":
            out.append(b"UID %d" % meta.uid)
        elif name == "FLAGS":
            out.append(b"FLAGS (" + " ".join(meta.flags).encode() + b")")
        elif name == "INTERNALDATE":
            out.append(b"INTERNALDATE " + internal_date(meta.internal_date))
        elif name == "RFC822.SIZE":
            out.append(b"RFC822.SIZE %d" % meta.size)
        elif name == "MODSEQ":
            out.append(b"MODSEQ (%d)" % meta.modseq)
        else:
            if parsed is None:
                raise ValueError(f"FETCH {name} needs the message content")
            out.append(_content_item(item, parsed))
    return b"(" + b" ".join(out) + b")"


_FAST = frozenset({"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ", "ENVELOPE"})

# one message's list from its UID, flags (as the session reports them), internal date,
# size, modseq and cached envelope
FastRender = Callable[[int, tuple[str, ...], float, int, int, bytes | None], bytes]


def fast_renderer(items: list[FetchItem], *, add_uid: bool, add_modseq: bool
                  ) -> FastRender | None:
    """For the FETCH a client sends at every synchronisation (metadata and ENVELOPE, RFC
    3501 §6.4.5 ALL/FAST or the items listed): a function rendering one message's list
    from its metadata and cached envelope, byte for byte what :func:`render_fetch` (with
    MODSEQ appended when *add_modseq*) gives, with the item dispatch done once per FETCH
    rather than per message. None for other items (content, sections, BODYSTRUCTURE)."""
    names = [i.name for i in items]
    if not set(names) <= _FAST or any(i.section is not None for i in items):
        return None
    order = (["UID"] if add_uid and "UID" not in names else []) + names
    if add_modseq:
        order.append("MODSEQ")
    parts = {"UID": b"UID %d", "FLAGS": b"FLAGS (%s)", "INTERNALDATE": b"INTERNALDATE %s",
             "RFC822.SIZE": b"RFC822.SIZE %d", "MODSEQ": b"MODSEQ (%d)",
             "ENVELOPE": b"ENVELOPE %s"}
    template = b"(" + b" ".join(parts[n] for n in order) + b")"
    pick = operator.itemgetter(*(_CODES[n] for n in order))
    single = len(order) == 1
    enveloped = "ENVELOPE" in order

    def render(uid: int, flags: tuple[str, ...], date: float, size: int, modseq: int,
               envelope: bytes | None) -> bytes:
        if envelope is None and enveloped:
            raise ValueError("FETCH ENVELOPE needs the message's envelope")
        values = pick((uid, " ".join(flags).encode(), internal_date_fast(date), size, modseq,
                       envelope))
        return template % ((values,) if single else values)
    return render


_CODES = MappingProxyType({"UID": 0, "FLAGS": 1, "INTERNALDATE": 2, "RFC822.SIZE": 3,
                           "MODSEQ": 4, "ENVELOPE": 5})


def _content_item(item: FetchItem, parsed: ParsedMessage) -> bytes:
    name = item.name
    if name == "ENVELOPE":
        return b"ENVELOPE " + parsed.envelope()
    if name == "BODYSTRUCTURE":
        return b"BODYSTRUCTURE " + parsed.bodystructure(True)
    if name == "RFC822":
        return b"RFC822 " + _literal(parsed.raw)
    if name == "RFC822.HEADER":
        return b"RFC822.HEADER " + _literal(parsed.section(Section(text="HEADER")) or b"")
    if name == "RFC822.TEXT":
        return b"RFC822.TEXT " + _literal(parsed.section(Section(text="TEXT")) or b"")
    section = item.section
    if section is None:  # BODY without section: the non-extensible BODYSTRUCTURE
        return b"BODY " + parsed.bodystructure(False)
    if name == "BINARY.SIZE":
        data = _binary(parsed, section)
        return item.response_name() + b" %d" % len(data or b"")
    binary = name.startswith("BINARY")
    content = (_binary(parsed, section) if binary else parsed.section(section)) or b""
    if item.partial is not None:
        offset, length = item.partial
        content = content[offset:offset + length]
    return item.response_name() + b" " + _literal(content, binary)
