"""SEARCH programs (RFC 3501 §6.4.4; MODSEQ of RFC 7162 §3.1.5).

:func:`parse_search` builds a tree of keys; :meth:`SearchProgram.matches` evaluates it on
one message, metadata keys first, loading (decrypting) the message only when the answer
still depends on a header or body key. String keys match case-insensitively as substrings
of the decoded text (RFC 2047 words and transfer encodings undone).
"""

from __future__ import annotations

import binascii
import datetime as dt
import email.utils
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

from mss.mime import decode_quoted_printable
from proxy.imap.mime import ParsedMessage
from proxy.imap.seqset import SequenceSet, parse_sequence_set
from proxy.imap.tokens import (
    MONTH_NUMBERS,
    Atom,
    ImapParseError,
    MessageMeta,
    Token,
    astring_value,
    is_field_name,
)

# The charsets SEARCH accepts, in the order the BADCHARSET response code lists them.
CHARSETS = ("UTF-8", "US-ASCII")
_FLAG_KEYS = MappingProxyType({  # RFC 3501 §6.4.4: key -> (flag, present)
    "ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True), "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True),
    "RECENT": ("\\Recent", True), "OLD": ("\\Recent", False),
    "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False), "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
})
_ADDRESS_KEYS = ("BCC", "CC", "FROM", "SUBJECT", "TO")
_DATE_KEYS = MappingProxyType({
    "BEFORE": ("before", False), "ON": ("on", False), "SINCE": ("since", False),
    "SENTBEFORE": ("before", True), "SENTON": ("on", True), "SENTSINCE": ("since", True),
})


class BadCharset(Exception):
    """A CHARSET not in :data:`CHARSETS`: answered ``NO [BADCHARSET (UTF-8 US-ASCII)]``
    (RFC 3501 §6.4.4, §7.1); :attr:`code` is that response code."""

    code = "BADCHARSET (" + " ".join(CHARSETS) + ")"

    def __init__(self, charset: str) -> None:
        super().__init__(f"unsupported charset {charset!r}")
        self.charset = charset


# ---------------------------------------------------------------- keys


@dataclass(frozen=True)
class All:
    pass


@dataclass(frozen=True)
class Flag:
    flag: str  # "\\Seen" or a keyword
    present: bool


@dataclass(frozen=True)
class Size:
    larger: bool
    octets: int


@dataclass(frozen=True)
class Date:
    op: str  # "before" | "on" | "since"
    day: dt.date
    sent: bool  # Date: header (SENT*) rather than the internal date


@dataclass(frozen=True)
class Header:
    field: str  # lower case
    text: str  # case-folded; "" matches any message with the field
    address: bool = False  # FROM/TO/CC/BCC: the ENVELOPE's addresses match too


@dataclass(frozen=True)
class Body:
    text: str  # case-folded
    with_header: bool  # TEXT (headers of the message and its parts, and body) not BODY


@dataclass(frozen=True)
class Numbers:
    numbers: SequenceSet
    uid: bool


@dataclass(frozen=True)
class ModSeq:
    modseq: int


@dataclass(frozen=True)
class Not:
    key: Key


@dataclass(frozen=True)
class Or:
    left: Key
    right: Key


@dataclass(frozen=True)
class And:
    keys: tuple[Key, ...]


Key = All | Flag | Size | Date | Header | Body | Numbers | ModSeq | Not | Or | And


def _walk(key: Key) -> list[Key]:
    if isinstance(key, Not):
        return [key, *_walk(key.key)]
    if isinstance(key, Or):
        return [key, *_walk(key.left), *_walk(key.right)]
    if isinstance(key, And):
        return [key, *(k for sub in key.keys for k in _walk(sub))]
    return [key]


# ---------------------------------------------------------------- evaluation


_EPOCH = dt.date(1970, 1, 1)


def _sent_date(msg: ParsedMessage) -> dt.date:
    """The Date: field's day as written (RFC 3501 ignores time and zone); a missing or
    unreadable Date: counts as 1-Jan-1970, as Dovecot does."""
    values = msg.header_values("date")
    parsed = email.utils.parsedate_tz(values[0]) if values else None
    if parsed is None:
        return _EPOCH
    try:
        return dt.date(parsed[0], parsed[1], parsed[2])
    except ValueError:
        return _EPOCH


def _compare(op: str, day: dt.date, wanted: dt.date) -> bool:
    if op == "before":
        return day < wanted
    if op == "on":
        return day == wanted
    return day >= wanted


# ---------------------------------------------------------------- a quick test of the bytes

