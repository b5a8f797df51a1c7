"""The IMAP listeners a configuration enables, one component of ``mss serve``: ``imap``
(STARTTLS, RFC 3501 §6.2.1) and ``imaps`` (implicit TLS, RFC 8314 §3.3). No ALPN is
required of clients."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from types import MappingProxyType

from mss.authenticator import offered
from mss.lifecycle import STOP_FLOOR, remaining
from mss.limits import ListenerGuard
from mss.mailstore import folders
from mss.runtime import Runtime
from proxy.imap.cache import EnvelopeCache
from proxy.imap.connection import start_session
from proxy.imap.state import ServerContext

# listener name -> implicit TLS
IMAP_LISTENERS: MappingProxyType[str, bool] = MappingProxyType({
    "imap": False, "imaps": True,
    "imap-cert": False,  # EX_LPS_0300 certificate front (AUTHENTICATE EXTERNAL)
})
STREAM_LIMIT = 2 ** 20
CLOSE_GRACE = 1.0  # seconds for a client to see the BYE and close before the abort


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

    async def start(self) -> None:
        app, runtime = self.runtime.app, self.runtime
        cfg = app.config.imap
        await asyncio.get_running_loop().run_in_executor(None, folders.ensure_indexes,
                                                         app.engine)
        authenticator = runtime.authenticator
        throttle = authenticator.throttle("imap")
        envelopes = EnvelopeCache()  # one for both listeners: the same messages
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
                                registry=runtime.registry)
            server = await asyncio.get_running_loop().create_server(
                _factory(ctx, implicit), listener.host, listener.port,
                reuse_address=True, reuse_port=app.config.workers > 1)
            self.servers.append(server)
            self.contexts.append(ctx)

    async def stop(self, deadline: float) -> None:
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
