"""Arguments of IMAP commands: tokens to strings, numbers, flags and sequence sets."""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType

from mss.mailstore import messages
from proxy.imap.parser import Command
from proxy.imap.seqset import SequenceSet, parse_sequence_set
from proxy.imap.tokens import Atom, ImapParseError, Token, astring_value

Result = str | tuple[str, str | None] | None

_SYSTEM = MappingProxyType({f.upper(): f for f in messages.SYSTEM_FLAGS})


def nargs(cmd: Command, low: int, high: int | None = None) -> list[Token]:
    high = low if high is None else high
    if not low <= len(cmd.args) <= high:
        raise ImapParseError("Wrong number of arguments")
    return cmd.args


def astring(token: Token) -> bytes:
    value = astring_value(token)
    if value is None:
        raise ImapParseError("Expected a string")
    return value.encode() if isinstance(value, str) else value


def atom(token: Token) -> str:
    if isinstance(token, Atom) and token.section is None:
        return token.value
    raise ImapParseError("Expected an atom")


def number(token: Token) -> int:
    text = atom(token)
    if not text.isdigit() or len(text) > 20:
        raise ImapParseError("Expected a number")
    return int(text)


def flag_list(tokens: list[Token]) -> tuple[str, ...]:
    flags: list[str] = []
    for token in tokens:
        text = atom(token)
        if text.startswith("\\"):
            canonical = _SYSTEM.get(text.upper())
            if canonical is None:
                raise ImapParseError(f"Invalid system flag {text}")
            text = canonical
        elif not re.fullmatch(r"[!#$&'+-\[^-~]+", text):
            raise ImapParseError(f"Invalid keyword {text}")
        if text not in flags:
            flags.append(text)
    return tuple(flags)


def seq_set(token: Token) -> SequenceSet:
    return parse_sequence_set(atom(token))



@dataclass(frozen=True)
class NoArgs:
    """The arguments of a command that takes none (CAPABILITY, NOOP, CHECK, ...)."""


def no_args(cmd: Command) -> NoArgs:
    nargs(cmd, 0)
    return NoArgs()
