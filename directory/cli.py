"""``mss directory ...``: synchronise and query the professional directory."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import func, or_, select

from directory.publish import desired_entries, publish, to_ldif
from directory.sources import SyncError
from directory.sync import DirectorySync, RunReport
from mss import db
from mss.cli_output import JSON_OPTION, Column, emit, print_json, when
from mss.cli_support import actor, fail, node
from mss.config import DEFAULT_ATTRIBUTES, read_secret
from mss.mailstore import mailboxes

directory_app = typer.Typer(no_args_is_help=True, help="The professional directory (LDAP).")


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def _report(report: RunReport) -> None:
    print(f"{report.kind} sync from {report.server}: {report.entries} entries, "
          f"{report.added} added, {report.changed} changed, {report.removed} removed, "
          f"{report.rejected} rejected, {report.seconds:.1f} s")
    for problem in report.rejects:
        print(f"rejected: {problem}", file=sys.stderr)


@directory_app.command("sync")
def directory_sync(
    ctx: typer.Context,
    full: Annotated[bool, typer.Option("--full", help="Full sync (detects deletions).")] = False,
) -> None:
    """Synchronise now: incremental (modifyTimestamp) unless --full or a full one is due."""
    with node(ctx) as app:
        if app.config.directory is None:
            fail("no [directory] section in the configuration")
        sync = DirectorySync(app.engine, app.config.directory, actor=actor())
        do_full = full or sync.needs_full()
        try:
            if sys.stderr.isatty():
                from rich.progress import Progress, SpinnerColumn, TextColumn

                with Progress(SpinnerColumn(), TextColumn("{task.description}"),
                              TextColumn("{task.completed} entries"), transient=True) as bar:
                    task = bar.add_task("full sync" if do_full else "incremental sync")

                    def tick(count: int) -> None:
                        bar.update(task, completed=count)

                    report = sync.full(tick) if do_full else sync.incremental(tick)
            else:
                def line(count: int) -> None:
                    print(f"... {count} entries", file=sys.stderr)

                report = sync.full(line) if do_full else sync.incremental(line)
        except SyncError as exc:
            fail(f"directory sync failed, last good directory kept: {exc}")
    _report(report)


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


RUN_COLUMNS = (Column("id", header="run", justify="right"), Column("kind"), Column("status"),
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
    if row is None:
        fail(f"{address} is not in the directory")
    if json_out:
        print_json({c.name: getattr(row, c.name) for c in e.columns if c.name != "digest"})
        return
    for column in e.columns:
        if column.name != "digest":
            value = getattr(row, column.name)
            print(f"{column.name}: {_when(value) if column.name == 'updated_at' else value}")


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
