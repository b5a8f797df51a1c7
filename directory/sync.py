"""Synchronise the professional directory from an LDAP v3 server (ldap3).

Full sync: paged search (RFC 2696) streamed into a staging table in bounded batches →
validation (no mail, invalid address, a mail held by two entries) → one transaction that
counts what was added, changed and removed, swaps the staging rows in, records the run and
its audit record. Any failure before that commit leaves the last good directory in place and
records the run as failed. Incremental sync: entries with ``modifyTimestamp`` at or after
the last run's high-water mark are upserted; deletions wait for the next full sync.
"""

from __future__ import annotations

import contextlib
import hashlib
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.config import set_config_parameter
from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from audit.events import Event, Outcome
from audit.journal import AuditRecord, append
from directory.sources import SyncError
from mss import db
from mss.addresses import AddressError, normalize_address
from mss.config import DIRECTORY_FIELDS, ConfigError, DirectoryConfig, cleartext_bind

BATCH = 5000
# plain dicts for entries: ldap3's case-insensitive dict costs ~12% of a full sync; we lower
# the names ourselves once per entry
set_config_parameter("CASE_INSENSITIVE_ATTRIBUTE_NAMES", False)
MAX_REPORTED = 20
Progress = Callable[[int], None]


@dataclass
class RunReport:
    run_id: int
    kind: str
    status: str = "running"
    server: str | None = None
    entries: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    rejected: int = 0
    rejects: list[str] = field(default_factory=list)
    high_water: str | None = None
    seconds: float = 0.0
    error: str | None = None


