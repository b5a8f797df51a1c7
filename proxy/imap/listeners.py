"""Start the IMAP listeners a configuration enables: ``imap`` (STARTTLS, RFC 3501 §6.2.1)
and ``imaps`` (implicit TLS, RFC 8314 §3.3). No ALPN is required of clients."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from mss.app import App
from mss.committer import GroupCommitter
from mss.throttle import Throttle
from proxy.imap import backend, notifier
from proxy.imap.connection import ServerContext, start_session

# listener name -> implicit TLS
IMAP_LISTENERS: dict[str, bool] = {"imap": False, "imaps": True}


async def start_imap(app: App, committer: GroupCommitter, tls: ssl.SSLContext
                     ) -> tuple[list[asyncio.Server], list[ServerContext]]:
    cfg = app.config.imap
    await asyncio.get_running_loop().run_in_executor(None, backend.ensure_indexes, app.engine)
    throttle = Throttle(cfg.login_failures, cfg.login_window, cfg.login_lockout)
    servers: list[asyncio.Server] = []
    contexts: list[ServerContext] = []
    for name, implicit in IMAP_LISTENERS.items():
        listener = app.config.listeners.get(name)
        if listener is None or not listener.enabled:
            continue
        ctx = ServerContext(app, committer, notifier.default(), throttle, cfg, tls, name,
                            implicit)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         ctx: ServerContext = ctx) -> None:
            with contextlib.suppress(asyncio.CancelledError):  # server stopping
                await start_session(ctx, reader, writer)

        server = await asyncio.start_server(
            handle, listener.host, listener.port, ssl=tls if implicit else None,
            reuse_address=True, reuse_port=app.config.workers > 1, limit=2 ** 20)
        servers.append(server)
        contexts.append(ctx)
    return servers, contexts
