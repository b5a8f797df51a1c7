"""Parsed arguments of the selected-state commands (RFC 3501 §6.4 and extensions): pure
functions from a :class:`Command` to a frozen value, raising only ImapParseError.

A sequence set is parsed here (syntax); whether its numbers exist is known only against the
selected folder, when the command runs (RFC 3501 §9 seq-number).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.imap.args import atom, flag_list, nargs, number, seq_set
from proxy.imap.fetch import FetchItem, parse_fetch_items
from proxy.imap.names import mailbox_name
from proxy.imap.parser import Command
from proxy.imap.search import BadCharset, SearchProgram, parse_search
from proxy.imap.seqset import SequenceSet
from proxy.imap.tokens import Atom, ImapParseError, Token

RETURN_OPTIONS = frozenset({"MIN", "MAX", "COUNT", "ALL"})  # RFC 4731 §3.1


@dataclass(frozen=True)
class ExpungeArgs:
    uids: SequenceSet | None  # UID EXPUNGE (RFC 4315 §2.1); None: every \Deleted message


@dataclass(frozen=True)
class FetchArgs:
    by_uid: bool
    sequence: SequenceSet
    items: tuple[FetchItem, ...]
    changed_since: int | None = None  # RFC 7162 §3.1.4

    @property
    def asks_modseq(self) -> bool:
        return any(i.name == "MODSEQ" for i in self.items)


@dataclass(frozen=True)
class StoreArgs:
    by_uid: bool
    sequence: SequenceSet
    sign: str  # "+", "-" or "" (replace)
    silent: bool  # FLAGS.SILENT
    flags: tuple[str, ...]
    unchanged_since: int | None = None  # RFC 7162 §3.1.3


@dataclass(frozen=True)
class SearchArgs:
    by_uid: bool
    returns: tuple[str, ...] | None  # RFC 4731 RETURN (...), upper case; None: SEARCH
    program: SearchProgram | None  # None when the charset is not supported
    bad_charset: str | None = None  # the NO [BADCHARSET ...] code (RFC 3501 §6.4.4)


@dataclass(frozen=True)
class CopyArgs:
    by_uid: bool
    moving: bool  # MOVE (RFC 6851)
    sequence: SequenceSet
    name: str


def parse_expunge(cmd: Command) -> ExpungeArgs:
    if cmd.name == "UID EXPUNGE":  # RFC 4315 §2.1
        return ExpungeArgs(seq_set(nargs(cmd, 1)[0]))
    nargs(cmd, 0)
    return ExpungeArgs(None)


def _modifier(mods: Token, name: str, command: str) -> int:
    """``(NAME n)``, the one modifier each of FETCH and STORE knows (RFC 7162 §3.1)."""
    if not isinstance(mods, list) or len(mods) != 2 or atom(mods[0]).upper() != name:
        raise ImapParseError(f"Unknown {command} modifier")
    return number(mods[1])


def parse_fetch(cmd: Command) -> FetchArgs:
    args = cmd.args
    if len(args) not in (2, 3):
        raise ImapParseError("Wrong number of arguments")
    items = tuple(parse_fetch_items(args[1]))
    changed_since = _modifier(args[2], "CHANGEDSINCE", "FETCH") if len(args) == 3 else None
    return FetchArgs(cmd.name == "UID FETCH", seq_set(args[0]), items, changed_since)


def parse_store(cmd: Command) -> StoreArgs:
    args = list(cmd.args)
    if len(args) < 3:
        raise ImapParseError("Wrong number of arguments")
    unchanged_since: int | None = None
    if isinstance(args[1], list):  # RFC 7162 §3.1.3 (UNCHANGEDSINCE n)
        unchanged_since = _modifier(args.pop(1), "UNCHANGEDSINCE", "STORE")
    found = re.fullmatch(r"([+-]?)FLAGS(\.SILENT)?", atom(args[1]).upper())
    if found is None:
        raise ImapParseError("Invalid STORE operation")
    tokens = args[2:]
    if len(tokens) == 1 and isinstance(tokens[0], list):
        tokens = tokens[0]
    return StoreArgs(cmd.name == "UID STORE", seq_set(args[0]), found.group(1),
                     bool(found.group(2)), flag_list(tokens), unchanged_since)


def parse_search_command(cmd: Command) -> SearchArgs:
    """[RETURN (options)] [CHARSET name] keys (RFC 4731 §3.1, RFC 3501 §6.4.4)."""
    by_uid = cmd.name == "UID SEARCH"
    args = list(cmd.args)
    returns: tuple[str, ...] | None = None
    if len(args) >= 2 and isinstance(args[0], Atom) and args[0].upper() == "RETURN":
        if not isinstance(args[1], list):
            raise ImapParseError("RETURN needs a list")
        returns = tuple(atom(t).upper() for t in args[1]) or ("ALL",)  # RFC 4731 §3.1
        if set(returns) - RETURN_OPTIONS:
            raise ImapParseError("Unknown RETURN option")
        args = args[2:]
    try:
        program = parse_search(args)  # with its CHARSET (RFC 3501 §6.4.4)
    except BadCharset as exc:
        return SearchArgs(by_uid, returns, None, exc.code)
    return SearchArgs(by_uid, returns, program)


def parse_copy(cmd: Command) -> CopyArgs:
    set_token, name_token = nargs(cmd, 2)
    return CopyArgs(cmd.name.startswith("UID "), cmd.name.endswith("MOVE"), seq_set(set_token),
                    mailbox_name(name_token))
