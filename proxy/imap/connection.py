"""One IMAP connection: the RFC 3501 §3 state machine, I/O, timeouts and untagged updates.

States: not authenticated -> authenticated -> selected -> logout. Commands are read one
at a time from a buffered stream (so commands pipelined by the client, also straight after
IDLE's DONE, are simply the next ones read) and answered in order. Changes made by other
sessions or by SMTP delivery are reported when RFC 3501 §5.2 and §7.4.1 allow: after each
command (EXPUNGE not during FETCH, STORE or SEARCH by sequence number) and during IDLE.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import structlog
from sqlalchemy import Connection

from audit.events import Outcome
from audit.journal import AuditRecord, append
from mss.app import App
from mss.committer import GroupCommitter
from mss.config import ImapConfig
from mss.store import Mailbox
from mss.throttle import Throttle
from proxy.imap import backend, grants
from proxy.imap.notifier import Notifier, Watch
from proxy.imap.parser import (
    Command,
    CommandError,
    CommandReader,
    LineBuffer,
    LineTooLong,
    LiteralTooLarge,
    parse_command,
)
from proxy.imap.tokens import ImapParseError

log = structlog.get_logger("mss.imap")
T = TypeVar("T")

NOT_AUTHENTICATED, AUTHENTICATED, SELECTED, LOGOUT = "nonauth", "auth", "selected", "logout"
PREAUTH_MAX_LITERAL = 64 * 1024  # literals before login: credentials only
ENABLED_CHECK = 10.0  # seconds between checks that the logged-in mailbox is still enabled


@dataclass
class ServerContext:
    """What every session of one listener shares."""

    app: App
    committer: GroupCommitter
    notifier: Notifier
    throttle: Throttle
    config: ImapConfig
    tls: ssl.SSLContext
    listener: str
    implicit_tls: bool
    sessions: set[Session] = field(default_factory=set)


class Responded(Exception):
    """A handler already sent its tagged reply (or the session must end)."""


class No(backend.BackendError):
    """Answer the command ``NO [code] text`` (a command's refusal; the store's own are
    :class:`backend.BackendError`, answered the same way)."""


@dataclass
class Selected:
    """The selected folder as this session knows it (RFC 3501 §2.3.1.2 sequence numbers)."""

    folder: backend.Folder
    owner: Mailbox  # the mailbox holding the folder (the user's own or a delegated one)
    delegated: bool
    readonly: bool
    rows: list[backend.Row]
    modseq: int
    watch: Watch
    name: str  # as the client named it (decoded)
    gone: set[int] = field(default_factory=set)  # expunged elsewhere, not yet reported
    keywords: set[str] = field(default_factory=set)  # announced in the last FLAGS response
    _index: dict[int, int] | None = None

    def seq_of(self, uid: int) -> int | None:
        if self._index is None:
            self._index = {r.uid: i + 1 for i, r in enumerate(self.rows)}
        return self._index.get(uid)

    def changed_order(self) -> None:
        self._index = None

    def update(self, seq: int, flags: tuple[str, ...], modseq: int) -> backend.Row:
        """Replace the row at *seq* (rows are shared, immutable); the new row."""
        row = dataclasses.replace(self.rows[seq - 1], flags=flags, modseq=modseq)
        self.rows[seq - 1] = row
        return row


class Session:
    def __init__(self, ctx: ServerContext, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.ctx = ctx
        self.reader = reader
        self.writer = writer
        self.id = secrets.token_hex(8)
        peer = writer.get_extra_info("peername")
        self.remote_addr: str = str(peer[0]) if peer else "unknown"
        self.tls = ctx.implicit_tls
        self.state = NOT_AUTHENTICATED
        self.user: Mailbox | None = None
        self.selected: Selected | None = None
        self.condstore = False  # RFC 7162 §3.1: enabled by ENABLE, SELECT (CONDSTORE), ...
        self.out = bytearray()
        # audit records of content already in self.out: committed before it is written
        self.unaudited: list[AuditRecord] = []
        self.input = LineBuffer(reader.read)
        self.commands = CommandReader(self.input, self._continue,
                                      max_line=ctx.config.max_line_length,
                                      max_literal=PREAUTH_MAX_LITERAL,
                                      max_command=4 * PREAUTH_MAX_LITERAL)
        self.errors = 0
        self.command_name = ""
        self.enabled_checked = time.monotonic()

    # ------------------------------------------------------------------ output
    def send(self, data: bytes) -> None:
        self.out += data

    def untagged(self, data: bytes) -> None:
        self.out += b"* " + data + b"\r\n"

    def tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None:
        coded = f"[{code}] " if code else ""
        self.out += f"{tag} {status} {coded}{text}\r\n".encode()

    async def flush(self) -> None:
        if self.unaudited:  # message content is about to leave: its audit records first
            await self.commit_unaudited()
        if self.out:
            self.writer.write(bytes(self.out))
            self.out.clear()
            await self.writer.drain()

    async def maybe_flush(self) -> None:
        if len(self.out) > 256 * 1024:
            await self.flush()

    async def _continue(self) -> None:
        self.send(b"+ Ready for literal data\r\n")
        await self.flush()

    # ------------------------------------------------------------------ helpers
    async def db(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work(conn, *args)`` on a reader connection in a worker thread."""
        def run() -> T:
            with self.ctx.app.reader.connect() as conn:
                return work(conn, *args)
        return await asyncio.get_running_loop().run_in_executor(None, run)

    async def thread(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(work, *args))

    async def write(self, work: Callable[[Connection], T]) -> T:
        return await self.ctx.committer.run(work)

    def record(self, event: str, outcome: Outcome = Outcome.SUCCESS, **fields: Any
               ) -> AuditRecord:
        actor = fields.pop("actor", self.user.address if self.user else self.remote_addr)
        return AuditRecord(event=event, outcome=outcome, actor=actor,
                           remote_addr=self.remote_addr, session=self.id,
                           listener=self.ctx.listener, **fields)

    async def audit(self, *records: AuditRecord) -> None:
        batch = list(records)
        await self.write(lambda conn: append(conn, batch))

    async def commit_unaudited(self) -> None:
        records, self.unaudited = self.unaudited, []
        if records:
            await self.audit(*records)

    def capabilities(self) -> str:
        caps = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE"]
        if self.state == NOT_AUTHENTICATED:
            if self.tls:
                caps.append("AUTH=PLAIN")
            else:  # RFC 3501 §6.2.3, RFC 8314 §4.1: no credential before TLS
                caps += ["STARTTLS", "LOGINDISABLED"]
        caps += ["NAMESPACE", "UIDPLUS", "MOVE", "SPECIAL-USE", "UNSELECT", "CHILDREN",
                 "LIST-EXTENDED", "LIST-STATUS", "CONDSTORE", "ESEARCH", "BINARY",
                 f"APPENDLIMIT={self.ctx.config.max_literal_size}"]
        return " ".join(caps)

    def shutdown(self) -> None:
        """Server stopping: say BYE and close (RFC 3501 §7.1.5)."""
        if not self.writer.is_closing():
            self.writer.write(b"* BYE Server shutting down\r\n")
            self.writer.close()

    # ------------------------------------------------------------------ main loop
    def timeout(self) -> float:
        cfg = self.ctx.config
        return cfg.preauth_timeout if self.state == NOT_AUTHENTICATED else cfg.session_timeout

    async def run(self) -> None:
        self.ctx.sessions.add(self)
        try:
            self.untagged(f"OK [CAPABILITY {self.capabilities()}] mss IMAP4rev1 ready"
                          .encode())
            await self.flush()
            while self.state != LOGOUT:
                more = await self.step()
                await self.flush()  # the last replies too (a BYE before closing)
                if not more:
                    break
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:  # a bug must end this connection only, never the server
            log.exception("session failed", session=self.id, error=repr(exc))
        finally:
            self.ctx.sessions.discard(self)
            self.close_selected()
            if not self.writer.is_closing():
                self.writer.close()

    async def step(self) -> bool:
        """Read and run one command; False when the connection ends."""
        try:
            parts = await asyncio.wait_for(self.commands.read_parts(), self.timeout())
        except TimeoutError:
            # RFC 3501 §5.4: autologout after inactivity
            self.untagged(b"BYE Autologout; idle for too long")
            await self.flush()
            return False
        except LiteralTooLarge as exc:
            await self.input.skip(exc.discard)
            return self.bad(exc.tag, str(exc))
        except LineTooLong as exc:
            return self.bad(exc.tag, str(exc))
        if parts is None:
            return False
        try:
            command = parse_command(parts)
        except CommandError as exc:
            return self.bad(exc.tag, str(exc))
        await self.dispatch(command)
        return True

    def bad(self, tag: str | None, text: str) -> bool:
        self.errors += 1
        self.tagged(tag or "*", "BAD", text)
        if self.errors >= self.ctx.config.max_errors:
            self.untagged(b"BYE Too many invalid commands")
            self.state = LOGOUT
            return False
        return True

    async def dispatch(self, command: Command) -> None:
        from proxy.imap.commands import COMMANDS

        entry = COMMANDS.get(command.name)
        if entry is None:
            self.bad(command.tag, "Unknown command")
            return
        handler, states = entry
        if self.state not in states:
            self.bad(command.tag, "Command not valid in this state")
            return
        if not await self.still_enabled():
            return
        self.command_name = command.name
        try:
            done_text = await handler(self, command)
        except Responded:
            return
        except backend.BackendError as exc:  # and No
            await self.updates(command)
            self.tagged(command.tag, "NO", str(exc), exc.code)
            return
        except ImapParseError as exc:
            self.bad(command.tag, str(exc))
            return
        except (ConnectionError, ssl.SSLError):
            raise
        except Exception as exc:  # keep the connection usable; never leak details
            log.exception("command failed", session=self.id, command=command.name,
                          error=repr(exc))
            self.tagged(command.tag, "NO", "Internal error, try again later", "SERVERBUG")
            return
        if done_text is None:
            return
        await self.updates(command)
        text, code = done_text if isinstance(done_text, tuple) else (done_text, None)
        self.tagged(command.tag, "OK", text, code)

    async def still_enabled(self) -> bool:
        """A mailbox disabled by the operator (mss mailbox disable) ends its sessions at their
        next command (checked at most every ENABLED_CHECK seconds)."""
        if self.user is None or time.monotonic() - self.enabled_checked < ENABLED_CHECK:
            return True
        self.enabled_checked = time.monotonic()
        if await self.db(backend.mailbox_enabled, self.user.id):
            return True
        self.untagged(b"BYE Mailbox disabled")
        self.state = LOGOUT
        return False

    # ------------------------------------------------------------------ selected state
    def close_selected(self) -> None:
        if self.selected is not None:
            self.selected.watch.close()
            self.selected = None
            if self.state == SELECTED:
                self.state = AUTHENTICATED

    def expunge_allowed(self, command: Command) -> bool:
        # RFC 3501 §7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH (the UID
        # variants may: they do not use sequence numbers)
        return command.name not in ("FETCH", "STORE", "SEARCH", "COPY", "MOVE")

    async def updates(self, command: Command | None) -> None:
        if command is not None and command.name in ("SELECT", "EXAMINE"):
            return  # the folder was just read: nothing to report yet
        if self.selected is not None:
            await self.refresh(command is None or self.expunge_allowed(command))

    async def refresh(self, allow_expunge: bool, check_enabled: bool = False) -> None:
        """Report other sessions' changes to the selected folder (EXISTS, EXPUNGE, FETCH);
        *check_enabled*: also :meth:`still_enabled`'s check when due, in the same read
        (IDLE: one database round trip per wake-up)."""
        sel = self.selected
        if sel is None:
            return
        user = self.user
        enabled_due = check_enabled and user is not None and \
            time.monotonic() - self.enabled_checked >= ENABLED_CHECK

        def read_state(conn: Connection) -> tuple[int, int] | None | Literal[False]:
            if enabled_due and user is not None and not backend.mailbox_enabled(conn, user.id):
                return False
            if sel.delegated and user is not None and not grants.has_grant(
                    conn, sel.owner.id, user.id):
                return None  # revoked, or the shared mailbox disabled: at the next command
            return backend.folder_state(conn, sel.folder.id)
        state = await self.db(read_state)
        if enabled_due:
            self.enabled_checked = time.monotonic()
        if state is False:
            self.untagged(b"BYE Mailbox disabled")
            self.state = LOGOUT
            return
        if state is None:  # deleted by another session: RFC 3501 §7.1.5
            self.untagged(b"BYE Selected mailbox was deleted or access revoked")
            self.state = LOGOUT
            return
        uidnext, modseq = state
        if modseq != sel.modseq:
            def load(conn: Connection) -> tuple[list[int], list[backend.Row]]:
                return backend.uids(conn, sel.folder.id), backend.rows(conn, sel.folder.id,
                                                                        sel.modseq)
            present, changed = await self.db(load)
            known = {r.uid for r in sel.rows}
            sel.gone |= known - set(present)
            last = sel.rows[-1].uid if sel.rows else 0
            new = [r for r in changed if r.uid > last and r.uid not in known]
            for row in changed:
                seq = sel.seq_of(row.uid)
                if seq is None or row.uid in sel.gone:
                    continue
                current = sel.rows[seq - 1]
                if current.flags != row.flags:
                    self.announce_keywords(row.flags)
                    current = sel.update(seq, row.flags, row.modseq)
                    self.untagged(self.flags_fetch(seq, current, uid=True))
                else:
                    sel.update(seq, current.flags, row.modseq)
            sel.modseq = modseq
            sel.folder = dataclasses.replace(sel.folder, uidnext=uidnext, highestmodseq=modseq)
            if new:
                sel.rows.extend(new)
                sel.changed_order()
                self.untagged(b"%d EXISTS" % len(sel.rows))
        if allow_expunge and sel.gone:
            self.report_expunged(sel.gone)
            sel.gone = set()

    def report_expunged(self, uids: set[int]) -> None:
        sel = self.selected
        assert sel is not None
        # highest sequence number first: each EXPUNGE renumbers the ones after it
        for seq in sorted((s for u in uids if (s := sel.seq_of(u)) is not None), reverse=True):
            self.untagged(b"%d EXPUNGE" % seq)
        sel.rows = [r for r in sel.rows if r.uid not in uids]
        sel.changed_order()

    def announce_keywords(self, flags: tuple[str, ...]) -> None:
        """RFC 3501 §7.2.6: a new keyword in use gets a new untagged FLAGS first."""
        sel = self.selected
        new = {f for f in flags if not f.startswith("\\")} - sel.keywords if sel else set()
        if sel is None or not new:
            return
        sel.keywords |= new
        listed = " ".join([*backend.SYSTEM_FLAGS, *sorted(sel.keywords)])
        self.untagged(f"FLAGS ({listed})".encode())
        if not sel.readonly:
            self.untagged(f"OK [PERMANENTFLAGS ({listed} \\*)] Flags permitted".encode())

    def flags_fetch(self, seq: int, row: backend.Row, uid: bool) -> bytes:
        parts = [b"FLAGS (" + " ".join(row.flags).encode() + b")"]
        if uid:
            parts.insert(0, b"UID %d" % row.uid)
        if self.condstore:
            parts.append(b"MODSEQ (%d)" % row.modseq)
        return b"%d FETCH (" % seq + b" ".join(parts) + b")"

    async def idle(self, tag: str) -> None:
        """RFC 2177: report changes as they happen until the client sends DONE.

        The session sleeps until its folder's watch is signalled (a commit of this process,
        or the process's change watcher seeing another's) or the safety poll
        (imap.idle_poll) runs out: an idle session costs nothing while nothing changes."""
        self.send(b"+ idling\r\n")
        await self.flush()
        watch = self.selected.watch if self.selected else None
        line_task = asyncio.ensure_future(self.input.readline(self.ctx.config.max_line_length))
        deadline = time.monotonic() + self.ctx.config.session_timeout
        try:
            while not line_task.done():
                waits: set[asyncio.Future[Any]] = {line_task}
                if watch is not None:
                    waits.add(asyncio.ensure_future(watch.wait(self.ctx.config.idle_poll)))
                left = deadline - time.monotonic()
                if left <= 0:
                    self.untagged(b"BYE Autologout; idle for too long")
                    self.state = LOGOUT
                    return
                done, pending = await asyncio.wait(
                    waits, timeout=min(left, self.ctx.config.idle_poll * 2),
                    return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    if task is not line_task:
                        task.cancel()
                if self.selected is None and not await self.still_enabled():
                    return
                if self.selected is not None:
                    await self.refresh(allow_expunge=True, check_enabled=True)
                    await self.flush()
                    if self.state == LOGOUT:  # folder deleted or access revoked
                        return
            line = line_task.result()
        except LineTooLong:
            self.bad(tag, "Expected DONE")
            return
        finally:
            if not line_task.done():
                line_task.cancel()
        if line is None:
            self.state = LOGOUT
            return
        if line.strip().upper() != b"DONE":
            self.bad(tag, "Expected DONE")
            return
        await self.updates(None)
        self.tagged(tag, "OK", "IDLE terminated")


async def start_session(ctx: ServerContext, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
    session = Session(ctx, reader, writer)
    await session.run()
