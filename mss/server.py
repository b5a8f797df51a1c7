"""``mss serve``: wire the store, the whitelist and the listeners; stop cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import time

import structlog

from audit.journal import AuditRecord, append
from mss.app import App
from mss.committer import GroupCommitter
from proxy.smtp.listeners import start_smtp
from trustspace.cache import LiveWhitelist
from trustspace.pki import server_context

log = structlog.get_logger("mss.server")
SHUTDOWN_GRACE = 30.0  # seconds given to DATA transactions in flight at SIGTERM


async def serve(app: App) -> None:
    cfg = app.config
    committer = GroupCommitter(app.engine)
    committer.start()
    try:
        whitelist = LiveWhitelist(app.reader)
        tls = {
            # the MX asks for the peer operator's certificate (checked in trustspace)
            "mx": server_context(cfg.tls.cert_file, cfg.tls.key_file, cfg.tls.ca_file,
                                 request_client_cert=True),
            "submission": server_context(cfg.tls.cert_file, cfg.tls.key_file),
        }
        servers, handlers = await start_smtp(app, committer, whitelist, tls)
        listening = {name: f"{lc.host}:{lc.port}" for name, lc in cfg.listeners.items()
                     if lc.enabled}
        await committer.run(lambda conn: append(conn, [AuditRecord(
            "server.start", actor="mss", detail={"listeners": listening})]))
        log.info("ready", listeners=listening, whitelist_version=whitelist.current.version_id)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watcher = asyncio.create_task(whitelist.watch(cfg.whitelist.reload_interval))
        await stop.wait()

        log.info("stopping")
        for server in servers:
            server.close()  # no new connections
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while time.monotonic() < deadline and any(
                proto.busy for h in handlers for proto in h.sessions):
            await asyncio.sleep(0.02)
        for handler in handlers:
            for proto in list(handler.sessions):
                transport = proto.transport
                if isinstance(transport, asyncio.WriteTransport) \
                        and not transport.is_closing():
                    transport.write(b"421 4.3.2 Service shutting down\r\n")
                    transport.close()
        watcher.cancel()
        await committer.run(lambda conn: append(conn, [AuditRecord("server.stop", actor="mss")]))
    finally:
        committer.stop()
    log.info("stopped")
