"""The runtime of one serving process: what its listeners and workers share, built once.

``mss serve`` builds one :class:`Runtime` per process (per worker with ``server.workers``
> 1) and hands it to every listener and worker: the node (:class:`mss.app.App`), the group
committer, the process limits, the whitelist in force, the peer verifier (one CRL store
and cache), the TLS contexts, the mail store (its change notifier) and the change watcher.
Nothing of it lives in a module global, so two runtimes in one process (tests) do not
share state.

Its background parts are components (:mod:`mss.lifecycle`); :meth:`Runtime.services`
lists them in start order. Layer: above the services, below the protocols (which take a
runtime).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoints import signing_key, write_checkpoint
from audit.dicom import audit_source
from audit.shipper import Outbox, Shipper
from directory.sync import DirectorySync
from mss.app import App
from mss.authenticator import Authenticator
from mss.committer import GroupCommitter
from mss.config import ListenerConfig
from mss.identity.tokens import TokenVerifier
from mss.leader import Elector, locks_for
from mss.lifecycle import BackgroundTask, Component
from mss.limits import (
    MemoryBudget,
    OpenFiles,
    ProcessLimits,
    install_loop_error_handler,
    raise_open_files_limit,
)
from mss.mailstore import Mailstore, lifecycle
from mss.mailstore.notify import ChangeWatcher, PgChangeWatcher
from mss.mailstore.retention import run_round
from mss.metrics import Metrics, NoMetrics, metrics_for
from mss.sending import SendingLimits
from mss.session_registry import SessionRegistry
from mss.throttle import SharedFailures, Throttle
from trustspace.cache import LiveWhitelist
from trustspace.fetch import WhitelistFetchError, redact, refresh
from trustspace.pki import server_context
from trustspace.tlshook import accept_any_client_certificate
from trustspace.verifier import PeerVerifier

log = structlog.get_logger("mss.runtime")


@dataclass(frozen=True)
class TlsContexts:
    mx: ssl.SSLContext  # MX and relay: the peer operator's certificate is asked for
    submission: ssl.SSLContext  # submission(s), imap(s): no client certificate
    # listeners offering SASL EXTERNAL (submission-cert, imap-cert): a client certificate
    # is asked for, verified after the handshake (mss.authenticator), as on the MX
    client_cert: ssl.SSLContext

    def for_listener(self, listener: ListenerConfig) -> ssl.SSLContext:
        """A submission or IMAP listener's: asking for a client certificate when it
        offers EXTERNAL."""
        return self.client_cert if "external" in listener.auth else self.submission


def tls_contexts(app: App) -> TlsContexts:
    cfg = app.config.tls
    mx = server_context(cfg.cert_file, cfg.key_file)
    # the MX asks for the peer operator's certificate (CERT_OPTIONAL) and any one passes
    # the handshake; trustspace.chain verifies it after against pki.anchors, so that each
    # refusal is an SMTP reply with an audit reason (docs/trust-space.md)
    accept_any_client_certificate(mx)
    client_cert = server_context(cfg.cert_file, cfg.key_file)
    accept_any_client_certificate(client_cert)  # EXTERNAL: 535 / NO with a reason, not an alert
    return TlsContexts(mx, server_context(cfg.cert_file, cfg.key_file), client_cert)


def authenticator(app: App, committer: GroupCommitter, verifier: PeerVerifier
                  ) -> Authenticator:
    """The process's login checks, with the SMTP and IMAP throttles (counted in the
    database: every process and node adds up)."""
    cfg = app.config
    throttles = {
        "smtp": Throttle(cfg.smtp.auth_failures, cfg.smtp.auth_window, cfg.smtp.auth_lockout,
                         SharedFailures(app.reader, committer.submit, "smtp")),
        "imap": Throttle(cfg.imap.login_failures, cfg.imap.login_window,
                         cfg.imap.login_lockout,
                         SharedFailures(app.reader, committer.submit, "imap")),
    }
    tokens = TokenVerifier(cfg.auth) if cfg.auth.oidc else None  # [[auth.oidc]] issuers
    return Authenticator(app.reader, verifier, throttles, tokens)


def process_limits(app: App) -> ProcessLimits:
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


def change_watch(app: App) -> tuple[ChangeWatcher, Mailstore]:
    """The process's change watcher and mail store: on SQLite, data_version polling every
    database.change_poll; on PostgreSQL, LISTEN/NOTIFY between the nodes (a full round
    every database.notify_poll)."""
    cfg = app.config.database
    if app.engine.dialect.name == "postgresql":
        pg = PgChangeWatcher(app.reader, app.engine, cfg.notify_poll)
        changes: ChangeWatcher = pg
        mailstore = Mailstore(notifier=pg.notifier, queued=pg.queued)
    else:
        changes, mailstore = ChangeWatcher(app.reader, cfg.change_poll), Mailstore()
    changes.add(mailstore.notifier.poll)
    changes.add(app.keyring.poll)  # keys shredded by other nodes leave the cache
    return changes, mailstore


@dataclass
class Runtime:
    app: App
    worker: int  # index of this process among server.workers (0 signs at start/stop)
    committer: GroupCommitter
    limits: ProcessLimits
    whitelist: LiveWhitelist
    verifier: PeerVerifier
    tls: TlsContexts
    mailstore: Mailstore
    changes: ChangeWatcher  # other processes' commits: wakes IDLE and the queue worker
    audit_key: Ed25519PrivateKey
    elector: Elector  # runs the periodic jobs here while this process leads them
    authenticator: Authenticator  # logins of SMTP AUTH and IMAP (passwords, tokens, certs)
    sending: SendingLimits  # [limits.sending]: counters in the database (issue 17)
    metrics: Metrics = field(default_factory=NoMetrics)  # this process's (issue 17)
    registry: SessionRegistry | None = None  # logged-in sessions (issue 16, mss sessions)

    @classmethod
    def build(cls, app: App, worker: int = 0) -> Runtime:
        """Called in the event loop that will serve (its error handler is installed)."""
        cfg = app.config
        assert cfg.pki is not None
        changes, mailstore = change_watch(app)
        metrics = metrics_for(cfg)  # counts the audit records of each commit (observer)
        committer = GroupCommitter(app.engine, observer=metrics if metrics.enabled else None)
        verifier = PeerVerifier(cfg.pki)
        registry = SessionRegistry(committer, worker, cfg.sessions.node, cfg.sessions.heartbeat)
        changes.add(registry.poll)  # sessions ended by an operator (mss sessions end)
        return cls(app, worker, committer, process_limits(app),
                   LiveWhitelist(app.reader, cfg.whitelist.reload_interval),
                   verifier, tls_contexts(app), mailstore, changes,
                   signing_key(cfg.audit.signing_key_file),
                   Elector(locks_for(app.engine, cfg.server.data_dir),
                           cfg.server.election_interval),
                   authenticator(app, committer, verifier),
                   SendingLimits(cfg.limits.sending, app.reader, committer.submit), metrics,
                   registry)

    def services(self) -> list[Component]:
        """The background parts, in start order (stopped in reverse): the committer first
        (everything else writes through it), the periodic jobs last. Every process (worker,
        node) runs each job under its election (mss/leader.py): one of the cluster runs it
        at a time."""
        cfg = self.app.config
        parts: list[Component] = [self.committer, self.elector, self.whitelist,
                                  self.verifier, BackgroundTask("change-watch", self.changes.run)]
        if self.registry is not None:  # before the listeners, stopped after them
            parts.append(self.registry)
        if self.authenticator.tokens is not None:  # issuers' keys read before serving
            parts.append(self.authenticator.tokens)
        parts.append(self._elected("audit-checkpoints", self._checkpoint_loop))
        if cfg.whitelist.fetch.url and cfg.whitelist.fetch.interval > 0:
            parts.append(self._elected("whitelist-fetch", self._whitelist_fetch_loop))
        if cfg.directory is not None and cfg.directory.sync_interval() > 0:
            parts.append(self._elected("directory-sync", self._directory_loop))
        if cfg.retention.rules and cfg.retention.interval > 0:  # issue 16
            parts.append(self._elected("retention", self._retention_loop))
        if cfg.lifecycle.purge_interval > 0:  # issue 16: mss mailbox delete's grace ended
            parts.append(self._elected("mailbox-purge", self._purge_loop))
        if cfg.audit.destinations:  # one shipper per destination cursor in the cluster
            parts.append(Shipper(Outbox(self.app.engine, self.app.reader),
                                 cfg.audit.destinations, audit_source(cfg),
                                 cfg.audit.ship_interval, cfg.audit.batch,
                                 elect=self.elector.run))
        return parts

    def _elected(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]
                 ) -> BackgroundTask:
        return BackgroundTask(name, functools.partial(self.elector.run, name, loop))

    async def checkpoint(self) -> None:
        """Sign a checkpoint of the audit chain now (committed with the other writes)."""
        key = self.audit_key
        await self.committer.run(lambda conn: write_checkpoint(conn, key))

    # ------------------------------------------------------------------ elected loops
    async def _in_thread(self, once: Callable[[], None]) -> None:
        await asyncio.get_running_loop().run_in_executor(None, once)

    async def _checkpoint_loop(self) -> None:
        """Sign a checkpoint of the audit chain every audit.checkpoint_interval seconds,
        through the committer like every other append of this process (one writer of the
        chain per process; across nodes, the audit-chain lock)."""
        while True:
            await asyncio.sleep(self.app.config.audit.checkpoint_interval)
            try:
                await self.checkpoint()
            except Exception as exc:  # try again next time; verification still works
                log.error("audit checkpoint failed", error=repr(exc))

    async def _directory_loop(self) -> None:
        """Synchronise the directory every directory.interval seconds (full when due)."""
        cfg = self.app.config.directory
        assert cfg is not None
        sync = DirectorySync(self.app.engine, cfg, actor="mss")

        def once() -> None:
            report = sync.full() if sync.needs_full() else sync.incremental()
            log.info("directory synchronised", kind=report.kind, entries=report.entries,
                     added=report.added, changed=report.changed, removed=report.removed,
                     rejected=report.rejected)

        while True:
            try:
                await self._in_thread(once)
            except Exception as exc:  # recorded as a failed run; the last good one stays
                log.error("directory sync failed", error=str(exc))
            await asyncio.sleep(cfg.sync_interval())

    async def _retention_loop(self) -> None:
        """Apply [[retention.rules]] now, then every retention.interval seconds (as of the
        clock at each round); this process's sessions are woken after each commit, other
        processes' and nodes' by the notifier (docs/retention.md)."""
        cfg, app, notifier = self.app.config.retention, self.app, self.mailstore.notifier

        def once() -> None:
            report = run_round(app.engine, app.reader, app.keyring, cfg,
                               changed=notifier.changed)
            if report.folders:
                log.info("retention applied", messages=report.messages, bytes=report.bytes,
                         folders=len(report.folders), mailboxes=report.mailboxes,
                         held=report.held)

        while True:
            try:
                await self._in_thread(once)
            except Exception as exc:  # e.g. database away: the next round catches up
                log.error("retention round failed", error=repr(exc))
            await asyncio.sleep(cfg.interval)
    async def _purge_loop(self) -> None:
        """Every lifecycle.purge_interval seconds, purge the mailboxes whose deletion grace
        period ended (mss.mailstore.lifecycle.purge_due: rows removed, key destroyed, one
        transaction and one mailbox.purge audit record each)."""
        app = self.app

        def once() -> None:
            for purged in lifecycle.purge_due(app.engine, app.keyring):
                log.info("mailbox purged", mailbox_id=purged.mailbox.id,
                         messages=purged.messages)

        while True:
            await asyncio.sleep(app.config.lifecycle.purge_interval)
            try:
                await self._in_thread(once)
            except Exception as exc:  # e.g. database busy: the next round tries again
                log.error("mailbox purge failed", error=repr(exc))

    async def _whitelist_fetch_loop(self) -> None:
        """Fetch the published whitelist now, then every ``whitelist.fetch.interval``.

        A failure is audited and logged by the refresh; the list in force stays (last
        good)."""
        cfg = self.app.config.whitelist

        def once() -> None:
            try:
                result = refresh(self.app.engine, cfg.fetch.url,
                                 sha256_url=cfg.fetch.sha256_url, timeout=cfg.fetch.timeout,
                                 max_bytes=cfg.fetch.max_bytes, ca_file=cfg.fetch.ca_file,
                                 max_shrink_ratio=cfg.max_shrink_ratio)
                log.info("whitelist fetched", url=redact(cfg.fetch.url), status=result.status,
                         version=result.version_id)
            except WhitelistFetchError as exc:
                log.error("whitelist fetch failed", error=str(exc))

        while True:
            try:
                await self._in_thread(once)
            except Exception as exc:  # e.g. database busy: try again next round
                log.error("whitelist fetch failed", error=repr(exc))
            await asyncio.sleep(cfg.fetch.interval)
