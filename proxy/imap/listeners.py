"""The IMAP listeners a configuration enables, one component of ``mss serve``: ``imap``
(STARTTLS, RFC 3501 §6.2.1) and ``imaps`` (implicit TLS, RFC 8314 §3.3). No ALPN is
required of clients."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from types import MappingProxyType

import structlog

from mss.authenticator import offered
from mss.lifecycle import STOP_FLOOR, BackgroundTask, remaining
from mss.limits import ListenerGuard
from mss.mailstore import folders, sessions
from mss.runtime import Runtime
from proxy.imap.cache import EnvelopeCache
from proxy.imap.connection import Session, start_session
from proxy.imap.refresh import FolderReads
from proxy.imap.state import ServerContext

log = structlog.get_logger("mss.imap")

# listener name -> implicit TLS
IMAP_LISTENERS: MappingProxyType[str, bool] = MappingProxyType({
    "imap": False, "imaps": True,
    "imap-cert": False,  # EX_LPS_0300 certificate front (AUTHENTICATE EXTERNAL)
})
STREAM_LIMIT = 2 ** 20
CLOSE_GRACE = 1.0  # seconds for a client to see the BYE and close before the abort


GC_THRESHOLDS = (50_000, 20, 20)  # gc.set_threshold: allocations between young collections


def lean_gc() -> None:
    """Thousands of sessions hold millions of long-lived objects; CPython's default
    thresholds (700, 10, 10) make a burst of allocations (one delivery waking 10 000 IDLE
    sessions) run full collections over all of them, a third of the burst's CPU
    (measured with py-spy --native, bench/idle_sessions.py). The objects of the start-up
    (modules, configuration, SQL metadata), alive for the process's life, are moved out
    of the collector's scans (gc.freeze) and young collections run 70 times less often;
    cycles are still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class _TlsFirstProtocol(asyncio.StreamReaderProtocol):
    """imaps: reading paused from the first moment, so that the client's TLS hello waits
    in the socket for ``start_tls`` (done by start_session once the connection is admitted)
    instead of landing in the plain stream buffer."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.ReadTransport):
            transport.pause_reading()
        super().connection_made(transport)


class ImapListeners:
    """Every IMAP listener of the process. ``start`` binds them; ``stop`` closes them (no
    new connection) and ends every session with ``* BYE`` (RFC 3501 §7.1.5)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.servers: list[asyncio.Server] = []
        self.contexts: list[ServerContext] = []
        self._idle = BackgroundTask("imap-idle-checks", self._idle_checks)
        self.idle_checks = self.safety_polls = 0  # rounds run (tests and benchmarks)

    async def start(self) -> None:
        app, runtime = self.runtime.app, self.runtime
        cfg = app.config.imap
        await asyncio.get_running_loop().run_in_executor(None, folders.ensure_indexes,
                                                         app.engine)
        authenticator = runtime.authenticator
        throttle = authenticator.throttle("imap")
        envelopes = EnvelopeCache()  # one for both listeners: the same messages
        reads = FolderReads()  # and the same folders
        for name, implicit in IMAP_LISTENERS.items():
            listener = app.config.listeners.get(name)
            if listener is None or not listener.enabled:
                continue
            # connection caps are checked before the TLS handshake of imaps (start_session)
            # a listener offering EXTERNAL asks for a client certificate (verified after)
            ctx = ServerContext(app, runtime.committer, runtime.mailstore, throttle,
                                cfg, runtime.tls.for_listener(listener), name, implicit,
                                authenticator,
                                offered(listener, authenticator.has_tokens, "imap"),
                                frozenset(listener.auth),
                                ListenerGuard.of(listener, runtime.committer,
                                                 app.config.limits.report_interval,
                                                 runtime.limits.files),
                                runtime.limits.budget, envelopes=envelopes,
                                sending=runtime.sending, metrics=runtime.metrics,
                                registry=runtime.registry, reads=reads)
            server = await asyncio.get_running_loop().create_server(
                _factory(ctx, implicit), listener.host, listener.port,
                reuse_address=True, reuse_port=app.config.workers > 1)
            self.servers.append(server)
            self.contexts.append(ctx)
        if self.servers:
            lean_gc()
        await self._idle.start()

    async def stop(self, deadline: float) -> None:
        await self._idle.stop(deadline)
        for server in self.servers:
            server.close()  # no new connections
        for ctx in self.contexts:  # RFC 3501 §7.1.5
            for session in list(ctx.sessions):
                session.shutdown()
        # each session ends on its closed connection; a TLS close waits for the peer's
        # close_notify, which a client may never send: aborted after CLOSE_GRACE seconds
        await self._sessions_ended(min(CLOSE_GRACE, remaining(deadline, STOP_FLOOR)))
        for ctx in self.contexts:
            for session in list(ctx.sessions):
                session.writer.transport.abort()
        await self._sessions_ended(STOP_FLOOR)
        for server in self.servers:
            await server.wait_closed()
        self.servers.clear()
        self.contexts.clear()

    async def _idle_checks(self) -> None:
        """What an IDLE session does not do for itself (RFC 2177: it sleeps until its
        folder's watch is signalled), done for all the IDLE sessions of the process at
        once: every imap.enabled_check, one read of their mailboxes and registry rows
        (disabled, suspended, re-passworded, ended: ``* BYE``, issue 16); every
        imap.idle_poll, one read of the folders they selected, waking those whose folder
        moved (a wake-up lost, e.g. the change watcher's connection down: the safety poll).
        Their cost is a few queries per interval whatever the number of sessions."""
        cfg = self.runtime.app.config.imap
        loop = asyncio.get_running_loop()
        check_at, poll_at = loop.time() + cfg.enabled_check, loop.time() + cfg.idle_poll
        while True:
            await asyncio.sleep(max(0.0, min(check_at, poll_at) - loop.time()))
            try:
                if loop.time() >= check_at:
                    check_at = loop.time() + cfg.enabled_check
                    await self._check_idle()
                if loop.time() >= poll_at:
                    poll_at = loop.time() + cfg.idle_poll
                    await loop.run_in_executor(None, self._safety_poll)
            except Exception as exc:  # database away: the next round
                log.warning("IDLE sessions check failed", error=repr(exc))

    async def _check_idle(self) -> None:
        idle = [s for ctx in self.contexts for s in ctx.sessions
                if isinstance(s, Session) and s.idling and s.user is not None]
        self.idle_checks += 1
        if not idle:
            return
        checks = [(s.id, s.user.id, s.logged_in_at) for s in idle if s.user is not None]

        def read() -> dict[str, str]:
            with self.runtime.app.reader.connect() as conn:
                return sessions.sessions_live(conn, checks)
        why = await asyncio.get_running_loop().run_in_executor(None, read)
        now = time.monotonic()
        for session in idle:
            session.enabled_checked = now  # the command after DONE need not check again
            if session.id in why:
                session.end_idle(why[session.id])

    def _safety_poll(self) -> None:
        self.safety_polls += 1
        with self.runtime.app.reader.connect() as conn:
            self.runtime.mailstore.notifier.poll(conn)

    async def _sessions_ended(self, timeout: float) -> None:
        until = time.monotonic() + timeout
        while any(ctx.sessions for ctx in self.contexts) and time.monotonic() < until:
            await asyncio.sleep(0.02)


def _factory(ctx: ServerContext, implicit: bool
             ) -> Callable[[], asyncio.StreamReaderProtocol]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # server stopping
            await start_session(ctx, reader, writer)

    def factory() -> asyncio.StreamReaderProtocol:
        kind = _TlsFirstProtocol if implicit else asyncio.StreamReaderProtocol
        return kind(asyncio.StreamReader(limit=STREAM_LIMIT), handle)

    return factory
