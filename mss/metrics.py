"""The node's Prometheus metrics (``mss_*``, docs/metrics.md): one :class:`Metrics` per
serving process, held by its runtime (no module global: two runtimes in one process keep
their own counts).

Counters come from two places. What the audit journal records (messages accepted and
refused, logins, deliveries) is counted from the records of each *committed* group-commit
transaction (:meth:`Metrics.committed`, the committer's observer): the counts are exactly
those of the audit trail, and a message is counted accepted only once its ``250`` may be
sent. What has no audit record of its own (sessions opened, IMAP command latency, the
committer's batches) is counted where it happens, by a one-line hook. Gauges whose truth is
the database (queue, audit backlog, whitelist, directory) or a file (certificate, CRLs) are
computed at scrape time by :class:`StateCollector`, once per scrape for the whole node.

Layer: runtime (it reads the verifier's CRL store and the tables of several services).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from types import MappingProxyType
from typing import Any

from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from audit.events import Event, Outcome
from audit.journal import COMMITTED, AuditRecord
from mss import db
from mss.config import Config

# the login methods of issue 15 (listeners.<name>.auth); SASL mechanism names map to them
METHODS = ("password", "app-password", "oauthbearer", "xoauth2", "external")
_MECHANISM_METHOD = MappingProxyType({
    "PLAIN": "password", "LOGIN": "password", "OAUTHBEARER": "oauthbearer",
    "XOAUTH2": "xoauth2", "EXTERNAL": "external",
    "CERTIFICATE": "certificate"})  # a relay by its registered certificate
_REFUSAL_STAGE = MappingProxyType({
    Event.SMTP_SENDER_REFUSED.value: "sender", Event.SMTP_RECIPIENT_REFUSED.value: "recipient",
    Event.SMTP_MESSAGE_REFUSED.value: "data"})
_DELIVERY_RESULT = MappingProxyType({
    Event.DELIVERY_LOCAL.value: "local", Event.DELIVERY_QUEUED.value: "queued",
    Event.QUEUE_DELIVERED.value: "delivered", Event.QUEUE_DEFERRED.value: "deferred",
    Event.QUEUE_BOUNCED.value: "bounced", Event.QUEUE_EXPIRED.value: "expired"})
_LOGIN_PROTOCOL = MappingProxyType({Event.SMTP_AUTH.value: "smtp", Event.IMAP_LOGIN.value: "imap"})
_ENHANCED = re.compile(r"^[245]\d\d[ -]([245]\.\d{1,3}\.\d{1,3})")  # RFC 3463 in a reply
_CODE = re.compile(r"^([a-z][a-z0-9_ ]{0,39})(?::|$)")  # "recipient_unknown: ..."
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_COMMIT = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def refusal_reason(record: AuditRecord) -> str:
    """A bounded label for a refusal: the policy's reason code (``domain_not_whitelisted``),
    else the enhanced status code of the reply (``5.3.4``), else ``other``; never an
    address or free text."""
    check = record.detail.get("check")  # set by the code that refused, never by a client
    if isinstance(check, str):
        return check[:40]
    text = record.reason or ""
    if m := _ENHANCED.match(text):
        return m.group(1)
    if m := _CODE.match(text):
        return m.group(1).replace(" ", "_")
    return "other"


def login_labels(record: AuditRecord) -> tuple[str, str]:
    """(method, outcome) of a login record: outcome success, throttled or failure."""
    method = record.detail.get("method")
    if method not in METHODS:
        method = _MECHANISM_METHOD.get(str(record.detail.get("mechanism", "")).upper(), "other")
    outcome = ("success" if record.outcome == Outcome.SUCCESS
               else "throttled" if record.reason == "throttled" else "failure")
    return str(method), outcome


class Metrics:
    """The counters and histograms of one serving process, in its own registry."""

    enabled = True

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.accepted = Counter("mss_messages_accepted", "Messages accepted (committed, 250 "
                                "sent), per listener", ["listener"], registry=r)
        self.refused = Counter("mss_messages_refused", "Refusals at MAIL (sender), RCPT "
                               "(recipient) or DATA, per listener and reason",
                               ["listener", "stage", "reason"], registry=r)
        self.deliveries = Counter("mss_deliveries", "Deliveries per result: local (stored), "
                                  "queued, then delivered, deferred, bounced, expired",
                                  ["result"], registry=r)
        self.sessions = Counter("mss_sessions", "SMTP and IMAP sessions opened, per listener",
                                ["protocol", "listener"], registry=r)
        self.logins = Counter("mss_logins", "Logins per protocol, method and outcome",
                              ["protocol", "method", "outcome"], registry=r)
        self.imap_seconds = Histogram("mss_imap_command_seconds", "IMAP command latency, "
                                      "read to tagged reply", ["command"], buckets=_LATENCY,
                                      registry=r)
        self.batch_size = Histogram("mss_commit_batch_size", "Jobs per group-commit "
                                    "transaction", buckets=_BATCH, registry=r)
        self.commit_seconds = Histogram("mss_commit_seconds", "COMMIT of a group-commit "
                                        "transaction (the WAL fsync)", buckets=_COMMIT,
                                        registry=r)

    # ------------------------------------------------------------------ hooks
    def session(self, protocol: str, listener: str) -> None:
        self.sessions.labels(protocol, listener).inc()

    def imap_timer(self, command: str) -> AbstractContextManager[Any]:
        """Around one IMAP command, read to tagged reply."""
        return self.imap_seconds.labels(command).time()

    def batch(self, jobs: int, commit_seconds: float) -> None:
        """The committer's writer thread, once per transaction committed."""
        self.batch_size.observe(jobs)
        self.commit_seconds.observe(commit_seconds)

    def committed(self, scratch: Mapping[str, Any]) -> None:
        """The audit records of a committed transaction (the journal keeps them in the
        transaction's scratch space): count what they say happened."""
        for record in scratch.get(COMMITTED, ()):
            self.count(record)

    def count(self, record: AuditRecord) -> None:
        event = str(record.event)
        if event == Event.SMTP_MESSAGE_ACCEPTED:
            self.accepted.labels(record.listener or "").inc()
        elif (stage := _REFUSAL_STAGE.get(event)) is not None:
            self.refused.labels(record.listener or "", stage, refusal_reason(record)).inc()
        elif (result := _DELIVERY_RESULT.get(event)) is not None:
            self.deliveries.labels(result).inc()
        elif (protocol := _LOGIN_PROTOCOL.get(event)) is not None:
            self.logins.labels(protocol, *login_labels(record)).inc()