_EQUALS_BLANK = re.compile(rb"=[ \t]")

# charsets whose decoding gives each ASCII byte as that character (RFC 2046 §4.1.2)
_ASCII_CHARSET = re.compile(rb'charset[ \t]*=[ \t]*"?(?:us-ascii|ascii|utf-8|utf8|'
                            rb'iso-8859-[0-9]{1,2}|windows-125[0-9])"?(?=[ \t\r\n;]|\Z)')


@functools.lru_cache(maxsize=256)  # once per search key, not per message
def _plain_needle(text: str) -> bool:
    """A string the quick test can look for: ASCII, no white space, no colon (the
    decoded text joins fields as ``name: value`` lines, unfolded: the raw bytes may
    differ there, never within a run of other characters)."""
    return text.isascii() and not any(c.isspace() or c == ":" for c in text)


def byte_views(raw: bytes) -> tuple[bytes, ...] | None:
    """Lower-case views of a message's bytes holding every run of non-blank ASCII
    characters that its decoded header and body text (what TEXT and BODY search,
    :meth:`_Context.header`, :meth:`_Context.body`) can hold: the bytes as stored and,
    when a part is quoted-printable, the whole message with that encoding undone (each
    part's decoding is the same function on its own span, RFC 2045 §6.7). None when no
    such views exist cheaply: non-ASCII bytes (a character whose case folding is ASCII,
    U+00DF to "ss"), RFC 2047 encoded words, base64, a charset that does not keep ASCII
    bytes as they are (UTF-7, UTF-16...): then the message is decoded as usual."""
    low = raw.lower()
    # an encoded word ends with "?=" (RFC 2047 §2): rarer than "=?" in quoted-printable
    if not low.isascii() or b"?=" in low or b"base64" in low:
        return None
    if low.count(b"charset") != len(_ASCII_CHARSET.findall(low)):
        return None
    if b"quoted-printable" not in low:
        return (low,)
    # =XX escapes are hexadecimal in either case; what they give is lowered again. The
    # padding that decode_quoted_printable strips before line ends (RFC 2045 §6.7 rule 3)
    # only matters after an "=" (a soft break "= \r\n"): elsewhere binascii.a2b_qp alone
    # gives the same characters but for blanks, and the needle holds none
    decoded = (decode_quoted_printable(low) if _EQUALS_BLANK.search(low)
               else binascii.a2b_qp(low)).lower()
    if not decoded.isascii():
        return None
    return low, decoded


class _Context:
    def __init__(self, meta: MessageMeta, largest_seq: int, largest_uid: int,
                 msg: ParsedMessage | None) -> None:
        self.meta = meta
        self.largest_seq = largest_seq
        self.largest_uid = largest_uid
        self.msg = msg
        self.flags = {f.casefold() for f in meta.flags}
        self._body: str | None = None
        self._header: str | None = None
        self._views: tuple[bytes, ...] | None | bool = False  # False: not computed yet

    def cannot_contain(self, text: str) -> bool:
        """True when *text* (case-folded) is surely in neither the decoded header nor the
        body text: found in no :func:`byte_views` of the message (ASCII bytes lowered are
        their case folding). False when it may be: decode and look."""
        if not _plain_needle(text):
            return False
        if self._views is False:
            assert self.msg is not None
            self._views = byte_views(self.msg.raw)
        views = self._views
        if not isinstance(views, tuple):
            return False
        needle = text.encode("ascii")
        return not any(needle in view for view in views)

    def body(self) -> str:
        if self._body is None:
            assert self.msg is not None
            self._body = self.msg.text_for_search().casefold()
        return self._body

    def header(self) -> str:
        if self._header is None:
            assert self.msg is not None
            self._header = self.msg.header_text(all_parts=True).casefold()
        return self._header


