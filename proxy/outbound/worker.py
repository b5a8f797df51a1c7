"""The delivery worker of ``mss serve``: claim due rows, send each, record the result.

Every serving process runs one; claims carry a lease (see :mod:`claims`) so any number of
workers on any number of nodes share one queue. Concurrency is bounded per process
(delivery.max_concurrency) and per destination domain (delivery.max_per_destination).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
from collections import defaultdict

import structlog
from sqlalchemy import Connection

from audit.events import Event, Outcome
from audit.journal import AuditRecord, append
from mss import message as rfc5322
from mss.app import App
from mss.committer import GroupCommitter
from mss.config import DeliveryConfig
from mss.dsn import MailParams, RcptParams, wants
from mss.lifecycle import STOP_FLOOR, BackgroundTask, remaining
from mss.mailstore import Mailstore, deliveries, domains
from mss.runtime import Runtime
from proxy.outbound import claims, client, mx
from proxy.outbound.backoff import gives_up, retry_delay
from proxy.outbound.claims import Claim
from proxy.outbound.notify import DsnCopy, dsn_copy, dsn_delivery
from proxy.outbound.result import Delivered, DeliveryFailure
from trustspace import policy
from trustspace.blocks import PeerBlock
from trustspace.chain import PkiCheck
from trustspace.dn import CanonicalDN
from trustspace.whitelist import Whitelist

log = structlog.get_logger("mss.delivery")
STOP_GRACE = 10.0  # seconds given to deliveries in flight at stop
MAX_HOPS = 100  # Received headers beyond which a message is looping (RFC 5321 §6.3)


class DeliveryWorker:
    """A component of :mod:`mss.server`: ``start`` runs the claim loop, ``stop`` lets the
    deliveries in flight finish (bounded) and gives the leases back."""

    def __init__(self, runtime: Runtime) -> None:
        app = runtime.app
        self.app = app
        self.verifier = runtime.verifier  # the listeners' own: one CRL store and cache
        self.cfg = app.config.delivery
        self.committer = runtime.committer
        self.whitelist = runtime.whitelist
        self.mailstore = runtime.mailstore  # queued signal wakes us; DSNs wake IDLE
        self.owner = secrets.token_hex(8)
        self.resolver = mx.make_resolver(self.cfg)
        self.ctx = client.client_context(app.config.tls)
        self.pool = client.SessionPool(self.cfg.session_idle, self.cfg.session_reuse,
                                       self.cfg.max_per_destination)
        self.hostname = app.config.smtp.hostname
        self.in_flight: set[asyncio.Task[None]] = set()
        self.per_domain: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(self.cfg.max_per_destination))
        self.wake = asyncio.Event()
        self.saturated = False  # the last claim may have left due rows behind
        self.loop: asyncio.AbstractEventLoop | None = None
        self._task = BackgroundTask("delivery", self.run)
        runtime.changes.add(self.poll)  # rows queued by other processes

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        """Claim and start deliveries; sleep until a commit queues a row (this process:
        :attr:`Mailstore.queued`; others: :meth:`poll` from the change watcher), a
        delivery ends while the last claim left due rows (no room), the earliest deferred
        row is due (read in the claim's transaction), or the safety poll runs out."""
        cfg = self.cfg
        self.loop = asyncio.get_running_loop()
        self.mailstore.queued.subscribe(self.wake)
        try:
            await self._run(cfg)
        finally:
            self.mailstore.queued.unsubscribe(self.wake)

    def poll(self, conn: Connection) -> None:
        """Change watcher listener (another process committed): wake when a row is due."""
        if self.loop is not None and claims.due_exists(conn, time.time()):
            self.loop.call_soon_threadsafe(self.wake.set)

    async def _sleep_time(self) -> float:
        """Seconds until the earliest waiting row is due, at most the safety poll."""
        def read() -> float | None:
            with self.app.reader.connect() as conn:
                return claims.next_due(conn)
        try:
            due = await asyncio.get_running_loop().run_in_executor(None, read)
        except Exception as exc:  # database busy: the safety poll will do
            log.error("queue read failed", error=repr(exc))
            return self.cfg.poll_interval
        if due is None:
            return self.cfg.poll_interval
        return min(self.cfg.poll_interval, max(0.01, due - time.time()))

    async def _run(self, cfg: DeliveryConfig) -> None:
        while True:
            self.wake.clear()  # before the claim: a row queued meanwhile wakes the wait
            room = cfg.max_concurrency - len(self.in_flight)
            limit = min(room, cfg.batch)
            batch: list[Claim] = []
            due: float | None = None
            failed = False
            if room > 0:
                try:
                    batch, due = await self.committer.run(functools.partial(
                        _claim, owner=self.owner, now=time.time(), lease=cfg.lease,
                        limit=limit))
                except Exception as exc:  # database busy or gone: try again later
                    log.error("queue claim failed", error=repr(exc))
                    failed = True
            # rows may have been left due (no room, or as many as asked): the end of a
            # delivery claims again; otherwise only a queued row (or a retry) wakes us
            self.saturated = failed or room <= 0 or len(batch) >= limit
            groups: dict[tuple[object, ...], list[Claim]] = defaultdict(list)
            for c in batch:  # one message's copies for one domain: one SMTP transaction
                groups[(c.domain, c.mail_from, c.message_id, c.created_at)].append(c)
            for group in groups.values():
                task = asyncio.create_task(self._deliver(group))
                self.in_flight.add(task)
                task.add_done_callback(self._done)
            self.pool.reap()
            if failed or not self.saturated or len(self.in_flight) >= cfg.max_concurrency:
                # what the claim left is not due yet: sleep until the earliest is (a second
                # claim at once would find nothing: every commit queuing a row wakes us)
                timeout = cfg.poll_interval  # no room: the end of a delivery wakes us
                if failed:  # not at once again (rows may be due): at most once a second
                    timeout = min(cfg.poll_interval, max(await self._sleep_time(), 1.0))
                elif due is not None:
                    timeout = min(cfg.poll_interval, max(0.01, due - time.time()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        if self.saturated:  # room for rows the last claim had to leave
            self.wake.set()

    async def start(self) -> None:
        await self._task.start()

    async def stop(self, deadline: float) -> None:
        """No new claim; let deliveries in flight finish (at most STOP_GRACE seconds, and
        by *deadline*), then give back the leases left."""
        await self._task.stop(deadline)
        if self.in_flight:
            await asyncio.wait(set(self.in_flight),
                               timeout=min(STOP_GRACE, remaining(deadline)))
        for task in list(self.in_flight):
            task.cancel()
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=remaining(deadline, STOP_FLOOR))
        await self.pool.close(deadline)  # idle sessions and QUITs in flight
        with contextlib.suppress(Exception):
            await self.committer.run(lambda conn: claims.release(conn, self.owner))

    # ------------------------------------------------------------------ one row
    async def _deliver(self, group: list[Claim]) -> None:
        loop = asyncio.get_running_loop()
        # every attempt ends well within the lease taken at claim time, so that no other
        # worker can take a row while this one may still be talking to the peer
        deadline = loop.time() + self.cfg.lease * 0.8
        try:
            bodies, relay_to = await loop.run_in_executor(None, self._load, group)
        except Exception as exc:  # tampered or unreadable ciphertext: keep it, alert
            log.error("queue rows unreadable", queue_ids=[c.id for c in group],
                      error=repr(exc))
            alerts = [AuditRecord(Event.STORE_TAMPERED, Outcome.MAJOR_FAILURE, actor="mss",
                                  rcpt=c.rcpt, message_id=c.message_id,
                                  reason=f"queued copy unreadable: {type(exc).__name__}",
                                  detail={"queue_id": c.id}) for c in group]
            await self.committer.run(lambda conn: append(conn, alerts))
            for c in group:
                await self._record_failure(c, None, DeliveryFailure(
                    f"queued copy unreadable: {type(exc).__name__}", permanent=False))
            return
        held = self.whitelist.blocks.domain_block(group[0].domain)
        if held is not None:  # confirmed by the database: the unblock that released these
            # rows may be newer than the cache (whitelist.reload_interval)
            await loop.run_in_executor(None, self.whitelist.refresh)
            held = self.whitelist.blocks.domain_block(group[0].domain)
        if held is not None:  # mss peer block: not even a connection (trustspace/blocks.py)
            for c in group:
                await self._hold(c, bodies[c.id], held)
            return
        same: dict[bytes, list[Claim]] = defaultdict(list)
        for c in group:  # the copies of one message are equal; group only equal bytes
            same[bodies[c.id]].append(c)
        # the destination's slot is held for the SMTP transactions only: recording their
        # results (a commit each) must not keep the next message to that domain waiting
        async with self.per_domain[group[0].domain]:
            sent = [(rows, data, await self._send_rows(rows, data, relay_to, deadline))
                    for data, rows in same.items()]
        for rows, data, results in sent:
            if results is None:  # waited too long for a slot: not attempted
                await asyncio.gather(*(self.committer.run(functools.partial(
                    claims.release, owner=self.owner, queue_id=c.id)) for c in rows))
                self.wake.set()  # due again at once
                continue
            # one commit job per row, awaited together: one group commit for them all
            await asyncio.gather(*(self._record(c, data, results[c.rcpt]) for c in rows))

    async def _record(self, c: Claim, data: bytes,
                      result: Delivered | DeliveryFailure) -> None:
        if isinstance(result, DeliveryFailure):
            await self._record_failure(c, data, result)
        else:
            await self._record_delivered(c, data, result)

    async def _send_rows(self, rows: list[Claim], data: bytes, relay_to: str | None,
                         deadline: float) -> client.Results | None:
        """Each row's result of one attempt; None when too little of the attempt's time is
        left to try (its rows are released, due again at once)."""
        loop = asyncio.get_running_loop()
        if deadline - loop.time() < self.cfg.connect_timeout:  # waited too long for a slot
            return None
        everyone: DeliveryFailure | None = None
        hops = rfc5322.header_block(data).lower().count(b"\nreceived:") + \
            data[:9].lower().startswith(b"received:")
        if hops > MAX_HOPS:  # RFC 5321 §6.3: a loop (e.g. a next hop pointing back here)
            everyone = DeliveryFailure(f"mail loop: {hops} Received headers (RFC 5321 §6.3)",
                                       permanent=True, reply="554 5.4.6 routing loop")
        try:
            if everyone is None:
                async with asyncio.timeout_at(deadline):
                    results = await self._attempt(rows, data, relay_to)
        except TimeoutError:
            everyone = DeliveryFailure("attempt outlasted 80 % of delivery.lease",
                                       permanent=False)
        except DeliveryFailure as failure:  # DNS: no such domain, null MX, lookup failed
            everyone = failure
        except Exception as exc:  # a bug must not lose the rows: defer them
            log.error("delivery crashed", queue_ids=[c.id for c in rows], error=repr(exc))
            everyone = DeliveryFailure(f"internal error: {type(exc).__name__}",
                                       permanent=False)
        if everyone is not None:
            results = {c.rcpt: everyone for c in rows}
        return results

    def _load(self, group: list[Claim]) -> tuple[dict[str, bytes], str | None]:
        with self.app.reader.connect() as conn:
            relay_to = domains.relay_of(conn, group[0].domain)
            return {c.id: deliveries.read_queued(conn, self.app.keyring, c.id)
                    for c in group}, relay_to

    async def _attempt(self, rows: list[Claim], data: bytes, relay_to: str | None
                       ) -> client.Results:
        """Each recipient's result: hosts in preference order (RFC 5321 §5.1); recipients
        with a temporary failure go on to the next host, the others are settled."""
        domain = rows[0].domain
        if relay_to:  # our institution's own server: anchors verified, no whitelist DN
            host, port = mx.parse_next_hop(relay_to)
            hops = [mx.Hop(host, port, verify_dn=False)]
        else:
            hops = await mx.mx_hosts(self.resolver, domain, self.cfg.port)
        pending = [c.rcpt for c in rows]
        settled: client.Results = {}
        errors: dict[str, list[DeliveryFailure]] = defaultdict(list)
        for hop in hops:
            addresses = await mx.addresses(self.resolver, hop.host) if pending else []
            if pending and not addresses:
                for rcpt in pending:
                    errors[rcpt].append(DeliveryFailure(f"{hop.host}: no address",
                                                        permanent=False))
            for address in addresses:
                if not pending:
                    break
                envelope = client.Envelope(rows[0].mail_from, tuple(pending), data,
                                           *_dsn_options(rows))
                try:
                    results = await client.send(
                        address, hop.host, hop.port, self.ctx, self.hostname, envelope,
                        self._dn_check(domain, hop.verify_dn),
                        certificate_check=self._certificate_check, pool=self.pool,
                        connect_timeout=self.cfg.connect_timeout,
                        command_timeout=self.cfg.command_timeout)
                except DeliveryFailure as failure:
                    if failure.permanent:  # e.g. 5yz to MAIL FROM: every recipient
                        results = dict.fromkeys(pending, failure)
                    else:
                        for rcpt in pending:
                            errors[rcpt].append(failure)
                        continue
                for rcpt, result in results.items():
                    if isinstance(result, Delivered) or result.permanent:
                        settled[rcpt] = result
                    else:
                        errors[rcpt].append(result)
                pending = [rcpt for rcpt in pending if rcpt not in settled]
        for rcpt in pending:
            tried = errors.get(rcpt) or [DeliveryFailure(f"no host to try for {domain}",
                                                         permanent=False)]
            settled[rcpt] = DeliveryFailure("; ".join(e.reason for e in tried)[:2000],
                                            permanent=False, reply=tried[-1].reply,
                                            host=tried[-1].host)
        return settled

    async def _certificate_check(self, chain: list[bytes]) -> str | None:
        """RFC 5280 path, validity and revocation of the peer's server certificate, as on
        our listeners: a refusal is a temporary failure of that host (a renewed
        certificate or a fresh CRL may clear it); fail-open lets an unknown revocation
        status through with a warning, as inbound."""
        result = await self.verifier.verify(chain, purpose="server")
        refusal = policy.certificate_check(result, None, self.verifier.fail_open)
        if refusal is not None:
            return f"server certificate {result.subject or '?'} refused: {refusal.reason}"
        if result.check is PkiCheck.CRL_UNAVAILABLE:  # fail-open: let through, on record
            log.warning("peer certificate revocation unknown (fail-open)",
                        peer_dn=result.subject, reason=result.reason)
        return None

    def _dn_check(self, domain: str, listed: bool = True) -> client.DnCheck:
        """The peer's certificate DN: not blocked locally (mss peer block: every hop, a
        next hop too), and one the whitelist lists for *domain* (when *listed*: not for
        a next hop of ours)."""
        whitelist, blocks = self.whitelist.current, self.whitelist.blocks

        def check(dn: CanonicalDN, subject: str) -> str | None:
            block = blocks.dn_block(dn)
            if block is not None:
                return f"peer_blocked: certificate DN {subject}: {block.describe()}"
            if not listed or whitelist.dn_listed(domain, dn):
                return None
            return (f"certificate DN {subject} is not listed for {domain} in whitelist "
                    f"version {whitelist.version_id}")
        return check

    async def _hold(self, c: Claim, data: bytes, block: PeerBlock) -> None:
        """A row for a blocked domain: deferred without an attempt counted, until the
        block ends (--until) or, for a block without end, re-checked after the row's
        usual delay; expired (DSN) once past delivery.max_age like any row."""
        now = time.time()
        reason = f"peer_blocked: recipient domain {c.domain}: {block.describe()}"
        next_at = block.until if block.until is not None else \
            now + retry_delay(max(c.attempts, 1), self.cfg)
        if gives_up(0, c.aged_from, next_at, self.cfg):  # mss queue hold time not counted
            await self.finish(c, data, "expired", "4.4.7", f"held past delivery.max_age: "
                              f"{reason}", None, None, counts_attempt=False)
            log.info("expired", queue_id=c.id, reason="peer blocked")
            return
        await self.committer.run(lambda conn: claims.deferred(
            conn, c, reason, None, next_at, now, counts_attempt=False))
        self.wake.set()  # its re-check may be due before the worker's current sleep ends
        log.info("held", queue_id=c.id, block=block.id, until=next_at)
    async def _record_delivered(self, c: Claim, data: bytes, result: Delivered) -> None:
        """The row is delivered; a peer without DSN gets no parameters and sends no
        report, so a sender whose NOTIFY asks for SUCCESS gets a ``relayed`` one from us
        (RFC 3461 §5.2.2, §6.2.3), in the same transaction."""
        now = time.time()
        copy: DsnCopy | None = None
        if not result.dsn and wants(c.dsn_notify, "SUCCESS"):
            copy = await asyncio.get_running_loop().run_in_executor(None, functools.partial(
                self._report, c, data, "relayed", "2.0.0",
                f"relayed to {result.host}, which sends no delivery reports",
                result.reply, result.host))

        def commit(conn: Connection) -> None:
            claims.delivered(conn, c, host=result.host, reply=result.reply, now=now,
                             peer_dn=result.peer_dn, peer_dsn=result.dsn)
            if copy is not None:
                deliveries.write_delivery(conn, dsn_delivery(copy, c, "relayed"))
        await self.committer.run(commit)
        self._wake_report(copy)
        log.info("delivered", queue_id=c.id, host=result.host, attempt=c.attempts + 1)

    def _report(self, c: Claim, data: bytes | None, action: str, status: str, reason: str,
                reply: str | None, host: str | None,
                will_retry_until: float | None = None) -> DsnCopy | None:
        """The sealed *action* report for *c*'s sender, or None (NOTIFY, null sender, a
        report, outside the trust space: mss.mailstore.reports)."""
        with self.app.reader.connect() as conn:
            copy, _ = dsn_copy(conn, self.app.keyring, self.hostname, c, data, status,
                               reason, reply, host, self.whitelist.current, action=action,
                               will_retry_until=will_retry_until)
        return copy

    def _wake_report(self, copy: DsnCopy | None) -> None:
        if isinstance(copy, deliveries.LocalCopy):  # an INBOX: its IDLE sessions
            self.mailstore.notifier.changed(copy.mailbox_id)
        elif copy is not None:
            self.wake.set()

    def _delay_due(self, c: Claim, now: float) -> bool:
        """delivery.delay_warning passed since the message was queued, and the last
        "delayed" report of the row is older than delivery.delay_warning_repeat."""
        cfg = self.cfg
        if cfg.delay_warning <= 0 or now - c.created_at < cfg.delay_warning:
            return False
        return c.delay_reported_at is None or \
            now - c.delay_reported_at >= cfg.delay_warning_repeat

    async def _record_failure(self, c: Claim, data: bytes | None,
                              failure: DeliveryFailure) -> None:
        now = time.time()
        attempts = c.attempts + 1
        next_at = now + retry_delay(attempts, self.cfg)
        # the time held (mss queue hold) does not count towards max_age
        if not failure.permanent and not gives_up(attempts, c.aged_from, next_at, self.cfg):
            copy: DsnCopy | None = None
            if self._delay_due(c, now) and wants(c.dsn_notify, "DELAY"):
                status = failure.status if failure.status.startswith("4") else "4.0.0"
                copy = await asyncio.get_running_loop().run_in_executor(
                    None, functools.partial(
                        self._report, c, data, "delayed", status,
                        f"not delivered yet after {attempts} attempts: {failure.reason}",
                        failure.reply, failure.host,
                        c.aged_from + self.cfg.max_age))

            def commit(conn: Connection) -> None:
                claims.deferred(conn, c, failure.reason, failure.reply, next_at, now,
                                delay_reported=copy is not None)
                if copy is not None:
                    deliveries.write_delivery(conn, dsn_delivery(copy, c, "delayed"))
            await self.committer.run(commit)
            self._wake_report(copy)
            self.wake.set()  # its retry may be due before the worker's current sleep ends
            log.info("deferred", queue_id=c.id, attempt=attempts, reason=failure.reason,
                     delay_report=copy is not None)
            return
        status = "bounced" if failure.permanent else "expired"
        dsn_status = failure.status if failure.permanent else "4.4.7"  # RFC 3463: expired
        reason = failure.reason if failure.permanent else \
            f"gave up after {attempts} attempts: {failure.reason}"
        await self.finish(c, data, status, dsn_status, reason, failure.reply, failure.host)
        log.info(status, queue_id=c.id, attempt=attempts, reason=reason)

    async def finish(self, c: Claim, data: bytes | None, status: str, dsn_status: str,
                     reason: str, reply: str | None, host: str | None, *,
                     counts_attempt: bool = True, actor: str = "mss") -> None:
        await finish(self.app, self.committer, self.whitelist.current, c, data, status,
                     dsn_status, reason, reply, host, counts_attempt=counts_attempt,
                     actor=actor, mailstore=self.mailstore)
        self.wake.set()  # a DSN may have been queued


async def finish(app: App, committer: GroupCommitter, whitelist: Whitelist, c: Claim,
                 data: bytes | None, status: str, dsn_status: str, reason: str,
                 reply: str | None, host: str | None, *, counts_attempt: bool = True,
                 actor: str = "mss", mailstore: Mailstore) -> None:
    """Mark *c* bounced/expired and store or queue the DSN for its sender, in one
    transaction."""
    with app.reader.connect() as conn:
        copy, why = dsn_copy(conn, app.keyring, app.config.smtp.hostname, c, data,
                             dsn_status, reason, reply, host, whitelist)
    now = time.time()
    await committer.run(lambda conn: write_final(conn, c, status, f"{reason} ({why})", reply,
                                                 copy, now, counts_attempt, actor))
    if isinstance(copy, deliveries.LocalCopy):  # landed in a local INBOX: wake its IMAP sessions
        mailstore.notifier.changed(copy.mailbox_id)


def _claim(conn: Connection, owner: str, now: float, lease: float, limit: int
           ) -> tuple[list[Claim], float | None]:
    """The rows claimed and, when the claim took fewer than *limit* (nothing else is due),
    when the earliest row left becomes claimable: one job of the committer for both."""
    batch = claims.claim(conn, owner, now, lease, limit)
    return batch, claims.next_due(conn) if len(batch) < limit else None


def _dsn_options(rows: list[Claim]) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """The RFC 3461 parameters of one transaction's rows: MAIL FROM's (RET, ENVID: the
    message's, equal on every row) and each recipient's (NOTIFY, ORCPT)."""
    first = rows[0]
    mail = MailParams(first.dsn_ret, first.dsn_envid).esmtp()
    return tuple(mail), {c.rcpt: tuple(RcptParams(c.dsn_notify, c.dsn_orcpt).esmtp())
                         for c in rows}


def write_final(conn: Connection, c: Claim, status: str, reason: str, reply: str | None,
                copy: DsnCopy | None, now: float, counts_attempt: bool,
                actor: str) -> bool:
    """The final status and the DSN copy (if any), in the caller's transaction."""
    done = claims.failed(conn, c, status, reason, reply, now, counts_attempt=counts_attempt,
                         actor=actor)
    if done and copy is not None:
        deliveries.write_delivery(conn, dsn_delivery(copy, c))
    return done