def _first(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:
        return None
    return str(value).strip() or None


def _digest(row: dict[str, Any]) -> str:
    text = "\x1f".join(str(row.get(k) or "") for k in DIRECTORY_FIELDS)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def map_entry(dn: str, attrs: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """One LDAP entry as a directory row (values as strings, mail lower-cased)."""
    row: dict[str, Any] = {"dn": dn}
    for name in DIRECTORY_FIELDS:
        row[name] = _first(attrs.get(mapping[name].lower()))
    if row["mail"]:
        row["mail"] = row["mail"].lower()
    row["liste_rouge"] = str(row["liste_rouge"]).upper() == "TRUE"
    row["digest"] = _digest(row)
    return row


def validate(row: dict[str, Any]) -> str | None:
    """Why the row cannot be used, or None."""
    if not row["mail"]:
        return f"{row['dn']}: no mail"
    try:
        normalize_address(row["mail"])
    except AddressError as exc:
        return f"{row['dn']}: {exc}"
    return None


class VerifiedTls(ldap3.Tls):  # type: ignore[misc]  # ldap3 ships no type hints
    """ldap3's Tls with the server verified in the handshake: chain against *ca_file* (None:
    the system store) and the URL's host against the certificate (RFC 4513 §3.1.3). ldap3
    itself turns ``check_hostname`` off and, left to its defaults, validates nothing."""

    def __init__(self, ca_file: Path | None) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT,
                         ca_certs_file=str(ca_file) if ca_file else None)

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        context = ssl.create_default_context(cafile=self.ca_certs_file)  # check_hostname on
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        connection.socket = context.wrap_socket(
            connection.socket, server_hostname=connection.server.host,
            do_handshake_on_connect=do_handshake)


def ldap_connection(url: str, tls: str, ca_file: Path | None, timeout: float,
                    user: str | None, password: str | None, *,
                    read_only: bool) -> ldap3.Connection:
    """A bound connection to *url* under the directory TLS policy, shared by sync and
    publication: ``ldaps://`` (or tls = "ldaps") is TLS from the first byte, tls =
    "starttls" upgrades before the bind (RFC 4513 §3); either way the server is verified
    (:class:`VerifiedTls`) before the bind request, and so the password, is sent. A
    password over plain ``ldap://`` is refused, before connecting, unless the host is
    loopback (:func:`mss.config.cleartext_bind`; the config reader refuses it first)."""
    if cleartext_bind(url, tls, bool(user and password)):
        raise ConfigError(f"directory: refusing to send a bind password in clear to {url}")
    use_ssl = url.startswith("ldaps://") or tls == "ldaps"
    server = ldap3.Server(url, use_ssl=use_ssl, connect_timeout=int(timeout),
                          tls=VerifiedTls(ca_file) if use_ssl or tls == "starttls" else None,
                          get_info=ldap3.NONE)
    conn = ldap3.Connection(server, user=user, password=password,
                            receive_timeout=int(timeout), read_only=read_only,
                            raise_exceptions=True, check_names=False)
    conn.open()
    if tls == "starttls":
        conn.start_tls()
    conn.bind()
    return conn


class LdapSource:
    """Connects to the first reachable server of the list (failover in order)."""

    def __init__(self, config: DirectoryConfig) -> None:
        self.config = config

    def connect(self) -> tuple[ldap3.Connection, str]:
        cfg = self.config
        errors = []
        for url in cfg.urls:
            try:
                return ldap_connection(url, cfg.tls, cfg.ca_file, cfg.timeout, cfg.bind_dn,
                                       cfg.password(), read_only=True), url
            except LDAPException as exc:
                errors.append(f"{url}: {type(exc).__name__}")
        raise SyncError("no directory server reachable (" + "; ".join(errors) + ")")

    def entries(self, conn: ldap3.Connection, search_filter: str
                ) -> Iterator[tuple[str, dict[str, Any]]]:
        attributes = [*{a for a in self.config.attributes.values()}, "modifyTimestamp"]
        for item in conn.extend.standard.paged_search(
                self.config.base_dn, search_filter, search_scope=ldap3.SUBTREE,
                attributes=attributes, paged_size=self.config.page_size, generator=True):
            if item.get("type") == "searchResEntry":
                # attribute names compared case-insensitively (RFC 4512 §2.5)
                yield item["dn"], {k.lower(): v for k, v in item["attributes"].items()}
        # ldap3 does not raise on sizeLimitExceeded or timeLimitExceeded: a server that cut
        # the search short must fail the run, never truncate the directory
        code = (conn.result or {}).get("result", 0)
        if code:
            raise SyncError(f"the server ended the search early: "
                            f"{conn.result.get('description')} ({code}); check its size "
                            "limits for paged searches (OpenLDAP: size.prtotal)")


SKEW_MARGIN = 5  # seconds of clock difference tolerated between us and the LDAP server


def _gt(epoch: float) -> str:
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(epoch))


def high_water(newest_seen: str | None, started: float) -> str | None:
    """The mark the next incremental run starts after (strictly): the newest modifyTimestamp
    seen, but never within SKEW_MARGIN of this run's start, where an entry could still have
    changed in the same second after we read it."""
    if newest_seen is None:
        return None
    return min(newest_seen, _gt(started - SKEW_MARGIN))


def _ts(value: Any) -> str | None:
    """modifyTimestamp (a datetime from ldap3, or GeneralizedTime text) as YYYYMMDDHHMMSSZ."""
    value = value[0] if isinstance(value, list) and value else value
    if value is None or value == []:
        return None
    if hasattr(value, "strftime"):
        return str(value.strftime("%Y%m%d%H%M%SZ"))
    return str(value)[:14] + "Z"


