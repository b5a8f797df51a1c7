"""``mss directory ...``: synchronise and query the professional directory."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import func, or_, select

from directory import reconcile
from directory.extraction import ExtractionSource
from directory.publish import desired_entries, publish, to_ldif
from directory.sources import SyncError
from directory.sync import DirectorySync, RunReport
from mss import db
from mss.cli_output import JSON_OPTION, Column, emit, print_json, when
from mss.cli_support import actor, fail, node
from mss.config import DEFAULT_ATTRIBUTES, DirectoryConfig, ExtractionConfig, read_secret
from mss.mailstore import mailboxes

directory_app = typer.Typer(no_args_is_help=True,
                            help="The professional directory (LDAP, national extraction).")


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def _report(report: RunReport) -> None:
    print(f"{report.kind} sync from {report.server} ({report.source}): {report.entries} entries, "
          f"{report.added} added, {report.changed} changed, {report.removed} removed, "
          f"{report.rejected} rejected, {report.seconds:.1f} s")
    for problem in report.rejects:
        print(f"rejected: {problem}", file=sys.stderr)


def _run(sync: DirectorySync, full: bool) -> RunReport:
    """One run, with a progress bar on a terminal (a line per batch otherwise)."""
    if sys.stderr.isatty():
        from rich.progress import Progress, SpinnerColumn, TextColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"),
                      TextColumn("{task.completed} entries"), transient=True) as bar:
            task = bar.add_task(f"{'full' if full else 'incremental'} {sync.source.name} sync")

            def tick(count: int) -> None:
                bar.update(task, completed=count)

            return sync.full(tick) if full else sync.incremental(tick)

    def line(count: int) -> None:
        print(f"... {count} entries", file=sys.stderr)

    return sync.full(line) if full else sync.incremental(line)


@directory_app.command("sync")
def directory_sync(
    ctx: typer.Context,
    full: Annotated[bool, typer.Option("--full", help="Full sync (detects deletions).")] = False,
) -> None:
    """Synchronise now from directory.source: incremental (LDAP modifyTimestamp) unless
    --full, a full one is due or the source only loads in full (the extraction)."""
    with node(ctx) as app:
        if app.config.directory is None:
            fail("no [directory] section in the configuration")
        try:
            sync = DirectorySync(app.engine, app.config.directory, actor=actor())
            report = _run(sync, full or sync.needs_full())
        except SyncError as exc:
            fail(f"directory sync failed, last good directory kept: {exc}")
    _report(report)


@directory_app.command("import")
def directory_import(
    ctx: typer.Context,
    location: Annotated[str, typer.Argument(
        metavar="FILE|URL", help="The extraction: its ZIP or text file, or an https URL.")],
    sha256: Annotated[str | None, typer.Option(
        "--sha256", metavar="HEX", help="Refuse the file unless its SHA-256 is this.")] = None,
) -> None:
    """Load the national extraction (Extraction des BAL MSSanté) in full: staged, checked
    and swapped in like any full sync, whatever directory.source; bad lines are reported
    with their number and the last good directory stays on any failure."""
    with node(ctx) as app:
        config = app.config.directory or DirectoryConfig(source="extraction")
        ext = config.extraction or ExtractionConfig()  # its defaults: timeout, max_bytes
        try:
            source = ExtractionSource(location, sha256=sha256, ca_file=ext.ca_file,
                                      timeout=ext.timeout, max_bytes=ext.max_bytes)
            report = _run(DirectorySync(app.engine, config, actor(), source=source), True)
        except SyncError as exc:
            fail(f"directory import failed, last good directory kept: {exc}")
    _report(report)


@directory_app.command("reconcile")
def directory_reconcile(
    ctx: typer.Context,
    left: Annotated[str, typer.Argument(help="A source: extraction, fhir or ldap.")]
    = "extraction",
    right: Annotated[str | None, typer.Argument(
        help="The other (default: the one other source with a stored list).")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Addresses listed per side.")] = 100,
    json_out: JSON_OPTION = False,
) -> None:
    """Mailboxes one source lists and the other does not, each source as of its last full
    run plus later incremental ones (--json: one object with the counts and lists)."""
    with node(ctx) as app, app.reader.connect() as conn:
        known = reconcile.sources(conn)
        stored = ", ".join(known) or "none"
        if right is None:
            others = [s for s in known if s != left]
            if len(others) != 1:
                fail(f"name the source to compare {left} with (stored: {stored})")
            right = others[0]
        for name in (left, right):
            if name not in known:
                fail(f"no mailbox list stored for source {name!r} (stored: {stored}): run "
                     "a full sync or import from it first")
        result = reconcile.stored(conn, left, right, limit)
    if json_out:
        print_json(dataclasses.asdict(result))
        return
    print(f"in both {left} and {right}: {result.common}; only in {left}: {result.only_left}; "
          f"only in {right}: {result.only_right}")
    for name, count, mails in ((left, result.only_left, result.in_left_only),
                               (right, result.only_right, result.in_right_only)):
        if count:
            more = f" (first {len(mails)})" if len(mails) < count else ""
            print(f"only in {name}{more}:")
            for mail in mails:
                print(f"  {mail}")


@directory_app.command("status")
def directory_status(ctx: typer.Context, json_out: JSON_OPTION = False) -> None:
    """Counts and age of the directory in force, and its last five runs (--json: one
    object: entries, last_good_at, runs)."""
    with node(ctx) as app, app.reader.connect() as conn:
        count = conn.execute(select(func.count()).select_from(db.directory_entries)).scalar()
        runs = [dict(r._mapping) for r in conn.execute(
            select(db.directory_runs).order_by(db.directory_runs.c.id.desc()).limit(5))]
    ok = [r for r in runs if r["status"] == "ok"]
    last_good = (ok[0]["finished_at"] or ok[0]["started_at"]) if ok else None
    if json_out:
        print_json({"entries": count, "last_good_at": last_good, "runs": runs})
        return
    print(f"entries in force: {count}")
    if last_good is not None:
        import time

        print(f"last good run: {ok[0]['kind']} at {_when(last_good)} "
              f"({time.time() - last_good:.0f} s ago)")
    emit(runs, RUN_COLUMNS, json_out=False)


RUN_COLUMNS = (Column("id", header="run", justify="right"), Column("kind"), Column("source"),
               Column("status"),
               Column("started_at", header="started", format=when, min_width=10),
               Column("entries", justify="right"), Column("added", header="add", justify="right"),
               Column("changed", header="chg", justify="right"),
               Column("removed", header="del", justify="right"),
               Column("rejected", header="rej", justify="right"), Column("error"))


@directory_app.command("search")
def directory_search(ctx: typer.Context, text: str,
                     limit: Annotated[int, typer.Option("--limit")] = 50,
                     json_out: JSON_OPTION = False) -> None:
    """Find entries by name, mail, idNat, profession or city: mail, type, name, idNat,
    profession, city."""
    e = db.directory_entries
    pattern = f"%{text.lower()}%"
    with node(ctx) as app, app.reader.connect() as conn:
        rows = conn.execute(select(e).where(or_(
            e.c.mail.like(pattern), e.c.display_name.ilike(pattern), e.c.id_nat.like(pattern),
            e.c.profession.ilike(pattern), e.c.city.ilike(pattern), e.c.surname.ilike(pattern)
        )).order_by(e.c.mail).limit(limit)).all()
    emit([{c: getattr(r, c) for c in SEARCH_KEYS} for r in rows], SEARCH_COLUMNS,
         json_out=json_out)


SEARCH_KEYS = ("mail", "type", "display_name", "id_nat", "profession", "city")
SEARCH_COLUMNS = (Column("mail"), Column("type"), Column("display_name", header="name"),
                  Column("id_nat", header="idNat"), Column("profession"), Column("city"))


@directory_app.command("show")
def directory_show(ctx: typer.Context, address: str, json_out: JSON_OPTION = False) -> None:
    """Show the directory entry of one address."""
    e = db.directory_entries
    with node(ctx) as app, app.reader.connect() as conn:
        row = conn.execute(select(e).where(e.c.mail == address.lower())).first()
        seen = db.directory_seen
        listed = list(conn.execute(select(seen.c.source).where(
            seen.c.mail == address.lower()).order_by(seen.c.source)).scalars())
    if row is None:
        fail(f"{address} is not in the directory")
    if json_out:
        print_json({**{c.name: getattr(row, c.name) for c in e.columns if c.name != "digest"},
                    "sources": listed})
        return
    for column in e.columns:
        if column.name != "digest":
            value = getattr(row, column.name)
            print(f"{column.name}: {_when(value) if column.name == 'updated_at' else value}")
    print(f"sources: {', '.join(listed) or '-'}")


@directory_app.command("export")
def directory_export(ctx: typer.Context, ldif: Annotated[Path, typer.Option(
        "--ldif", help="File to write (RFC 2849).")]) -> None:
    """Write our publishable mailboxes as LDIF (liste rouge and disabled ones left out)."""
    with node(ctx) as app, app.reader.connect() as conn:
        directory = app.config.directory
        mapping = directory.attributes if directory else dict(DEFAULT_ATTRIBUTES)
        base = directory.publish.base_dn if directory and directory.publish else \
            "ou=mssante," + ",".join(f"dc={p}" for p in
                                     app.config.smtp.hostname.split(".")[1:])
        entries = list(desired_entries(mailboxes.list_mailboxes(conn)).values())
    try:
        ldif.write_text(to_ldif(entries, base, mapping), encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {ldif}: {exc.strerror}")
    print(f"{len(entries)} mailboxes written to {ldif}")


@directory_app.command("publish")
def directory_publish(
    ctx: typer.Context,
    fhir: Annotated[bool, typer.Option("--fhir", help="Publish over FHIR Patch to "
                                       "[directory.fhir] base_url (the Annuaire Santé).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="With --fhir: print the Patch "
                                          "documents, send nothing.")] = False,
) -> None:
    """Add, update and remove our mailboxes under [directory.publish] base_dn (LDAP), or in
    the national directory over FHIR Patch (--fhir)."""
    if fhir:
        _publish_fhir(ctx, dry_run)
        return
    if dry_run:
        fail("--dry-run goes with --fhir")
    with node(ctx) as app:
        directory = app.config.directory
        if directory is None or directory.publish is None:
            fail("no [directory.publish] section in the configuration")
        target = directory.publish
        password = read_secret("directory.publish", target.password_env, target.password_file)
        with app.reader.connect() as conn:
            desired = desired_entries(mailboxes.list_mailboxes(conn))
        try:
            report = publish(app.engine, desired, directory, target, password or "", actor())
        except SyncError as exc:
            fail(str(exc))
    print(f"published: {report.added} added, {report.updated} updated, {report.removed} "
          f"removed, {len(report.retyped)} re-created with a new type, {report.unchanged} "
          "unchanged")
    for address in report.retyped:
        print(f"type changed: {address} deleted and added again", file=sys.stderr)


def _publish_fhir(ctx: typer.Context, dry_run: bool) -> None:
    from directory.fhir_publish import publish_fhir

    with node(ctx) as app:
        directory = app.config.directory
        if directory is None or directory.fhir is None:
            fail("no [directory.fhir] section in the configuration")
        with app.reader.connect() as conn:
            ours = mailboxes.list_mailboxes(conn)
        try:
            report = publish_fhir(app.engine, ours, directory.fhir, actor(), dry_run=dry_run)
        except SyncError as exc:
            fail(str(exc))
    for problem in report.skipped:
        print(f"not published: {problem}", file=sys.stderr)
    if dry_run:
        for document in report.documents:
            print(document + "\n")
        print(f"dry run: {len(report.documents)} PATCH calls, {report.unchanged} unchanged")
        return
    done = ", ".join(f"{n} {action}" for action, n in sorted(report.done.items())) or "none"
    print(f"published over FHIR: {report.sent} calls ({done}), {len(report.failed)} refused, "
          f"{report.unchanged} unchanged")
    for problem in report.failed:
        print(f"refused: {problem}", file=sys.stderr)
    if report.failed:
        raise typer.Exit(1)
