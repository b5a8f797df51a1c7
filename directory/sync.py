"""Synchronise the professional directory from one :class:`directory.sources.Source`.

Whatever the source (LDAP: :mod:`directory.ldap_source`; the national extraction:
:mod:`directory.extraction`; the FHIR API), a full run streams the source's rows into a
staging table in bounded batches → validation (no mail, invalid address, a mail held by two
entries) → one transaction that counts what was added, changed and removed, swaps the
staging rows in, records which mailboxes that source listed (``directory_seen``, for
``mss directory reconcile``), the run and its audit record. Any failure before that commit
leaves the last good directory in place and records the run as failed. Incremental run (a
source that can): rows changed after that source's last mark are upserted; deletions wait
for the next full run.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, literal, select, update

from audit.events import Event, Outcome
from audit.journal import AuditRecord, append
from directory.ldap_source import SKEW_MARGIN as SKEW_MARGIN  # re-exported: older callers
from directory.ldap_source import LdapSource
from directory.ldap_source import ldap_connection as ldap_connection
from directory.sources import Rejected, Row, Source, SyncError
from mss import db
from mss.addresses import AddressError, normalize_address
from mss.config import DIRECTORY_FIELDS, DirectoryConfig

BATCH = 5000
MAX_REPORTED = 20
Progress = Callable[[int], None]
# a longer value is cut (PostgreSQL refuses it, and one long name must not fail a run)
_WIDTHS: Mapping[str, int] = MappingProxyType({
    c.name: c.type.length for c in db.directory_staging.columns  # type: ignore[attr-defined]
    if c.name in DIRECTORY_FIELDS and c.name != "mail" and getattr(c.type, "length", None)})
_STAGED = tuple(c.name for c in db.directory_staging.columns)


@dataclass
class RunReport:
    run_id: int
    kind: str
    source: str = "ldap"
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


def digest(row: Row) -> str:
    """Change detection between runs: a hash of the mapped fields."""
    text = "\x1f".join(str(row.get(k) or "") for k in DIRECTORY_FIELDS)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def validate(row: Row) -> str | None:
    """Why the row cannot be used, or None; named by the row's ``where`` (a line number)
    when the source gave one, else its dn."""
    where = row.pop("where", None) or row["dn"]
    if not row["mail"]:
        return f"{where}: no mail"
    try:
        normalize_address(row["mail"])
    except AddressError as exc:
        return f"{where}: {exc}"
    return None


def make_source(config: DirectoryConfig) -> Source:
    """The source ``[directory] source`` names."""
    if config.source == "extraction":
        from directory.extraction import ExtractionSource

        assert config.extraction is not None  # DirectoryConfig.checked
        return ExtractionSource.from_config(config.extraction)
    if config.source == "fhir":
        from directory.fhir import FhirSource

        assert config.fhir is not None  # DirectoryConfig.checked
        return FhirSource(config.fhir)
    if config.source == "ldap":
        return LdapSource(config)
    raise SyncError(f"directory.source = {config.source!r} is unknown")


def origin(dn: str) -> str:
    """The source an entry came from: the extraction's and the FHIR API's rows are named
    "<source>:..." (directory/extraction.py, directory/fhir.py), an LDAP entry by its DN."""
    head, sep, _ = dn.partition(":")
    return head if sep and "=" not in head else "ldap"


class DirectorySync:
    def __init__(self, engine: Engine, config: DirectoryConfig, actor: str = "mss",
                 source: Source | None = None) -> None:
        self.engine = engine
        self.config = config
        self.source = source if source is not None else make_source(config)
        self.actor = actor

    # ------------------------------------------------------------------ runs
    def _start(self, kind: str) -> RunReport:
        with self.engine.begin() as conn:
            key = conn.execute(insert(db.directory_runs).values(
                kind=kind, source=self.source.name, started_at=time.time(),
                status="running")).inserted_primary_key
        assert key is not None
        return RunReport(run_id=int(key[0]), kind=kind, source=self.source.name)

    def _run_values(self, report: RunReport) -> dict[str, Any]:
        return {"finished_at": time.time(), "status": report.status, "server": report.server,
                "entries": report.entries, "added": report.added, "changed": report.changed,
                "removed": report.removed, "rejected": report.rejected,
                "high_water": report.high_water, "error": report.error}

    def _audit(self, report: RunReport, outcome: Outcome) -> AuditRecord:
        return AuditRecord(Event.DIRECTORY_SYNC, outcome, actor=self.actor, reason=report.error,
                           detail={"run": report.run_id, "kind": report.kind,
                                   "source": report.source,
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

    def last_ok(self, conn: Connection, source: str | None = None) -> dict[str, Any] | None:
        """The last successful run (of *source* when given)."""
        r = db.directory_runs
        query = select(r).where(r.c.status == "ok")
        if source is not None:
            query = query.where(r.c.source == source)
        row = conn.execute(query.order_by(r.c.id.desc()).limit(1)).first()
        return dict(row._mapping) if row else None

    def needs_full(self) -> bool:
        """No full run (of any source: an extraction import is a full load) for full_every
        seconds, or a source that only does full runs."""
        if not self.source.incremental:
            return True
        with self.engine.connect() as conn:
            r = db.directory_runs
            last_full = conn.execute(select(func.max(r.c.finished_at)).where(
                (r.c.status == "ok") & (r.c.kind == "full"))).scalar()
        return last_full is None or time.time() - last_full >= self.config.full_every

    @contextlib.contextmanager
    def _failures(self, report: RunReport, t0: float) -> Iterator[None]:
        """Any failure of a run: record it as failed, keep the last good directory."""
        try:
            yield
        except SyncError as exc:
            raise self._fail(report, str(exc), t0) from None
        except OSError as exc:
            raise self._fail(report, f"directory read failed: {type(exc).__name__}: {exc}",
                             t0) from None

    def _reject(self, report: RunReport, problem: str) -> None:
        report.rejected += 1
        if len(report.rejects) < MAX_REPORTED:
            report.rejects.append(problem)

    def _checked(self, report: RunReport, item: Row | Rejected) -> Row | None:
        """The row with its digest, or None (rejected and reported)."""
        if isinstance(item, Rejected):
            self._reject(report, str(item))
            return None
        problem = validate(item)
        if problem:
            self._reject(report, problem)
            return None
        for name, width in _WIDTHS.items():
            value = item.get(name)
            if value is not None and len(value) > width:
                item[name] = value[:width]
        item["digest"] = digest(item)
        return item

    # ------------------------------------------------------------------ full
    def full(self, progress: Progress | None = None) -> RunReport:
        report = self._start("full")
        t0 = time.monotonic()
        started = time.time()
        with self._failures(report, t0):
            with self.engine.begin() as conn:
                conn.execute(delete(db.directory_staging))
            report.server = self.source.open()
            batch: list[Row] = []
            try:
                for item in self.source.rows(None):
                    row = self._checked(report, item)
                    if row is None:
                        continue
                    batch.append(row)
                    report.entries += 1
                    if len(batch) >= BATCH:
                        self._stage(batch)
                        batch = []
                        if progress:
                            progress(report.entries)
                report.high_water = self.source.high_water(started)
            finally:
                self.source.close()
            self._stage(batch)
            if progress:
                progress(report.entries)
            self._drop_duplicates(report)
            if report.rejected and self.config.reject_invalid:
                raise SyncError(f"{report.rejected} invalid entries (directory.reject_invalid)")
            self._swap(report, t0)
        return report

    def _stage(self, rows: list[Row]) -> None:
        """One batch into staging: the driver's executemany on tuples (a million rows: the
        per-row parameter processing of a Core insert cost a third of the run)."""
        if not rows:
            return
        with self.engine.begin() as conn:
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            conn.exec_driver_sql(
                f"INSERT INTO directory_staging ({', '.join(_STAGED)}) "
                f"VALUES ({', '.join([mark] * len(_STAGED))})",
                [tuple(row.get(c) for c in _STAGED) for row in rows])

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
        """Staging in force, in one transaction: the removed and changed entries deleted,
        the new and changed ones inserted (a day's changes, not a million rows, rewritten),
        this source's list of mailboxes brought level the same way."""
        e, s, seen = db.directory_entries, db.directory_staging, db.directory_seen
        in_staging = select(s.c.dn).where(s.c.dn == e.c.dn).exists()
        same = select(e.c.dn).where(e.c.dn == s.c.dn, e.c.digest == s.c.digest).exists()
        with self.engine.begin() as conn:
            report.added = int(conn.execute(select(func.count()).select_from(s).where(
                ~select(e.c.dn).where(e.c.dn == s.c.dn).exists())).scalar() or 0)
            report.removed = int(conn.execute(select(func.count()).select_from(e).where(
                ~in_staging)).scalar() or 0)
            report.changed = int(conn.execute(select(func.count()).select_from(
                s.join(e, e.c.dn == s.c.dn)).where(e.c.digest != s.c.digest)).scalar() or 0)
            if report.removed:
                conn.execute(delete(e).where(~in_staging))
            if report.changed:
                conn.execute(delete(e).where(select(s.c.dn).where(
                    s.c.dn == e.c.dn, s.c.digest != e.c.digest).exists()))
            columns = [c.name for c in s.columns]
            conn.execute(insert(e).from_select(
                [*columns, "updated_at"],
                select(*[s.c[c] for c in columns], literal(time.time())).where(~same)))
            # what this source lists, as of this run (mss directory reconcile)
            conn.execute(delete(seen).where(seen.c.source == report.source, ~select(
                s.c.mail).where(s.c.mail == seen.c.mail).exists()))
            conn.execute(insert(seen).from_select(["source", "mail"], select(
                literal(report.source), s.c.mail).where(~select(seen.c.mail).where(
                    seen.c.source == report.source, seen.c.mail == s.c.mail).exists())))
            conn.execute(delete(s))
            report.status = "ok"
            report.seconds = time.monotonic() - t0
            conn.execute(update(db.directory_runs).where(db.directory_runs.c.id == report.run_id)
                         .values(**self._run_values(report)))
            append(conn, [self._audit(report, Outcome.SUCCESS)])

    # ------------------------------------------------------------------ incremental
    def incremental(self, progress: Progress | None = None) -> RunReport:
        """Rows changed since this source's last mark; a full run when the source cannot
        tell (no mark yet, or a source of full loads only)."""
        if not self.source.incremental:
            return self.full(progress)
        with self.engine.connect() as conn:
            last = self.last_ok(conn, self.source.name)
        if last is None or not last.get("high_water"):
            return self.full(progress)
        report = self._start("incremental")
        t0 = time.monotonic()
        started = time.time()
        with self._failures(report, t0):
            report.server = self.source.open()
            try:
                with self.engine.begin() as conn:
                    came_back: set[str] = set()  # dns of the rows this run read
                    for item in self.source.rows(last["high_water"]):
                        row = self._checked(report, item)
                        if row is not None:
                            came_back.add(row["dn"])
                        if row is not None and self._upsert(conn, report, row):
                            report.entries += 1
                            if progress and report.entries % 1000 == 0:
                                progress(report.entries)
                    self._drop_gone(conn, report, came_back)
                    report.high_water = self.source.high_water(started) or last["high_water"]
                    report.status = "ok"
                    report.seconds = time.monotonic() - t0
                    conn.execute(update(db.directory_runs)
                                 .where(db.directory_runs.c.id == report.run_id)
                                 .values(**self._run_values(report)))
                    append(conn, [self._audit(report, Outcome.SUCCESS)])
            finally:
                self.source.close()
        return report

    def _drop_gone(self, conn: Connection, report: RunReport, came_back: set[str]) -> None:
        """A source that names the records that changed (FHIR: the resources, each holding
        one or more mailboxes) lets an incremental run drop at once the mailboxes a changed
        record no longer holds; other sources' deletions wait for the next full run."""
        holders: set[str] = getattr(self.source, "holders", set())
        e, seen = db.directory_entries, db.directory_seen
        for prefix in sorted(holders):
            gone = [(dn, mail) for dn, mail in conn.execute(
                select(e.c.dn, e.c.mail).where(e.c.dn.startswith(prefix, autoescape=True)))
                if dn not in came_back]
            for dn, mail in gone:
                conn.execute(delete(e).where(e.c.dn == dn))
                conn.execute(delete(seen).where((seen.c.source == report.source)
                                                & (seen.c.mail == mail)))
            report.removed += len(gone)

    def _upsert(self, conn: Connection, report: RunReport, row: Row) -> bool:
        """Apply one changed row; False when rejected or unchanged."""
        e, seen = db.directory_entries, db.directory_seen
        dn = row["dn"]
        found = conn.execute(select(e.c.dn).where(e.c.mail == row["mail"])).scalar()
        holder = str(found) if found is not None and found != dn else None
        if holder is not None and origin(holder) == report.source:  # two entries, one source
            self._reject(report, f"{row['mail']} is held by {holder} and {dn}")
            return False
        if conn.execute(select(seen.c.mail).where(
                (seen.c.source == report.source) & (seen.c.mail == row["mail"]))).first() is None:
            conn.execute(insert(seen).values(source=report.source, mail=row["mail"]))
        if holder is not None:  # another source's entry (the last extraction): this one wins
            conn.execute(delete(e).where(e.c.dn == holder))
            report.changed += 1
            conn.execute(insert(e).values(**row, updated_at=time.time()))
            return True
        old = conn.execute(select(e.c.digest).where(e.c.dn == dn)).scalar()
        if old == row["digest"]:
            return False
        if old is None:
            report.added += 1
            conn.execute(insert(e).values(**row, updated_at=time.time()))
        else:
            report.changed += 1
            conn.execute(update(e).where(e.c.dn == dn).values(**row, updated_at=time.time()))
        return True