def _eval(key: Key, c: _Context) -> bool | None:
    """True/False, or None when the answer needs the message content not loaded yet."""
    if isinstance(key, All):
        return True
    if isinstance(key, Flag):
        return (key.flag.casefold() in c.flags) == key.present
    if isinstance(key, Size):
        return c.meta.size > key.octets if key.larger else c.meta.size < key.octets
    if isinstance(key, Numbers):
        if key.uid:
            return key.numbers.contains(c.meta.uid, c.largest_uid)
        return key.numbers.contains(c.meta.seq, c.largest_seq)
    if isinstance(key, ModSeq):
        return c.meta.modseq >= key.modseq
    if isinstance(key, Date):
        if not key.sent:
            day = dt.datetime.fromtimestamp(c.meta.internal_date, dt.UTC).date()
            return _compare(key.op, day, key.day)
        if c.msg is None:
            return None
        return _compare(key.op, _sent_date(c.msg), key.day)
    if isinstance(key, Header):
        if c.msg is None:
            return None
        # the field text (comments included), then for an address key its ENVELOPE form
        if any(key.text in v.casefold() for v in c.msg.header_values(key.field)):
            return True
        return key.address and any(key.text in v.casefold()
                                   for v in c.msg.address_values(key.field))
    if isinstance(key, Body):
        if c.msg is None:
            return None
        if c.cannot_contain(key.text):
            return False
        if key.with_header and key.text in c.header():
            return True
        return key.text in c.body()
    if isinstance(key, Not):
        inner = _eval(key.key, c)
        return None if inner is None else not inner
    if isinstance(key, Or):
        left = _eval(key.left, c)
        if left is True:
            return True
        right = _eval(key.right, c)
        if right is True:
            return True
        return None if left is None or right is None else False
    unknown = False
    for sub in key.keys:
        value = _eval(sub, c)
        if value is False:
            return False
        unknown = unknown or value is None
    return None if unknown else True


@dataclass(frozen=True)
class SearchProgram:
    key: Key
    charset: str = "US-ASCII"

    @property
    def needs_content(self) -> bool:
        """A header or body key: the message must be read (decrypted)."""
        return any(isinstance(k, Header | Body) or (isinstance(k, Date) and k.sent)
                   for k in _walk(self.key))

    @property
    def needs_headers_only(self) -> bool:
        """Content is needed, but only the header block (no BODY/TEXT key)."""
        return self.needs_content and not any(isinstance(k, Body) for k in _walk(self.key))

    @property
    def has_modseq(self) -> bool:
        """MODSEQ used: the answer carries ``(MODSEQ n)`` (RFC 7162 §3.1.5)."""
        return any(isinstance(k, ModSeq) for k in _walk(self.key))

    def matches(self, meta: MessageMeta, *, largest_seq: int, largest_uid: int,
                load: Callable[[], ParsedMessage]) -> bool:
        c = _Context(meta, largest_seq, largest_uid, None)
        result = _eval(self.key, c)
        if result is None:
            c.msg = load()
            result = _eval(self.key, c)
        return bool(result)


# ---------------------------------------------------------------- parsing


# NOT, OR and parenthesised keys nest at most this deep: deeper is BAD, never a recursion error
MAX_KEY_DEPTH = 100


