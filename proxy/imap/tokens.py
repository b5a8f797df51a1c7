"""What the IMAP command parser produces, and what message metadata the content side sees.

A command's arguments are a list of :data:`Token`: an :class:`Atom`, ``bytes`` for a quoted
string or a literal (RFC 3501 §4.3: both are strings, the content only), or a ``list`` of
tokens for a parenthesised list. An "astring" argument may arrive as an Atom or as bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeAlias


class ImapParseError(ValueError):
    """Input that is not valid syntax for the command: answered ``BAD`` with this text."""


@dataclass(frozen=True)
class Atom:
    """An atom as sent (case preserved): ``UID``, ``\\Seen``, ``1:*``, ``NIL``, ``BODY.PEEK``.

    A fetch attribute with a section keeps what was inside the brackets as tokens:
    ``BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>`` is ``Atom("BODY.PEEK",
    section=(Atom("HEADER.FIELDS"), [Atom("FROM"), Atom("TO")]), partial=(0, 100))``;
    ``BODY[]`` has ``section=()``; ``BODY[1.2.MIME]`` has ``section=(Atom("1.2.MIME"),)``.
    """

    value: str
    section: tuple[Token, ...] | None = None
    partial: tuple[int, int] | None = None  # <offset.length>

    def upper(self) -> str:
        return self.value.upper()


Token: TypeAlias = "Atom | bytes | list[Token]"


@dataclass(frozen=True)
class MessageMeta:
    """What the server knows of a message without decrypting it."""

    seq: int
    uid: int
    flags: tuple[str, ...]  # system flags with backslash (\\Seen) and keywords, as stored
    internal_date: float  # POSIX seconds
    size: int  # RFC822.SIZE: octets of the message as stored
    modseq: int  # RFC 7162


def astring_value(token: Token) -> str | bytes | None:
    """An astring argument (RFC 3501 §9): the text of a plain atom, the content of a quoted
    string or literal; None for a list or an atom with a section or partial."""
    if isinstance(token, bytes):
        return token
    if isinstance(token, Atom) and token.section is None and token.partial is None:
        return token.value
    return None


def is_field_name(name: str) -> bool:
    """A header field name (RFC 5322 §3.6.8 ftext: printable US-ASCII except ":")."""
    return bool(name) and not any(c <= " " or c == ":" or c > "~" for c in name)


# RFC 3501 §9 date-month, as written in INTERNALDATE; MONTH_NUMBERS maps the upper-case
# name (dates are read case-insensitively) to 1..12.
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MONTH_NUMBERS = MappingProxyType({m.upper(): i for i, m in enumerate(MONTHS, 1)})
