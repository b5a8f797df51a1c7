"""One IMAP connection: the RFC 3501 §3 state machine, I/O, timeouts and untagged updates.

States: not authenticated -> authenticated -> selected -> logout. Commands are read one
at a time from a buffered stream (so commands pipelined by the client, also straight after
IDLE's DONE, are simply the next ones read) and answered in order. Changes made by other
sessions or by SMTP delivery are reported when RFC 3501 §5.2 and §7.4.1 allow: after each
command (EXPUNGE not during FETCH, STORE or SEARCH by sequence number) and during IDLE.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import functools
import io
import secrets
import ssl
import time
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import structlog
from sqlalchemy import Connection

from audit.events import Event, Outcome
from audit.journal import AuditRecord, append
from mss.db import unavailable
from mss.limits import Admission
from mss.mailstore import errors, folders, grants, mailboxes, messages, sessions
from mss.mailstore.mailboxes import Mailbox
from proxy.imap.commands import COMMANDS
from proxy.imap.parser import (
    Command,
    CommandError,
    CommandReader,
    LineBuffer,
    LineTooLong,
    LiteralDeferred,
    LiteralTooLarge,
    parse_command,
)
from proxy.imap.state import (
    AUTHENTICATED,
    LOGOUT,
    NOT_AUTHENTICATED,
    SELECTED,
    Responded,
    Selected,
    ServerContext,
)
from proxy.imap.tls_buffers import lean_tls
from proxy.imap.tokens import ImapParseError

log = structlog.get_logger("mss.imap")
T = TypeVar("T")
P = ParamSpec("P")

PREAUTH_MAX_LITERAL = 64 * 1024  # literals before login: credentials only
CLOSE_GRACE = 1.0  # seconds for a client to see a BYE and close before the abort
BYE_ENDED = b"BYE Session ended by the administrator"  # mss sessions end
LARGE_LITERAL = 1 << 20  # bytes from which a literal is read straight into its own object


class LiteralBuffer(LineBuffer):
    """A large literal (APPEND) is read into a buffer of its final size, handed over as
    the bytes object itself: one copy in memory, not a growing buffer plus a copy of it."""

    async def readexactly(self, n: int) -> bytes | None:
        if n <= LARGE_LITERAL:
            return await super().readexactly(n)
        out = io.BytesIO()
        out.seek(n - 1)
        out.write(b"\0")  # sized once
        out.seek(0)
        got = min(n, len(self.buffer))
        out.write(memoryview(self.buffer)[:got])
        del self.buffer[:got]
        while got < n:
            data = await self._read(min(n - got, LARGE_LITERAL))
            if not data:
                return None
            if len(data) > n - got:  # a reader that returns more than asked: keep the rest
                self.buffer += data[n - got:]
                data = data[:n - got]
            out.write(data)
            got += len(data)
        return out.getvalue()  # the BytesIO's own bytes when exactly full (no copy)


class Session:
    def __init__(self, ctx: ServerContext, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, admission: Admission | None = None) -> None:
        self.ctx = ctx
        self.admission = admission
        self.started = time.monotonic()  # the pre-auth deadline counts from here
        self.held = 0  # bytes of literals taken from ctx.budget by the current command
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
        self.input = LiteralBuffer(reader.read)
        self.commands = CommandReader(self.input, self._continue,
                                      max_line=ctx.config.max_line_length,
                                      max_literal=PREAUTH_MAX_LITERAL,
                                      max_command=4 * PREAUTH_MAX_LITERAL,
                                      reserve=self._reserve)
        self.errors = 0
        self.command_name = ""
        self.enabled_checked = time.monotonic()
        self.logged_in_at = 0.0  # time.time() of the login: sessions ended since end this one
        self.ending = False  # an operator ended the session (mss sessions end)
        self.reading = False  # waiting for the next command (between commands)
        self.kick = asyncio.Event()  # set when the session must end (IDLE: and waker)
        self.waker: Callable[[], None] | None = None  # wakes IDLE (while in it)
        self.must_end: bytes | None = None  # the BYE that IDLE says when kicked (end_idle)
        self.idling = False  # in IDLE (the listeners check these sessions together)
        self.operator: str | None = None  # an operator acting as user (mss operator; issue 16)

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
    async def db(self, work: Callable[Concatenate[Connection, P], T], *args: P.args,
                 **kwargs: P.kwargs) -> T:
        """Run ``work(conn, *args, **kwargs)`` on a reader connection in a worker thread
        (typed: mypy checks the arguments against *work*'s signature)."""
        def run() -> T:
            with self.ctx.app.reader.connect() as conn:
                return work(conn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(None, run)

    async def thread(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(work, *args))

    async def write(self, work: Callable[[Connection], T]) -> T:
        return await self.ctx.committer.run(work)

    def record(self, event: Event, outcome: Outcome = Outcome.SUCCESS, **fields: Any
               ) -> AuditRecord:
        actor = fields.pop("actor", (f"operator:{self.operator}" if self.operator else
                                     self.user.address if self.user else self.remote_addr))
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
            if self.tls:  # the listener's mechanisms (listeners.<name>.auth)
                caps += [f"AUTH={m}" for m in self.ctx.mechanisms]
                if "PLAIN" not in self.ctx.mechanisms:  # passwords off on this front
                    caps.append("LOGINDISABLED")
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
        """Seconds left to read the next command: before login, what is left of the
        pre-auth deadline (the whole phase, literals skipped included); after, the idle
        timeout (RFC 3501 §5.4)."""
        cfg = self.ctx.config
        if self.state == NOT_AUTHENTICATED:
            return max(0.0, self.started + cfg.preauth_timeout - time.monotonic())
        return cfg.session_timeout

    def _reserve(self, size: int) -> bool:
        """Take a literal's bytes from the process's budget (given back after the
        command ran)."""
        budget = self.ctx.budget
        if budget is not None and not budget.take(size):
            log.warning("memory budget exceeded", session=self.id, size=size,
                        budget=budget.limit)
            return False
        self.held += size
        return True

    def _release(self) -> None:
        if self.ctx.budget is not None and self.held:
            self.ctx.budget.give(self.held)
        self.held = 0

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
            if unavailable(exc):  # between commands (mailbox checks, updates): RFC 3501
                # §7.1.5 BYE, the client logs in again once the database is back
                log.warning("session ended: database unavailable", session=self.id)
                with contextlib.suppress(OSError, ssl.SSLError):
                    self.untagged(b"BYE Database unavailable, try again later")
                    await self.flush()
            else:
                log.exception("session failed", session=self.id, error=repr(exc))
        finally:
            self._release()
            if self.admission is not None:
                self.admission.release()
            self.ctx.sessions.discard(self)
            if self.ctx.registry is not None:
                self.ctx.registry.gone(self.id)  # its row (mss sessions list) deleted
            self.close_selected()
            if not self.writer.is_closing():
                self.writer.close()

    async def step(self) -> bool:
        """Read and run one command; False when the connection ends."""
        try:
            return await self._step()
        finally:
            self._release()  # the command's literals are no longer held

    async def _step(self) -> bool:
        preauth = self.state == NOT_AUTHENTICATED
        try:
            # one deadline for reading the command and skipping a refused literal; before
            # login it also bounds running the command (STARTTLS handshake, LOGIN)
            async with asyncio.timeout(self.timeout()):
                if self.ending:  # ended while the last command ran
                    self.untagged(BYE_ENDED)
                    self.state = LOGOUT
                    return False
                self.reading = True
                try:
                    parts = await self._read_command()
                finally:
                    self.reading = False
                if parts is None or isinstance(parts, bool):
                    return bool(parts)
                if preauth:
                    await self._run(parts)
                    return True
        except TimeoutError:
            # RFC 3501 §5.4: autologout after inactivity
            self.untagged(b"BYE Autologout; idle for too long")
            await self.flush()
            return False
        await self._run(parts)
        return True

    async def _read_command(self) -> list[bytes] | bool | None:
        """The parts of the next command; True after answering a framing error, None at
        end of stream, False when the session must end."""
        try:
            return await self.commands.read_parts()
        except LiteralDeferred as exc:  # RFC 3501 §7.5: NO instead of the continuation
            await self.input.skip(exc.discard)
            self.tagged(exc.tag or "*", "NO", str(exc))
            return True
        except LiteralTooLarge as exc:
            await self.input.skip(exc.discard)
            return self.bad(exc.tag, str(exc))
        except LineTooLong as exc:
            return self.bad(exc.tag, str(exc))

    async def _run(self, parts: list[bytes]) -> None:
        try:
            command = parse_command(parts)
        except CommandError as exc:
            self.bad(exc.tag, str(exc))
            return
        with self.ctx.metrics.imap_timer(command.name if command.name in COMMANDS else "OTHER"):
            await self.dispatch(command)
        if self.admission is not None and self.state != NOT_AUTHENTICATED:
            self.admission.authenticated()  # logged in: out of the pre-auth caps

    def bad(self, tag: str | None, text: str) -> bool:
        self.errors += 1
        self.tagged(tag or "*", "BAD", text)
        if self.errors >= self.ctx.config.max_errors:
            self.untagged(b"BYE Too many invalid commands")
            self.state = LOGOUT
            return False
        return True

    async def dispatch(self, command: Command) -> None:
        spec = COMMANDS.get(command.name)
        if spec is None:
            self.bad(command.tag, "Unknown command")
            return
        if self.state not in spec.states:
            self.bad(command.tag, "Command not valid in this state")
            return
        if not await self.still_enabled() or not await self.delegation_intact():
            return
        self.command_name = command.name
        try:
            # parse (pure, BAD on error), then execute and render
            done_text = await spec.run(self, command, spec.parse(command))
        except Responded:
            return
        except errors.BackendError as exc:  # and No
            await self.updates(command)
            self.tagged(command.tag, "NO", str(exc), exc.code)
            return
        except ImapParseError as exc:
            self.bad(command.tag, str(exc))
            return
        except (ConnectionError, ssl.SSLError):
            raise
        except Exception as exc:  # keep the connection usable; never leak details
            if unavailable(exc):  # RFC 5530 §3: a subsystem is down, try again later
                log.warning("command deferred: database unavailable", session=self.id,
                            command=command.name)
                self.tagged(command.tag, "NO", "Database unavailable, try again later",
                            "UNAVAILABLE")
                return
            log.exception("command failed", session=self.id, command=command.name,
                          error=repr(exc))
            self.tagged(command.tag, "NO", "Internal error, try again later", "SERVERBUG")
            return
        if done_text is None:
            return
        await self.updates(command)
        text, code = done_text if isinstance(done_text, tuple) else (done_text, None)
        self.tagged(command.tag, "OK", text, code)

    def operator_ended(self) -> None:
        """On the session's loop, when ``mss sessions end`` named it (the registry saw
        the mark): an IDLE is woken and says BYE; a session waiting for its next command
        gets ``* BYE`` now (RFC 3501 §7.1.5: the server may close at any time) and is
        closed; one running a command, after it."""
        if self.ending or self.state == LOGOUT:
            return
        self.ending = True
        self.kick.set()
        if self.waker is not None:
            self.waker()
        if self.reading and not self.out and not self.writer.is_closing():
            self.writer.write(b"* " + BYE_ENDED + b"\r\n")
            self.state = LOGOUT
            self.writer.close()  # the read waiting ends with the connection
            transport = self.writer.transport  # a TLS close may wait for the client
            asyncio.get_running_loop().call_later(CLOSE_GRACE, transport.abort)

    async def still_enabled(self) -> bool:
        """A mailbox disabled by the operator (mss mailbox disable) ends its sessions at their
        next command (checked at most every imap.enabled_check seconds), as does a session
        ended by mss sessions end (its registry row marked)."""
        if self.ending:
            self.untagged(BYE_ENDED)
            self.state = LOGOUT
            return False
        if self.user is None or \
                time.monotonic() - self.enabled_checked < self.ctx.config.enabled_check:
            return True
        self.enabled_checked = time.monotonic()
        why = await self.db(sessions.session_live, self.id, self.user.id, self.logged_in_at)
        if why is None:
            return True
        self.untagged(BYE_ENDED if why == "ended" else b"BYE Mailbox disabled")
        self.state = LOGOUT
        return False

    async def delegation_intact(self) -> bool:
        """A delegated selection is served only while the grant holds, the shared mailbox
        and the user's own are enabled: checked before every command on it (a revocation
        never lets one more command through), one indexed read."""
        sel, user = self.selected, self.user
        if sel is None or not sel.delegated or user is None:
            return True

        def check(conn: Connection) -> bool:
            return grants.has_grant(conn, sel.owner.id, user.id) and \
                mailboxes.mailbox_enabled(conn, user.id)
        if await self.db(check):
            return True
        self.revoked()
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

    async def refresh(self, allow_expunge: bool) -> None:
        """Report other sessions' changes to the selected folder (EXISTS, EXPUNGE, FETCH).
        The folder is read through the process's :class:`FolderReads`: the sessions woken
        by one change share one read (and one claim of \\Recent)."""
        sel = self.selected
        if sel is None:
            return
        user = self.user
        # a delegated selection: the grant first (or the shared mailbox disabled), never
        # one more update through a revoked one
        if sel.delegated and user is not None and \
                not await self.db(grants.has_grant, sel.owner.id, user.id):
            self.revoked()  # RFC 3501 §7.1.5
            return
        delta = await self.ctx.reads.delta(self.ctx.app.reader, sel.folder, sel.modseq)
        if delta.state is None:
            self.selection_gone()
            return
        uidnext, modseq, recent_uid = delta.state
        if modseq != sel.modseq:
            present, changed = delta.present, delta.changed
            last = sel.rows[-1].uid if sel.rows else 0
            # UIDs only grow (RFC 3501 §2.3.1.1): the present ones up to *last* are the
            # known ones still there; counted first, compared as sets only when some went
            if bisect.bisect_right(present, last) != len(sel.rows):
                sel.gone |= {r.uid for r in sel.rows} - set(present)
            new = [r for r in changed if r.uid > last]
            for row in changed:
                if row.uid > last:
                    break  # the new ones (UID order): reported below
                seq = _seq_of(sel, row.uid)
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
                await self.claim_recent(sel, new, recent_uid)
                # RFC 3501 §7.2.6: keywords of new messages announced before any FETCH
                self.announce_keywords(tuple(f for r in new for f in r.flags))
                self.untagged(b"%d EXISTS" % len(sel.rows))
                self.untagged(b"%d RECENT" % len(sel.recent))
        sel.watch.saw(uidnext, modseq)  # after the claim: a poll's wake-up waits for it
        if allow_expunge and sel.gone:
            self.report_expunged(sel.gone)
            sel.gone = set()

    async def claim_recent(self, sel: Selected, new: list[messages.Row], recent_uid: int
                           ) -> None:
        """New messages are \\Recent here if no other session saw them first (RFC 3501
        §2.3.2): claimed in the database (one writer round trip) by a read-write session;
        a read-only one (EXAMINE) claims nothing and sees those not yet claimed."""
        upto = new[-1].uid
        if not sel.readonly:
            folder_id = sel.folder.id
            claimed = await self.ctx.reads.claim(folder_id, upto, lambda: self.write(
                lambda conn: folders.claim_recent(conn, folder_id, upto)))
            if claimed is None:  # another session of this process claimed them
                return
            recent_uid = claimed
        sel.recent |= {r.uid for r in new if r.uid > recent_uid}

    def revoked(self) -> None:
        """The delegated selection's grant is gone: the session ends (RFC 3501 §7.1.5)."""
        self.untagged(b"BYE Selected mailbox was deleted or access revoked")
        self.state = LOGOUT

    def selection_gone(self) -> None:
        """The selected folder was deleted (by this session or another): back to the
        authenticated state, the session stays (RFC 3501 §6.3.4 leaves the answer to the
        server; the CLOSED response code of RFC 7162 §3.2.11 tells the client)."""
        self.close_selected()
        self.untagged(b"OK [CLOSED] Selected mailbox was deleted")

    def report_expunged(self, uids: set[int]) -> None:
        sel = self.selected
        assert sel is not None
        # highest sequence number first: each EXPUNGE renumbers the ones after it
        for seq in sorted((s for u in uids if (s := sel.seq_of(u)) is not None), reverse=True):
            self.untagged(b"%d EXPUNGE" % seq)
        sel.rows = [r for r in sel.rows if r.uid not in uids]
        sel.recent -= uids
        sel.changed_order()

    def announce_keywords(self, flags: tuple[str, ...]) -> None:
        """RFC 3501 §7.2.6: a new keyword in use gets a new untagged FLAGS first."""
        sel = self.selected
        new = {f for f in flags if not f.startswith("\\")} - sel.keywords if sel else set()
        if sel is None or not new:
            return
        sel.keywords |= new
        listed = " ".join([*messages.SYSTEM_FLAGS, *sorted(sel.keywords)])
        self.untagged(f"FLAGS ({listed})".encode())
        if not sel.readonly:
            self.untagged(f"OK [PERMANENTFLAGS ({listed} \\*)] Flags permitted".encode())

    def enable_condstore(self) -> None:
        """RFC 7162 §3.1: a CONDSTORE enabling command (FETCH MODSEQ or CHANGEDSINCE, SEARCH
        MODSEQ, STORE UNCHANGEDSINCE, STATUS HIGHESTMODSEQ, ENABLE) turns it on for the rest
        of the connection; the first one while a mailbox is selected reports its
        HIGHESTMODSEQ (SELECT ... (CONDSTORE) does that in its own answer)."""
        if not self.condstore and self.selected is not None:
            self.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % self.selected.modseq)
        self.condstore = True

    def flags_fetch(self, seq: int, row: messages.Row, uid: bool) -> bytes:
        flags = self.selected.flags_of(row) if self.selected else row.flags
        parts = [b"FLAGS (" + " ".join(flags).encode() + b")"]
        if uid or self.condstore:  # RFC 7162 §3.1: UID and MODSEQ once CONDSTORE is on
            parts.insert(0, b"UID %d" % row.uid)
        if self.condstore:
            parts.append(b"MODSEQ (%d)" % row.modseq)
        return b"%d FETCH (" % seq + b" ".join(parts) + b")"

    async def idle(self, tag: str) -> None:
        """RFC 2177: report changes as they happen until the client sends DONE.

        The session sleeps until its folder's watch is signalled (a commit of this process,
        or the process's change watcher seeing another's; a lost wake-up is found by the
        listeners' safety poll, imap.idle_poll), the client writes, or the session must end
        (mss sessions end; the listeners' check of the process's IDLE sessions every
        imap.enabled_check: disabled, suspended, re-passworded mailboxes, issue 16). No
        timer of its own but the autologout: an idle session costs nothing while nothing
        changes."""
        self.send(b"+ idling\r\n")
        await self.flush()
        loop = asyncio.get_running_loop()
        watch = self.selected.watch if self.selected else None
        line_task = asyncio.ensure_future(self.input.readline(self.ctx.config.max_line_length))
        sleep: list[asyncio.Future[None]] = []  # the one the session waits on, if any

        def wake(*_: object) -> None:  # the line, the watch, the kick, the autologout
            if sleep and not sleep[0].done():
                sleep[0].set_result(None)
        # one future per wake-up, no task nor timer per wake-up: 10 000 sessions woken by
        # one delivery (bench/idle_sessions.py)
        line_task.add_done_callback(wake)
        self.waker = wake
        if watch is not None:
            watch.on_signal(wake)
        deadline = loop.time() + self.ctx.config.session_timeout
        timer = loop.call_at(deadline, wake)
        self.idling = True
        try:
            while not line_task.done():
                if loop.time() >= deadline - 0.01:  # the timer may run a tick early
                    self.untagged(b"BYE Autologout; idle for too long")
                    self.state = LOGOUT
                    return
                if not self.kick.is_set() and (watch is None or not watch.signalled()):
                    sleep[:] = [loop.create_future()]
                    await sleep[0]
                    sleep.clear()
                if self.ending:  # mss sessions end
                    self.untagged(BYE_ENDED)
                    self.state = LOGOUT
                    return
                if self.must_end is not None:  # the listeners' check
                    self.untagged(self.must_end)
                    self.state = LOGOUT
                    return
                if watch is not None and watch.take():
                    await self.refresh(allow_expunge=True)
                    await self.flush()
                    if self.state == LOGOUT:  # folder deleted or access revoked
                        return
                    if self.selected is None:  # deleted: IDLE goes on unselected
                        watch.on_signal(None)
                        watch = None
            line = line_task.result()
        except LineTooLong:
            self.bad(tag, "Expected DONE")
            return
        finally:
            self.idling = False
            self.waker = None
            timer.cancel()
            if watch is not None:
                watch.on_signal(None)
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

    def end_idle(self, why: str) -> None:
        """The listeners' check found this IDLE session's mailbox disabled ("disabled") or
        its registry row ended ("ended"): woken to say BYE (RFC 3501 §7.1.5)."""
        if why == "ended":
            self.operator_ended()
            return
        self.must_end = b"BYE Mailbox disabled"
        self.kick.set()
        if self.waker is not None:
            self.waker()


def _UID(row: Any) -> int:  # noqa: N802  the bisect key of a folder's rows
    return int(row.uid)


def _seq_of(sel: Selected, uid: int) -> int | None:
    """``sel.seq_of`` without building its index of every UID (rows are in UID order): a
    refresh of many sessions woken by one change costs no memory per session."""
    i = bisect.bisect_left(sel.rows, uid, key=_UID)
    return i + 1 if i < len(sel.rows) and sel.rows[i].uid == uid else None


async def start_session(ctx: ServerContext, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    address = str(peer[0]) if peer else "unknown"
    admission = ctx.guard.admit(address) if ctx.guard is not None else None
    if ctx.guard is not None and admission is None:
        await refuse(ctx, writer)
        return
    connected = time.monotonic()
    ctx.metrics.session("imap", ctx.listener)
    try:
        if ctx.implicit_tls:  # RFC 8314 §3.3, counted and timed before the handshake
            await asyncio.wait_for(writer.start_tls(ctx.tls), ctx.config.preauth_timeout)
            lean_tls(writer)
        session = Session(ctx, reader, writer, admission)
        session.started = connected
    except (ConnectionError, ssl.SSLError, TimeoutError, OSError):
        if admission is not None:
            admission.release()
        writer.close()
        return
    await session.run()


async def refuse(ctx: ServerContext, writer: asyncio.StreamWriter) -> None:
    """Over a cap: ``* BYE`` and close (RFC 3501 §7.1.5); on an implicit TLS listener
    closed before any handshake (a refusal costs no TLS work)."""
    if not ctx.implicit_tls:
        writer.write(b"* BYE Too many connections, try again later\r\n")
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await asyncio.wait_for(writer.wait_closed(), 5.0)