class DirectorySync:
    def __init__(self, engine: Engine, config: DirectoryConfig, actor: str = "mss") -> None:
        self.engine = engine
        self.config = config
        self.source = LdapSource(config)
        self.actor = actor

    # ------------------------------------------------------------------ runs
    def _start(self, kind: str) -> RunReport:
        with self.engine.begin() as conn:
            key = conn.execute(insert(db.directory_runs).values(
                kind=kind, started_at=time.time(), status="running")).inserted_primary_key
        assert key is not None
        return RunReport(run_id=int(key[0]), kind=kind)

    def _run_values(self, report: RunReport) -> dict[str, Any]:
        return {"finished_at": time.time(), "status": report.status, "server": report.server,
                "entries": report.entries, "added": report.added, "changed": report.changed,
                "removed": report.removed, "rejected": report.rejected,
                "high_water": report.high_water, "error": report.error}

    def _audit(self, report: RunReport, outcome: Outcome) -> AuditRecord:
        return AuditRecord(Event.DIRECTORY_SYNC, outcome, actor=self.actor, reason=report.error,
                           detail={"run": report.run_id, "kind": report.kind,
                                   "server": report.server, "entries": report.entries,
                                   "added": report.added, "changed": report.changed,
                                   "removed": report.removed, "rejected": report.rejected,
                                   "seconds": round(report.seconds, 3)})

    def _fail(self, report: RunReport, error: str, t0: float) -> SyncError:
        report.status, report.error = "failed", error
        report.seconds = time.monotonic() - t0
        with self.engine.begin() as conn:
            conn.execute(delete(db.directory_staging))
            conn.execute(update(db.directory_runs).where(db.directory_runs.c.id == report.run_id)
                         .values(**self._run_values(report)))
            append(conn, [self._audit(report, Outcome.SERIOUS_FAILURE)])
        return SyncError(error)

    def last_ok(self, conn: Connection) -> dict[str, Any] | None:
        r = db.directory_runs
        row = conn.execute(select(r).where(r.c.status == "ok").order_by(r.c.id.desc())
                           .limit(1)).first()
        return dict(row._mapping) if row else None

    def needs_full(self) -> bool:
        with self.engine.connect() as conn:
            r = db.directory_runs
            last_full = conn.execute(select(func.max(r.c.finished_at)).where(
                (r.c.status == "ok") & (r.c.kind == "full"))).scalar()
        return last_full is None or time.time() - last_full >= self.config.full_every

    # ------------------------------------------------------------------ full
    @contextlib.contextmanager
    def _failures(self, report: RunReport, t0: float) -> Iterator[None]:
        """Any failure of a run: record it as failed, keep the last good directory."""
        try:
            yield
        except SyncError as exc:
            raise self._fail(report, str(exc), t0) from None
        except (LDAPException, OSError) as exc:
            raise self._fail(report, f"directory read failed: {type(exc).__name__}: {exc}",
                             t0) from None

    def full(self, progress: Progress | None = None) -> RunReport:
        report = self._start("full")
        t0 = time.monotonic()
        started = time.time()
        with self._failures(report, t0):
            conn_ldap, report.server = self.source.connect()
            with self.engine.begin() as conn:
                conn.execute(delete(db.directory_staging))
            batch: list[dict[str, Any]] = []
            high = ""
            try:
                for dn, attrs in self.source.entries(conn_ldap, self.config.filter):
                    row = map_entry(dn, attrs, self.config.attributes)
                    stamp = _ts(attrs.get("modifytimestamp"))
                    if stamp and stamp > high:
                        high = stamp
                    problem = validate(row)
                    if problem:
                        self._reject(report, problem)
                        continue
                    batch.append(row)
                    report.entries += 1
                    if len(batch) >= BATCH:
                        self._stage(batch)
                        batch = []
                        if progress:
                            progress(report.entries)
            finally:
                conn_ldap.unbind()
            self._stage(batch)
            if progress:
                progress(report.entries)
            report.high_water = high_water(high or None, started)
            self._drop_duplicates(report)
            if report.rejected and self.config.reject_invalid:
                raise SyncError(f"{report.rejected} invalid entries (directory.reject_invalid)")
            self._swap(report, t0)
        return report

    def _reject(self, report: RunReport, problem: str) -> None:
        report.rejected += 1
        if len(report.rejects) < MAX_REPORTED:
            report.rejects.append(problem)

    def _stage(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(db.directory_staging), rows)

    def _drop_duplicates(self, report: RunReport) -> None:
        s = db.directory_staging
        with self.engine.begin() as conn:
            dups = conn.execute(select(s.c.mail, func.count()).group_by(s.c.mail)
                                .having(func.count() > 1)).all()
            for mail, count in dups:
                dns = list(conn.execute(select(s.c.dn).where(s.c.mail == mail)).scalars())
                self._reject(report, f"{mail} is held by {count} entries: {', '.join(dns[:3])}")
                report.rejected += count - 1
                report.entries -= count
                conn.execute(delete(s).where(s.c.mail == mail))

    def _swap(self, report: RunReport, t0: float) -> None:
        e, s = db.directory_entries, db.directory_staging
        with self.engine.begin() as conn:
            report.added = int(conn.execute(select(func.count()).select_from(s).where(
                ~select(e.c.dn).where(e.c.dn == s.c.dn).exists())).scalar() or 0)
            report.removed = int(conn.execute(select(func.count()).select_from(e).where(
                ~select(s.c.dn).where(s.c.dn == e.c.dn).exists())).scalar() or 0)
            report.changed = int(conn.execute(select(func.count()).select_from(
                s.join(e, e.c.dn == s.c.dn)).where(e.c.digest != s.c.digest)).scalar() or 0)
            conn.execute(delete(e))
            columns = [c.name for c in s.columns]
            conn.execute(insert(e).from_select(
                [*columns, "updated_at"],
                select(*[s.c[c] for c in columns], func.coalesce(time.time(), 0))))
            conn.execute(delete(s))
            report.status = "ok"
            report.seconds = time.monotonic() - t0
            conn.execute(update(db.directory_runs).where(db.directory_runs.c.id == report.run_id)
                         .values(**self._run_values(report)))
            append(conn, [self._audit(report, Outcome.SUCCESS)])

    # ------------------------------------------------------------------ incremental
    def incremental(self, progress: Progress | None = None) -> RunReport:
        with self.engine.connect() as conn:
            last = self.last_ok(conn)
        if last is None or not last.get("high_water"):
            return self.full(progress)
        report = self._start("incremental")
        t0 = time.monotonic()
        started = time.time()
        since = last["high_water"]
        # strictly after the mark: LDAP has no '>', so NOT '<=' (RFC 4515)
        search = f"(&{self.config.filter}(!(modifyTimestamp<={since})))"
        high = since
        with self._failures(report, t0):
            conn_ldap, report.server = self.source.connect()
            e = db.directory_entries
            try:
                with self.engine.begin() as conn:
                    for dn, attrs in self.source.entries(conn_ldap, search):
                        row = map_entry(dn, attrs, self.config.attributes)
                        stamp = _ts(attrs.get("modifytimestamp"))
                        if stamp and stamp > high:
                            high = stamp
                        problem = validate(row)
                        if problem is None:
                            holder = conn.execute(select(e.c.dn).where(
                                e.c.mail == row["mail"])).scalar()
                            if holder is not None and holder != dn:
                                problem = f"{row['mail']} is held by {holder} and {dn}"
                        if problem:
                            self._reject(report, problem)
                            continue
                        old = conn.execute(select(e.c.digest).where(e.c.dn == dn)).scalar()
                        if old == row["digest"]:
                            continue
                        if old is None:
                            report.added += 1
                            conn.execute(insert(e).values(**row, updated_at=time.time()))
                        else:
                            report.changed += 1
                            conn.execute(update(e).where(e.c.dn == dn)
                                         .values(**row, updated_at=time.time()))
                        report.entries += 1
                        if progress and report.entries % 1000 == 0:
                            progress(report.entries)
                    report.high_water = high_water(high, started)
                    report.status = "ok"
                    report.seconds = time.monotonic() - t0
                    conn.execute(update(db.directory_runs)
                                 .where(db.directory_runs.c.id == report.run_id)
                                 .values(**self._run_values(report)))
                    append(conn, [self._audit(report, Outcome.SUCCESS)])
            finally:
                conn_ldap.unbind()
        return report
