"""The IMAP command table: name -> (handler, states where it is valid).

A handler receives the session and the parsed command. It returns the text of the tagged
``OK`` (optionally ``(text, code)``), raises :class:`No` / ``BackendError`` for ``NO``, or
``ImapParseError`` for ``BAD``. Untagged updates for other sessions' changes are added by the
session before the tagged reply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from proxy.imap import mailbox_commands as mbx
from proxy.imap import message_commands as msg
from proxy.imap import session_commands as ses
from proxy.imap.args import Result
from proxy.imap.parser import Command
from proxy.imap.state import AUTHENTICATED, NOT_AUTHENTICATED, SELECTED, ImapSession

Handler = Callable[[ImapSession, Command], Awaitable[Result]]

ANY = (NOT_AUTHENTICATED, AUTHENTICATED, SELECTED)
AUTH = (AUTHENTICATED, SELECTED)
SEL = (SELECTED,)

COMMANDS: dict[str, tuple[Handler, tuple[str, ...]]] = {
    "CAPABILITY": (ses.capability, ANY),
    "NOOP": (ses.noop, ANY),
    "LOGOUT": (ses.logout, ANY),
    "ID": (ses.id_command, ANY),
    "STARTTLS": (ses.starttls, (NOT_AUTHENTICATED,)),
    "LOGIN": (ses.login, (NOT_AUTHENTICATED,)),
    "AUTHENTICATE": (ses.authenticate, (NOT_AUTHENTICATED,)),
    "ENABLE": (ses.enable, AUTH),
    "SELECT": (mbx.select_command, AUTH),
    "EXAMINE": (mbx.select_command, AUTH),
    "CREATE": (mbx.create, AUTH),
    "DELETE": (mbx.delete_command, AUTH),
    "RENAME": (mbx.rename, AUTH),
    "SUBSCRIBE": (mbx.subscribe, AUTH),
    "UNSUBSCRIBE": (mbx.subscribe, AUTH),
    "LIST": (mbx.list_command, AUTH),
    "LSUB": (mbx.list_command, AUTH),
    "STATUS": (mbx.status, AUTH),
    "NAMESPACE": (mbx.namespace, AUTH),
    "APPEND": (mbx.append_command, AUTH),
    "IDLE": (mbx.idle, AUTH),
    "CHECK": (msg.check, SEL),
    "CLOSE": (msg.close, SEL),
    "UNSELECT": (msg.unselect, SEL),
    "EXPUNGE": (msg.expunge_command, SEL),
    "UID EXPUNGE": (msg.expunge_command, SEL),
    "SEARCH": (msg.search, SEL),
    "UID SEARCH": (msg.search, SEL),
    "FETCH": (msg.fetch, SEL),
    "UID FETCH": (msg.fetch, SEL),
    "STORE": (msg.store_command, SEL),
    "UID STORE": (msg.store_command, SEL),
    "COPY": (msg.copy_move, SEL),
    "UID COPY": (msg.copy_move, SEL),
    "MOVE": (msg.copy_move, SEL),
    "UID MOVE": (msg.copy_move, SEL),
}
