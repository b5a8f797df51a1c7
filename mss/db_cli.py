"""``mss db status`` and ``mss db upgrade``: the schema version of the node's database
(docs/database.md); and the database checks of ``mss init``.

These commands read the configuration and the database only: no master key, no keyring, so
an operator upgrades the schema before the nodes start (or after a restore).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from mss.cli_output import JSON_OPTION, print_json
from mss.cli_support import actor, fail

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

db_app = typer.Typer(no_args_is_help=True, help="Database schema: version and migrations.")


def _engine(ctx: typer.Context) -> Engine:
    from mss.config import load_config, resolve_config_path
    from mss.db import make_engine

    config = load_config(resolve_config_path(ctx.obj.get("config") if ctx.obj else None))
    return make_engine(config.database_url)


@db_app.command("status")
def status(ctx: typer.Context, json_out: JSON_OPTION = False) -> None:
    """Show the database's schema revision and this mss's (exit 1 when they differ)."""
    from sqlalchemy.exc import DBAPIError

    from mss import schema
    from mss.db import unusable

    engine = _engine(ctx)
    try:
        with engine.connect() as conn:
            revision = schema.current(conn)
            legacy = revision is None and schema.LEGACY_MARK in schema.tables(conn)
    except DBAPIError as exc:
        raise unusable(str(engine.url), exc) from None
    finally:
        engine.dispose()
    if json_out:  # the same exit status
        print_json({"database": schema.where(engine), "current": revision,
                    "made_before_migrations": legacy, "head": schema.HEAD,
                    "up_to_date": revision == schema.HEAD})
        raise typer.Exit(0 if revision == schema.HEAD else 1)
    print(f"database: {schema.where(engine)}")
    print(f"current:  {revision or ('none (made before migrations)' if legacy else 'none')}")
    print(f"head:     {schema.HEAD}")
    if revision == schema.HEAD:
        print("up to date")
        return
    if revision is None and not legacy:
        print("no mss schema: run mss init")
    elif revision is None:
        print("upgrade needed: run mss db upgrade")
    else:
        print(schema.describe(revision))
    raise typer.Exit(1)


@db_app.command("upgrade")
def upgrade(ctx: typer.Context) -> None:
    """Apply the migrations the database lacks, in one transaction (back up first)."""
    from sqlalchemy.exc import DBAPIError

    from audit.events import Event
    from audit.journal import AuditRecord, append
    from mss import schema
    from mss.db import unusable

    def audited(conn: Connection, before: str | None, after: str) -> None:
        if before != after:  # a no-op (already at the head) changes nothing to record
            append(conn, [AuditRecord(Event.ADMIN_DB_UPGRADE, actor=actor(),
                                      detail={"from": before or "none", "to": after})])

    engine = _engine(ctx)
    try:
        with engine.connect() as conn:
            if schema.current(conn) is None and schema.LEGACY_MARK not in schema.tables(conn):
                fail(f"database {schema.where(engine)} holds no mss schema: run mss init")
        before, after = schema.upgrade(engine, then=audited)
    except DBAPIError as exc:
        raise unusable(str(engine.url), exc) from None
    finally:
        engine.dispose()
    if before == after:
        print(f"database schema already at {after}")
    else:
        print(f"database schema upgraded from {before or 'none (made before migrations)'} "
              f"to {after}")


# --------------------------------------------------------------------------- mss init

def require_empty_database(url: str) -> None:
    """Refuse a database that already holds tables (``mss init`` without --force)."""
    from pathlib import Path

    from sqlalchemy.exc import DBAPIError

    from mss import schema
    from mss.db import database_name, make_engine, unusable

    if url.startswith("sqlite:///") and not Path(database_name(url)).exists():
        return  # a new file: connecting would create it before the data dir exists
    engine = make_engine(url, writer=False)
    try:
        with engine.connect() as conn:
            found = schema.tables(conn)
    except DBAPIError as exc:
        raise unusable(url, exc) from None
    finally:
        engine.dispose()
    if found:
        fail(f"database {database_name(url)} is not empty ({len(found)} tables); use --force "
             "to drop mss's tables (destroys its mail and audit trail)")


def drop_mss_tables(url: str) -> None:
    """Drop the tables of mss's schema and ``alembic_version`` (``mss init --force``);
    any other table of the database stays. Nothing to do for a SQLite file that is gone."""
    from pathlib import Path

    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from mss import db, schema
    from mss.locks import xact_lock

    if url.startswith("sqlite:///") and not Path(db.database_name(url)).exists():
        return
    engine = db.make_engine(url)
    try:
        with engine.begin() as conn:
            xact_lock(conn, schema.SCHEMA_LOCK)
            db.metadata.drop_all(conn, checkfirst=True)
            conn.execute(text(f"DROP TABLE IF EXISTS {schema.VERSION_TABLE}"))
    except DBAPIError as exc:
        raise db.unusable(url, exc) from None
    finally:
        engine.dispose()
