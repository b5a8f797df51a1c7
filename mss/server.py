"""``mss serve``: wire the store, the whitelist and the listeners; stop cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import structlog

from audit.checkpoints import signing_key, write_checkpoint
from audit.dicom import audit_source
from audit.journal import AuditRecord, append
from audit.shipper import Outbox, Shipper
from directory.sync import DirectorySync
from mss.app import App, open_app
from mss.changes import ChangeWatcher
from mss.committer import GroupCommitter
from mss.limits import (
    MemoryBudget,
    OpenFiles,
    ProcessLimits,
    install_loop_error_handler,
    raise_open_files_limit,
)
from proxy.imap import notifier as imap_notifier
from proxy.imap.listeners import start_imap
from proxy.outbound.worker import DeliveryWorker
from proxy.smtp.listeners import start_smtp
from trustspace.cache import LiveWhitelist
from trustspace.pki import server_context
from trustspace.tlshook import accept_any_client_certificate
from trustspace.verifier import PeerVerifier

log = structlog.get_logger("mss.server")
SHUTDOWN_GRACE = 30.0  # seconds given to DATA transactions in flight at SIGTERM


async def checkpoint_loop(app: App) -> None:
    """Sign a checkpoint of the audit chain every audit.checkpoint_interval seconds."""
    key = signing_key(app.config.audit.signing_key_file)
    loop = asyncio.get_running_loop()

    def once() -> None:
        with app.engine.begin() as conn:
            write_checkpoint(conn, key)

    while True:
        await asyncio.sleep(app.config.audit.checkpoint_interval)
        try:
            await loop.run_in_executor(None, once)
        except Exception as exc:  # try again next time; verification still works
            log.error("audit checkpoint failed", error=repr(exc))


async def directory_loop(app: App) -> None:
    """Synchronise the directory every directory.interval seconds (full when due)."""
    assert app.config.directory is not None
    sync = DirectorySync(app.engine, app.config.directory, actor="mss")
    loop = asyncio.get_running_loop()

    def once() -> None:
        report = sync.full() if sync.needs_full() else sync.incremental()
        log.info("directory synchronised", kind=report.kind, entries=report.entries,
                 added=report.added, changed=report.changed, removed=report.removed,
                 rejected=report.rejected)

    while True:
        try:
            await loop.run_in_executor(None, once)
        except Exception as exc:  # recorded as a failed run; the last good one stays
            log.error("directory sync failed", error=str(exc))
        await asyncio.sleep(app.config.directory.interval)


async def whitelist_fetch_loop(app: App) -> None:
    """Worker 0: fetch the published whitelist now, then every ``whitelist.fetch.interval``.

    A failure is audited and logged by the refresh; the list in force stays (last good)."""
    from trustspace.fetch import WhitelistFetchError, redact, refresh

    cfg = app.config.whitelist
    loop = asyncio.get_running_loop()

    def once() -> None:
        try:
            result = refresh(app.engine, cfg.fetch.url, sha256_url=cfg.fetch.sha256_url,
                             timeout=cfg.fetch.timeout, max_bytes=cfg.fetch.max_bytes,
                             ca_file=cfg.fetch.ca_file,
                             max_shrink_ratio=cfg.max_shrink_ratio)
            log.info("whitelist fetched", url=redact(cfg.fetch.url), status=result.status,
                     version=result.version_id)
        except WhitelistFetchError as exc:
            log.error("whitelist fetch failed", error=str(exc))

    while True:
        try:
            await loop.run_in_executor(None, once)
        except Exception as exc:  # e.g. database busy: try again next round
            log.error("whitelist fetch failed", error=repr(exc))
        await asyncio.sleep(cfg.fetch.interval)


def serve_workers(config_path: Path, workers: int) -> int:
    """Fork *workers* serving processes sharing the ports (SO_REUSEPORT); forward SIGTERM
    and SIGINT to them; exit status 0 when every worker stopped cleanly."""
    children: list[int] = []
    for index in range(workers):
        pid = os.fork()
        if pid == 0:  # child: its own engines, committer and event loop
            code = 0
            try:
                app = open_app(config_path)
                asyncio.run(serve(app, worker=index))
            except BaseException as exc:  # noqa: BLE001 - report and exit non-zero
                log.error("worker failed", worker=index, error=repr(exc))
                code = 1
            os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    return status


def prepare_limits(app: App) -> ProcessLimits:
    """The process's DATA/literal budget; asyncio's error reports rate-limited (no
    traceback per failed accept() while descriptors are exhausted); the open files limit
    raised to cover every listener's max_connections, and connections refused beyond it."""
    cfg = app.config
    install_loop_error_handler(asyncio.get_running_loop(), cfg.limits.report_interval)
    wanted = sum(lc.max_connections for lc in cfg.listeners.values() if lc.enabled) + 1024
    available = raise_open_files_limit(wanted)
    files = OpenFiles.of_process()
    if available < wanted:
        log.warning("open files limit below the connection caps", limit=available,
                    wanted=wanted, connections=files.limit)
    return ProcessLimits(MemoryBudget(cfg.limits.pending_bytes), files)


