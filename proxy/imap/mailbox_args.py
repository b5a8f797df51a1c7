"""Parsed arguments of the authenticated-state commands (RFC 3501 §6.3 and extensions):
pure functions from a :class:`Command` to a frozen value, raising only ImapParseError."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from proxy.imap.args import astring, atom, flag_list, nargs
from proxy.imap.names import DELIMITER, mailbox_name
from proxy.imap.parser import Command
from proxy.imap.tokens import MONTH_NUMBERS as _MONTHS
from proxy.imap.tokens import Atom, ImapParseError, Token
from proxy.imap.utf7 import decode_mailbox_name

# RFC 3501 §6.3.10, RFC 7162 §3.1 HIGHESTMODSEQ, RFC 8438 SIZE
STATUS_ITEMS = frozenset({"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN",
                          "HIGHESTMODSEQ", "SIZE"})
# RFC 5258 §3.1 selection options (REMOTE: there are no remote mailboxes), RFC 6154 §3
SELECTION_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
# RFC 5258 §3.2 return options, RFC 5819 STATUS, RFC 6154 §3 SPECIAL-USE
RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "STATUS", "SPECIAL-USE"})


@dataclass(frozen=True)
class MailboxArgs:
    """CREATE, DELETE: one mailbox name, decoded (RFC 3501 §5.1.3)."""

    name: str


@dataclass(frozen=True)
class SelectArgs:
    name: str
    readonly: bool  # EXAMINE
    condstore: bool  # RFC 7162 §3.2.8 SELECT ... (CONDSTORE)


@dataclass(frozen=True)
class RenameArgs:
    old: str
    new: str


@dataclass(frozen=True)
class SubscribeArgs:
    name: str
    subscribe: bool  # SUBSCRIBE, else UNSUBSCRIBE


@dataclass(frozen=True)
class ListArgs:
    """LIST / LSUB with the LIST-EXTENDED options (RFC 5258 §3)."""

    lsub: bool
    reference: str  # decoded, ending with the delimiter when not empty
    patterns: tuple[str, ...]  # decoded
    selection: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    status_items: tuple[str, ...] = ()  # RFC 5819 RETURN (STATUS (...)), upper case

    @property
    def root_only(self) -> bool:
        """RFC 3501 §6.3.8: LIST "" "" asks for the delimiter and the root."""
        return self.patterns == ("",) and not self.lsub


@dataclass(frozen=True)
class StatusArgs:
    name: str
    items: tuple[str, ...]  # upper case, as asked


@dataclass(frozen=True)
class AppendArgs:
    name: str
    flags: tuple[str, ...]
    when: float | None  # INTERNALDATE given (POSIX seconds); None: now
    message: bytes = field(repr=False)  # content: never in a log line


def parse_mailbox(cmd: Command) -> MailboxArgs:
    return MailboxArgs(mailbox_name(nargs(cmd, 1)[0]))


def parse_select(cmd: Command) -> SelectArgs:
    args = nargs(cmd, 1, 2)
    condstore = False
    if len(args) == 2:  # RFC 7162 §3.2.8
        params = args[1]
        if not isinstance(params, list) or [atom(p).upper() for p in params] != ["CONDSTORE"]:
            raise ImapParseError("Unknown SELECT parameter")
        condstore = True
    return SelectArgs(mailbox_name(args[0]), cmd.name == "EXAMINE", condstore)


def parse_rename(cmd: Command) -> RenameArgs:
    old, new = nargs(cmd, 2)
    return RenameArgs(mailbox_name(old), mailbox_name(new))


def parse_subscribe(cmd: Command) -> SubscribeArgs:
    return SubscribeArgs(mailbox_name(nargs(cmd, 1)[0]), cmd.name == "SUBSCRIBE")


def status_items(tokens: list[Token]) -> tuple[str, ...]:
    items = tuple(atom(token).upper() for token in tokens)
    for item in items:
        if item not in STATUS_ITEMS:
            raise ImapParseError(f"Unknown STATUS item {item}")
    return items


def parse_status(cmd: Command) -> StatusArgs:
    name_token, items = nargs(cmd, 2)
    if not isinstance(items, list) or not items:
        raise ImapParseError("STATUS needs a list of items")
    return StatusArgs(mailbox_name(name_token), status_items(items))


def _selection(tokens: list[Token]) -> frozenset[str]:
    selection = frozenset(atom(t).upper() for t in tokens)
    unknown = selection - SELECTION_OPTIONS
    if unknown:  # RFC 5258 §3.1: an unrecognised selection option is BAD
        raise ImapParseError(f"Unknown LIST selection option {sorted(unknown)[0]}")
    if "RECURSIVEMATCH" in selection and "SUBSCRIBED" not in selection:
        # RFC 5258 §3.1: never alone (nor with REMOTE only); CHILDINFO is defined for
        # SUBSCRIBED only here (RFC 6154 §3 gives none for SPECIAL-USE)
        raise ImapParseError("RECURSIVEMATCH needs the SUBSCRIBED selection option")
    return selection


def _returns(ret: Token) -> tuple[frozenset[str], tuple[str, ...]]:
    if not isinstance(ret, list):
        raise ImapParseError("RETURN needs a list")
    returns: set[str] = set()
    items: tuple[str, ...] = ()
    i = 0
    while i < len(ret):
        option = atom(ret[i]).upper()
        if option not in RETURN_OPTIONS:
            raise ImapParseError(f"Unknown LIST return option {option}")
        if option == "STATUS":  # RFC 5819
            i += 1
            listed = ret[i] if i < len(ret) else None
            if not isinstance(listed, list):
                raise ImapParseError("STATUS needs a list")
            items = status_items(listed)
        returns.add(option)
        i += 1
    return frozenset(returns), items


def parse_list(cmd: Command) -> ListArgs:
    """LIST [(selection)] reference patterns [RETURN (options)] (RFC 5258 §3), LSUB."""
    args = list(cmd.args)
    selection: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    items: tuple[str, ...] = ()
    extended = False
    first = args[0] if args else None
    if isinstance(first, list):
        selection = _selection(first)
        del args[0]
        extended = True
    if len(args) >= 2 and isinstance(args[-2], Atom) and args[-2].upper() == "RETURN":
        returns, items = _returns(args.pop())
        args.pop()
        extended = True
    lsub = cmd.name == "LSUB"
    if extended and lsub:
        raise ImapParseError("LSUB takes no LIST-EXTENDED options")
    if len(args) != 2:
        raise ImapParseError("Wrong number of arguments")
    reference = mailbox_name(args[0]) if astring(args[0]) else ""
    if reference and not reference.endswith(DELIMITER):
        reference += DELIMITER
    pattern_tokens = args[1] if isinstance(args[1], list) else [args[1]]
    patterns = tuple(decode_mailbox_name(astring(p).decode("utf-8", "replace"))
                     for p in pattern_tokens)
    return ListArgs(lsub, reference, patterns, selection, returns, items)


def parse_date_time(text: str) -> float:
    """RFC 3501 date-time ``"dd-Mon-yyyy hh:mm:ss +zzzz"`` as POSIX seconds."""
    found = re.fullmatch(
        r" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)", text)
    if found is None or found.group(2).upper() not in _MONTHS:
        raise ImapParseError("Invalid date-time")
    day, _, year, hh, mm, ss, sign, zh, zm = found.groups()
    try:
        zone = dt.timezone((1 if sign == "+" else -1) * dt.timedelta(hours=int(zh),
                                                                     minutes=int(zm)))
        when = dt.datetime(int(year), _MONTHS[found.group(2).upper()], int(day), int(hh),
                           int(mm), int(ss), tzinfo=zone)
    except ValueError:  # 31-Feb, 25:00, a zone beyond 24 h
        raise ImapParseError("Invalid date-time") from None
    return when.timestamp()


def parse_append(cmd: Command) -> AppendArgs:
    """APPEND mailbox [(flags)] [date-time] literal (RFC 3501 §6.3.11)."""
    args = nargs(cmd, 2, 4)
    name = mailbox_name(args[0])
    rest = args[1:]
    message = rest.pop()
    if not isinstance(message, bytes):
        raise ImapParseError("Message must be a literal")
    flags: tuple[str, ...] = ()
    when: float | None = None
    for token in rest:
        if isinstance(token, list):
            flags = flag_list(token)
        elif isinstance(token, bytes):
            when = parse_date_time(token.decode("ascii", "replace"))
        else:
            raise ImapParseError("Invalid APPEND argument")
    return AppendArgs(name, flags, when, message)