class NoMetrics(Metrics):
    """``metrics.enabled = false``: every hook does nothing (the benchmarks' baseline)."""

    enabled = False
    nothing = contextlib.nullcontext()

    def session(self, protocol: str, listener: str) -> None:
        pass

    def imap_timer(self, command: str) -> AbstractContextManager[Any]:
        return self.nothing

    def batch(self, jobs: int, commit_seconds: float) -> None:
        pass

    def committed(self, scratch: Mapping[str, Any]) -> None:
        pass


def metrics_for(config: Config) -> Metrics:
    return Metrics() if config.metrics.enabled else NoMetrics()


# ---------------------------------------------------------------------- scrape-time gauges
_OPEN = ("queued", "deferred")  # queue rows not final (proxy/outbound/claims.py FINAL)


def _days_left(when: float, now: float) -> float:
    return round((when - now) / 86400.0, 3)


class StateCollector(Collector):
    """Gauges read at scrape time from their truth: the database (queue, audit backlog,
    whitelist, directory), the certificate file and the verifier's CRLs."""

    def __init__(self, engine: Engine, config: Config,
                 crl_status: Callable[[], Iterable[Mapping[str, object]]] | None = None) -> None:
        self.engine = engine
        self.config = config
        self.crl_status = crl_status

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        with self.engine.connect() as conn:
            yield from self._queue(conn, now)
            yield from self._backlog(conn)
            yield from self._whitelist(conn, now)
            yield from self._directory(conn)
        yield from self._certificates(now)

    def _queue(self, conn: Any, now: float) -> Iterator[Metric]:
        q = db.outbound_queue
        depth = GaugeMetricFamily("mss_queue_depth", "Messages waiting in the outbound queue, "
                                  "per destination domain", labels=["destination"])
        oldest = GaugeMetricFamily("mss_queue_oldest_age_seconds", "Age of the oldest "
                                   "waiting message, per destination domain",
                                   labels=["destination"])
        rows = conn.execute(select(q.c.domain, func.count(), func.min(q.c.created_at))
                            .where(q.c.status.in_(_OPEN)).group_by(q.c.domain))
        for domain, count, first in rows:
            depth.add_metric([domain], count)
            oldest.add_metric([domain], max(0.0, now - float(first)))
        yield depth
        yield oldest

    def _backlog(self, conn: Any) -> Iterator[Metric]:
        backlog = GaugeMetricFamily("mss_audit_backlog", "Audit records not yet shipped, per "
                                    "destination (audit.destinations)", labels=["destination"])
        names = [d.name for d in self.config.audit.destinations]
        if names:
            newest = int(conn.execute(select(func.max(db.audit_log.c.id))).scalar() or 0)
            t = db.audit_ship_cursor
            shipped = dict(conn.execute(select(t.c.destination, t.c.last_id)
                                        .where(t.c.destination.in_(names))).all())
            for name in names:  # ids are the chain's order: newest - cursor records after it
                backlog.add_metric([name], max(0, newest - int(shipped.get(name, 0))))
        yield backlog

    def _whitelist(self, conn: Any, now: float) -> Iterator[Metric]:
        t = db.whitelist_versions
        row = conn.execute(select(t.c.id, t.c.imported_at, t.c.entries)
                           .where(t.c.active.is_(True)).order_by(t.c.id.desc()).limit(1)).first()
        version = GaugeMetricFamily("mss_whitelist_version", "Version id of the whitelist in "
                                    "force (0: none)")
        age = GaugeMetricFamily("mss_whitelist_age_seconds", "Seconds since the whitelist in "
                                "force was imported")
        entries = GaugeMetricFamily("mss_whitelist_entries", "Entries of the whitelist in force")
        version.add_metric([], row.id if row else 0)
        entries.add_metric([], row.entries if row else 0)
        if row is not None:
            age.add_metric([], max(0.0, now - float(row.imported_at)))
        yield from (version, age, entries)

    def _directory(self, conn: Any) -> Iterator[Metric]:
        t = db.directory_runs
        last = conn.execute(select(func.max(t.c.finished_at)).where(t.c.status == "ok")).scalar()
        count = conn.execute(select(func.count()).select_from(db.directory_entries)).scalar()
        synced = GaugeMetricFamily("mss_directory_last_sync_timestamp_seconds", "End of the "
                                   "last successful directory sync (Unix time; absent: never)")
        if last is not None:
            synced.add_metric([], float(last))
        entries = GaugeMetricFamily("mss_directory_entries", "Entries of the synced directory")
        entries.add_metric([], int(count or 0))
        yield synced
        yield entries

    def _certificates(self, now: float) -> Iterator[Metric]:
        cert = GaugeMetricFamily("mss_certificate_expiry_days", "Days until the server "
                                 "certificate (tls.cert_file) expires", labels=["certificate"])
        try:
            leaf = x509.load_pem_x509_certificate(self.config.tls.cert_file.read_bytes())
            cert.add_metric(["server"], _days_left(leaf.not_valid_after_utc.timestamp(), now))
        except (OSError, ValueError):
            pass  # absent: the rule "absent(mss_certificate_expiry_days)" sees it
        yield cert
        crl = GaugeMetricFamily("mss_crl_expiry_days", "Days until each CRL's nextUpdate "
                                "(pki.crl_files, pki.crl_urls)", labels=["source"])
        for status in self.crl_status() if self.crl_status else ():
            when = status.get("next_update")
            if isinstance(when, str):
                crl.add_metric([str(status["source"])],
                               _days_left(datetime.fromisoformat(when).timestamp(), now))
        yield crl