class _Parser:
    def __init__(self, args: list[Token], charset: str, depth: int = 0) -> None:
        self.args = args
        self.i = 0
        self.charset = charset
        self.depth = depth

    def next(self, what: str) -> Token:
        if self.i >= len(self.args):
            raise ImapParseError(f"SEARCH: missing {what}")
        token = self.args[self.i]
        self.i += 1
        return token

    def string(self, what: str) -> str:
        value = astring_value(self.next(what))
        if value is None:
            raise ImapParseError(f"SEARCH: {what} must be a string")
        if isinstance(value, str):
            return value
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ImapParseError(f"SEARCH: {what} is not valid {self.charset}") from exc

    def number(self, what: str, limit: int = 2**32 - 1) -> int:
        text = self.string(what)
        if not text.isascii() or not text.isdigit() or int(text) > limit:
            raise ImapParseError(f"SEARCH: invalid {what} {text!r}")
        return int(text)

    def date(self, key: str) -> dt.date:
        text = self.string(f"date after {key}")
        day, _, rest = text.partition("-")
        month, _, year = rest.partition("-")
        # RFC 3501 §9: date-day 1*2DIGIT "-" date-month "-" 4DIGIT
        if (not (1 <= len(day) <= 2 and day.isascii() and day.isdigit())
                or month.upper() not in MONTH_NUMBERS
                or not (len(year) == 4 and year.isascii() and year.isdigit())):
            raise ImapParseError(f"SEARCH: invalid date {text!r} (expected like 1-Feb-1994)")
        try:
            return dt.date(int(year), MONTH_NUMBERS[month.upper()], int(day))
        except ValueError as exc:
            raise ImapParseError(f"SEARCH: invalid date {text!r}") from exc

    def keys(self) -> Key:
        keys: list[Key] = []
        while self.i < len(self.args):
            keys.append(self.key())
        if not keys:
            raise ImapParseError("SEARCH: no search key")
        return keys[0] if len(keys) == 1 else And(tuple(keys))

    def key(self) -> Key:
        if self.depth >= MAX_KEY_DEPTH:
            raise ImapParseError("SEARCH: search keys nested too deeply")
        self.depth += 1
        try:
            return self._key()
        finally:
            self.depth -= 1

    def _key(self) -> Key:
        token = self.next("search key")
        if isinstance(token, list):
            if not token:
                raise ImapParseError("SEARCH: empty parenthesised list")
            sub = _Parser(token, self.charset, self.depth)
            return sub.keys()
        if not isinstance(token, Atom) or token.section is not None or token.partial is not None:
            raise ImapParseError("SEARCH: a search key is expected")
        name = token.upper()
        if name == "ALL":
            return All()
        if name in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[name]
            return Flag(flag, present)
        if name == "NEW":  # RFC 3501: RECENT UNSEEN
            return And((Flag("\\Recent", True), Flag("\\Seen", False)))
        if name in ("KEYWORD", "UNKEYWORD"):
            keyword = self.string(f"flag after {name}")
            if not keyword or any(c in keyword for c in '(){ %*"\\]') or not keyword.isascii():
                raise ImapParseError(f"SEARCH: invalid keyword {keyword!r}")
            return Flag(keyword, name == "KEYWORD")
        if name in ("LARGER", "SMALLER"):
            return Size(name == "LARGER", self.number(f"size after {name}"))
        if name in _DATE_KEYS:
            op, sent = _DATE_KEYS[name]
            return Date(op, self.date(name), sent)
        if name in _ADDRESS_KEYS:  # RFC 3501 §6.4.4: FROM/TO/CC/BCC search the addresses
            return Header(name.lower(), self.string(f"string after {name}").casefold(),
                          address=name != "SUBJECT")
        if name == "HEADER":
            field = self.string("field name after HEADER")
            if not is_field_name(field):
                raise ImapParseError(f"SEARCH: invalid header field name {field!r}")
            return Header(field.lower(), self.string("string after HEADER").casefold())
        if name in ("BODY", "TEXT"):
            return Body(self.string(f"string after {name}").casefold(), name == "TEXT")
        if name == "NOT":
            return Not(self.key())
        if name == "OR":
            left = self.key()
            return Or(left, self.key())
        if name == "UID":
            text = self.string("sequence set after UID")
            return Numbers(parse_sequence_set(text), True)
        if name == "MODSEQ":
            # RFC 7162 §3.1.5: MODSEQ [entry-name entry-type-req] mod-sequence-valzer
            if self.i < len(self.args) and isinstance(self.args[self.i], bytes):
                self.string("entry name after MODSEQ")
                kind = self.string("entry type after MODSEQ").lower()
                if kind not in ("priv", "shared", "all"):
                    raise ImapParseError(f"SEARCH: invalid MODSEQ entry type {kind!r}")
            return ModSeq(self.number("mod-sequence after MODSEQ", 2**63 - 1))
        if name[:1].isdigit() or name[:1] == "*":
            return Numbers(parse_sequence_set(token.value), False)
        raise ImapParseError(f"SEARCH: unknown search key {token.value!r}")


def _charset(name: str) -> str:
    upper = name.upper()
    if upper not in CHARSETS:
        raise BadCharset(name)
    return upper


def _is_charset_key(args: list[Token]) -> bool:
    first = args[0] if args else None
    return isinstance(first, Atom) and first.section is None and first.upper() == "CHARSET"


def parse_search(args: list[Token], *, charset: str | None = None) -> SearchProgram:
    """The arguments of SEARCH after ``RETURN (...)`` (RFC 4731): at most one leading
    ``CHARSET name``, then the search keys (RFC 3501 §6.4.4, §9 "search").

    ``charset`` is for a caller that has already read the CHARSET (tests): the arguments
    must then not start with another one. Without either, the charset is US-ASCII.

    Raises :class:`ImapParseError` (``BAD``) or :class:`BadCharset` (``NO`` with
    :attr:`BadCharset.code`).
    """
    name = "US-ASCII" if charset is None else _charset(charset)
    if charset is None and _is_charset_key(args):
        if len(args) < 2:
            raise ImapParseError("SEARCH: missing charset after CHARSET")
        value = astring_value(args[1])
        if value is None:
            raise ImapParseError("SEARCH: invalid charset")
        name = _charset(value.decode("utf-8", "replace") if isinstance(value, bytes)
                        else value)
        args = args[2:]
    if _is_charset_key(args):
        raise ImapParseError("SEARCH: CHARSET given more than once")
    return SearchProgram(_Parser(args, name).keys(), name)
