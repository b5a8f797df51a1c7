"""What command handlers see of an IMAP session: the :class:`ImapSession` interface, the
selected folder's state, the listener's shared context and the outcomes a handler raises.

Command modules depend on this module, never on :mod:`proxy.imap.connection` (the concrete
session), so the dispatch table (:mod:`proxy.imap.commands`) can be imported by the
connection without a cycle.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from sqlalchemy import Connection

from audit.events import Event, Outcome
from audit.journal import AuditRecord
from mss.app import App
from mss.authenticator import Authenticator
from mss.committer import GroupCommitter
from mss.config import ImapConfig
from mss.crypto import Keyring
from mss.limits import ListenerGuard, MemoryBudget
from mss.mailstore import Mailstore, errors, folders, messages
from mss.mailstore.mailboxes import Mailbox
from mss.mailstore.notify import Notifier, Watch
from mss.metrics import Metrics, NoMetrics
from mss.sending import SendingLimits
from mss.session_registry import SessionRegistry
from mss.throttle import Throttle
from proxy.imap.cache import EnvelopeCache
from proxy.imap.parser import CommandReader, LineBuffer
from proxy.imap.refresh import FolderReads

T = TypeVar("T")
P = ParamSpec("P")

# RFC 3501 §3
NOT_AUTHENTICATED, AUTHENTICATED, SELECTED, LOGOUT = "nonauth", "auth", "selected", "logout"


class Responded(Exception):
    """A handler already sent its tagged reply (or the session must end)."""


class No(errors.BackendError):
    """Answer the command ``NO [code] text`` (a command's refusal; the store's own are
    :class:`errors.BackendError`, answered the same way)."""


@dataclass
class Selected:
    """The selected folder as this session knows it (RFC 3501 §2.3.1.2 sequence numbers)."""

    folder: folders.Folder
    owner: Mailbox  # the mailbox holding the folder (the user's own or a delegated one)
    delegated: bool
    readonly: bool
    rows: list[messages.Row]
    modseq: int
    watch: Watch
    name: str  # as the client named it (decoded)
    gone: set[int] = field(default_factory=set)  # expunged elsewhere, not yet reported
    keywords: set[str] = field(default_factory=set)  # announced in the last FLAGS response
    recent: set[int] = field(default_factory=set)  # UIDs \Recent for this session
    _index: dict[int, int] | None = None

    def seq_of(self, uid: int) -> int | None:
        if self._index is None:
            self._index = {r.uid: i + 1 for i, r in enumerate(self.rows)}
        return self._index.get(uid)

    def flags_of(self, row: messages.Row) -> tuple[str, ...]:
        """The flags as this session reports them: \\Recent added (RFC 3501 §2.3.2)."""
        return (*row.flags, "\\Recent") if row.uid in self.recent else row.flags

    def changed_order(self) -> None:
        self._index = None

    def update(self, seq: int, flags: tuple[str, ...], modseq: int) -> messages.Row:
        """Replace the row at *seq* (rows are shared, immutable); the new row."""
        row = dataclasses.replace(self.rows[seq - 1], flags=flags, modseq=modseq)
        self.rows[seq - 1] = row
        return row


class ImapSession(Protocol):
    """The session as command handlers use it (implemented by connection.Session)."""

    id: str
    state: str
    user: Mailbox | None
    selected: Selected | None
    condstore: bool
    tls: bool
    unaudited: list[AuditRecord]
    logged_in_at: float
    operator: str | None  # an operator logged in as user: the actor of its records

    @property
    def ctx(self) -> ServerContext: ...
    @property
    def remote_addr(self) -> str: ...
    @property
    def input(self) -> LineBuffer: ...
    @property
    def reader(self) -> asyncio.StreamReader: ...
    @property
    def writer(self) -> asyncio.StreamWriter: ...
    @property
    def commands(self) -> CommandReader: ...

    # output
    def send(self, data: bytes) -> None: ...
    def untagged(self, data: bytes) -> None: ...
    def tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None: ...
    async def flush(self) -> None: ...
    async def maybe_flush(self) -> None: ...
    def bad(self, tag: str | None, text: str) -> bool: ...
    def shutdown(self) -> None: ...

    # work off the event loop, audit
    async def db(self, work: Callable[Concatenate[Connection, P], T], *args: P.args,
                 **kwargs: P.kwargs) -> T: ...
    async def thread(self, work: Callable[..., T], *args: Any) -> T: ...
    async def write(self, work: Callable[[Connection], T]) -> T: ...
    def record(self, event: Event, outcome: Outcome = Outcome.SUCCESS, **fields: Any
               ) -> AuditRecord: ...
    async def audit(self, *records: AuditRecord) -> None: ...
    async def commit_unaudited(self) -> None: ...

    # session state
    def capabilities(self) -> str: ...
    def enable_condstore(self) -> None: ...
    def announce_keywords(self, flags: tuple[str, ...]) -> None: ...
    def flags_fetch(self, seq: int, row: messages.Row, uid: bool) -> bytes: ...
    def report_expunged(self, uids: set[int]) -> None: ...
    def close_selected(self) -> None: ...
    def operator_ended(self) -> None: ...
    def selection_gone(self) -> None: ...
    async def idle(self, tag: str) -> None: ...


@dataclass
class ServerContext:
    """What every session of one listener shares."""

    app: App
    committer: GroupCommitter
    mailstore: Mailstore  # the process's: snapshot cache and notifier
    throttle: Throttle
    config: ImapConfig
    tls: ssl.SSLContext
    listener: str
    implicit_tls: bool
    authenticator: Authenticator | None = None  # logins (mss serve's runtime)
    mechanisms: tuple[str, ...] = ("PLAIN",)  # SASL offered after TLS (authenticator.offered)
    methods: frozenset[str] = frozenset({"password"})  # the listener's auth
    guard: ListenerGuard | None = None  # the listener's connection caps
    budget: MemoryBudget | None = None  # the process's bytes of literals being read
    sessions: set[ImapSession] = field(default_factory=set)
    envelopes: EnvelopeCache = field(default_factory=EnvelopeCache)  # rendered ENVELOPEs
    sending: SendingLimits | None = None  # APPEND bytes per login and window (issue 17)
    metrics: Metrics = field(default_factory=NoMetrics)  # the process's (mss/metrics.py)
    registry: SessionRegistry | None = None  # the process's logged-in sessions (issue 16)
    reads: FolderReads = field(default_factory=FolderReads)  # shared by the listeners

    @property
    def notifier(self) -> Notifier:
        return self.mailstore.notifier

    @property
    def keyring(self) -> Keyring:
        """The node's: folder names are sealed under the mailbox key (mss.mailstore.names)."""
        return self.app.keyring
