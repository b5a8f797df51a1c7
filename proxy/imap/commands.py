"""The IMAP command table: name -> how its arguments parse, what runs it, in which states.

A command runs in two steps: ``parse`` (pure: the :class:`Command`'s tokens to a frozen
value of its family's ``*_args`` module, raising only ``ImapParseError``, answered ``BAD``),
then ``run(session, command, args)``, which executes against the store and renders. ``run``
returns the text of the tagged ``OK`` (optionally ``(text, code)``), raises :class:`No` /
``BackendError`` for ``NO``. Untagged updates for other sessions' changes are added by the
session before the tagged reply.

The table depends on the command modules, and they on :mod:`proxy.imap.state` only (never
on the concrete connection, which imports this table).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from proxy.imap import mailbox_args, message_args, session_args
from proxy.imap import mailbox_commands as mbx
from proxy.imap import message_commands as msg
from proxy.imap import session_commands as ses
from proxy.imap.args import Result, no_args
from proxy.imap.parser import Command
from proxy.imap.state import AUTHENTICATED, NOT_AUTHENTICATED, SELECTED, ImapSession

A = TypeVar("A")

ANY = (NOT_AUTHENTICATED, AUTHENTICATED, SELECTED)
AUTH = (AUTHENTICATED, SELECTED)
SEL = (SELECTED,)


@dataclass(frozen=True)
class Spec(Generic[A]):
    """One command: its parser, its handler (given what the parser made), its states."""

    parse: Callable[[Command], A]
    run: Callable[[ImapSession, Command, A], Awaitable[Result]]
    states: tuple[str, ...]


COMMANDS: MappingProxyType[str, Spec[Any]] = MappingProxyType({
    "CAPABILITY": Spec(no_args, ses.capability, ANY),
    "NOOP": Spec(no_args, ses.noop, ANY),
    "LOGOUT": Spec(no_args, ses.logout, ANY),
    "ID": Spec(session_args.parse_id, ses.id_command, ANY),
    "STARTTLS": Spec(no_args, ses.starttls, (NOT_AUTHENTICATED,)),
    "LOGIN": Spec(session_args.parse_login, ses.login, (NOT_AUTHENTICATED,)),
    "AUTHENTICATE": Spec(session_args.parse_authenticate, ses.authenticate,
                         (NOT_AUTHENTICATED,)),
    "ENABLE": Spec(session_args.parse_enable, ses.enable, AUTH),
    "SELECT": Spec(mailbox_args.parse_select, mbx.select_command, AUTH),
    "EXAMINE": Spec(mailbox_args.parse_select, mbx.select_command, AUTH),
    "CREATE": Spec(mailbox_args.parse_mailbox, mbx.create, AUTH),
    "DELETE": Spec(mailbox_args.parse_mailbox, mbx.delete_command, AUTH),
    "RENAME": Spec(mailbox_args.parse_rename, mbx.rename, AUTH),
    "SUBSCRIBE": Spec(mailbox_args.parse_subscribe, mbx.subscribe, AUTH),
    "UNSUBSCRIBE": Spec(mailbox_args.parse_subscribe, mbx.subscribe, AUTH),
    "LIST": Spec(mailbox_args.parse_list, mbx.list_command, AUTH),
    "LSUB": Spec(mailbox_args.parse_list, mbx.list_command, AUTH),
    "STATUS": Spec(mailbox_args.parse_status, mbx.status, AUTH),
    "NAMESPACE": Spec(no_args, mbx.namespace, AUTH),
    "APPEND": Spec(mailbox_args.parse_append, mbx.append_command, AUTH),
    "IDLE": Spec(no_args, mbx.idle, AUTH),
    "CHECK": Spec(no_args, msg.check, SEL),
    "CLOSE": Spec(no_args, msg.close, SEL),
    "UNSELECT": Spec(no_args, msg.unselect, SEL),
    "EXPUNGE": Spec(message_args.parse_expunge, msg.expunge_command, SEL),
    "UID EXPUNGE": Spec(message_args.parse_expunge, msg.expunge_command, SEL),
    "SEARCH": Spec(message_args.parse_search_command, msg.search, SEL),
    "UID SEARCH": Spec(message_args.parse_search_command, msg.search, SEL),
    "FETCH": Spec(message_args.parse_fetch, msg.fetch, SEL),
    "UID FETCH": Spec(message_args.parse_fetch, msg.fetch, SEL),
    "STORE": Spec(message_args.parse_store, msg.store_command, SEL),
    "UID STORE": Spec(message_args.parse_store, msg.store_command, SEL),
    "COPY": Spec(message_args.parse_copy, msg.copy_move, SEL),
    "UID COPY": Spec(message_args.parse_copy, msg.copy_move, SEL),
    "MOVE": Spec(message_args.parse_copy, msg.copy_move, SEL),
    "UID MOVE": Spec(message_args.parse_copy, msg.copy_move, SEL),
})
