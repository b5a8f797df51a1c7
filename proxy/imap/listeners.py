"""Start the IMAP listeners a configuration enables: ``imap`` (STARTTLS, RFC 3501 §6.2.1)
and ``imaps`` (implicit TLS, RFC 8314 §3.3). No ALPN is required of clients."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable

from mss.app import App
from mss.committer import GroupCommitter
from mss.limits import ListenerGuard, ProcessLimits
from mss.mailstore import Mailstore, folders
from mss.throttle import Throttle
from proxy.imap.connection import ServerContext, start_session

# listener name -> implicit TLS
IMAP_LISTENERS: dict[str, bool] = {"imap": False, "imaps": True}
STREAM_LIMIT = 2 ** 20


class _TlsFirstProtocol(asyncio.StreamReaderProtocol):
    """imaps: reading paused from the first moment, so that the client's TLS hello waits
    in the socket for ``start_tls`` (done by start_session once the connection is admitted)
    instead of landing in the plain stream buffer."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.ReadTransport):
            transport.pause_reading()
        super().connection_made(transport)


async def start_imap(app: App, committer: GroupCommitter, tls: ssl.SSLContext,
                     limits: ProcessLimits | None = None, *, mailstore: Mailstore
                     ) -> tuple[list[asyncio.Server], list[ServerContext]]:
    cfg = app.config.imap
    await asyncio.get_running_loop().run_in_executor(None, folders.ensure_indexes, app.engine)
    throttle = Throttle(cfg.login_failures, cfg.login_window, cfg.login_lockout)
    servers: list[asyncio.Server] = []
    contexts: list[ServerContext] = []
    for name, implicit in IMAP_LISTENERS.items():
        listener = app.config.listeners.get(name)
        if listener is None or not listener.enabled:
            continue
        # connection caps are checked before the TLS handshake of imaps (start_session)
        ctx = ServerContext(app, committer, mailstore, throttle, cfg, tls, name,
                            implicit, ListenerGuard.of(
                                listener, committer, app.config.limits.report_interval,
                                limits.files if limits else None),
                            limits.budget if limits else None)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         ctx: ServerContext = ctx) -> None:
            with contextlib.suppress(asyncio.CancelledError):  # server stopping
                await start_session(ctx, reader, writer)

        def factory(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                     Awaitable[None]] = handle,
                    implicit: bool = implicit) -> asyncio.StreamReaderProtocol:
            kind = _TlsFirstProtocol if implicit else asyncio.StreamReaderProtocol
            return kind(asyncio.StreamReader(limit=STREAM_LIMIT), handle)

        server = await asyncio.get_running_loop().create_server(
            factory, listener.host, listener.port,
            reuse_address=True, reuse_port=app.config.workers > 1)
        servers.append(server)
        contexts.append(ctx)
    return servers, contexts