async def serve(app: App, worker: int = 0, *, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT, or until *stop* is set when given (then no signal
    handler is installed: an in-process test node runs it in a thread of its own)."""
    cfg = app.config
    limits = prepare_limits(app)
    committer = GroupCommitter(app.engine)
    committer.start()
    try:
        whitelist = LiveWhitelist(app.reader)
        tls = {
            "mx": server_context(cfg.tls.cert_file, cfg.tls.key_file),  # MX and relay
            "submission": server_context(cfg.tls.cert_file, cfg.tls.key_file),
        }
        # the MX asks for the peer operator's certificate (CERT_OPTIONAL) and any one
        # passes the handshake; trustspace.chain verifies it after against pki.anchors, so
        # that each refusal is an SMTP reply with an audit reason (docs/trust-space.md)
        accept_any_client_certificate(tls["mx"])
        assert cfg.pki is not None
        verifier = PeerVerifier(cfg.pki)
        servers, handlers = await start_smtp(app, committer, whitelist, tls, verifier, limits)
        imap_servers, imap_contexts = await start_imap(app, committer, tls["submission"],
                                                       limits)
        servers += imap_servers
        listening = {name: f"{lc.host}:{lc.port}" for name, lc in cfg.listeners.items()
                     if lc.enabled}
        await committer.run(lambda conn: append(conn, [AuditRecord(
            "server.start", actor="mss", detail={"listeners": listening, "worker": worker})]))
        audit_key = signing_key(cfg.audit.signing_key_file)
        if worker == 0:  # a checkpoint at start, shipped: the witnesses know where we begin
            await committer.run(lambda conn: write_checkpoint(conn, audit_key))
        log.info("ready", listeners=listening, worker=worker,
                 whitelist_version=whitelist.current.version_id)

        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        watcher = asyncio.create_task(whitelist.watch(cfg.whitelist.reload_interval))
        crl_refresh = asyncio.create_task(verifier.crls.run())  # per process: own memory
        checkpoints = directory = fetcher = None
        if worker == 0:
            checkpoints = asyncio.create_task(checkpoint_loop(app))
            if cfg.whitelist.fetch.url and cfg.whitelist.fetch.interval > 0:
                fetcher = asyncio.create_task(whitelist_fetch_loop(app))
            if cfg.directory is not None and cfg.directory.interval > 0:
                directory = asyncio.create_task(directory_loop(app))
        shipper = None
        if cfg.audit.destinations and worker == 0:  # one shipper per node
            shipper = asyncio.create_task(Shipper(
                Outbox(app.engine, app.reader), cfg.audit.destinations, audit_source(cfg),
                cfg.audit.ship_interval, cfg.audit.batch).run())
        # other processes' commits: one watcher per process wakes IDLE and the queue worker
        changes = ChangeWatcher(app.reader, cfg.change_poll)
        changes.add(imap_notifier.default().poll)
        delivery = delivery_task = None
        if cfg.delivery.enabled:  # every worker process: claims are leased per row
            delivery = DeliveryWorker(app, committer, whitelist, verifier)
            changes.add(delivery.poll)
            delivery_task = asyncio.create_task(delivery.run())
        changes_task = asyncio.create_task(changes.run())
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
        for imap_context in imap_contexts:  # RFC 3501 §7.1.5
            for imap_session in list(imap_context.sessions):
                imap_session.shutdown()
        watcher.cancel()
        changes_task.cancel()
        crl_refresh.cancel()
        for task in (shipper, checkpoints, directory, fetcher):
            if task is not None:
                task.cancel()
        if delivery is not None and delivery_task is not None:
            delivery_task.cancel()
            await delivery.stop()
        await committer.run(lambda conn: append(conn, [AuditRecord("server.stop", actor="mss")]))
        if worker == 0:  # and one at a clean stop (shipped at the next start at the latest)
            await committer.run(lambda conn: write_checkpoint(conn, audit_key))
    finally:
        committer.stop()
    log.info("stopped")
