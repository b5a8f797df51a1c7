"""The schema version of a database, and bringing it to this mss's (Alembic, docs/database.md).

Two paths. Every command and ``mss serve`` only *check* (:func:`require_current`): one read
of ``alembic_version`` compared with :data:`HEAD`, without importing Alembic (the CLI's
start time, tests/test_cli.py). ``mss init``, ``mss db upgrade`` and
:func:`mss.db.create_schema` *upgrade* (:func:`upgrade`): Alembic runs the revisions of
mss/migrations/versions in one transaction, under the schema lock.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from mss.locks import xact_lock

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

# The newest revision of mss/migrations/versions: what this code reads and writes. A new
# revision moves it (tests/test_migrations.py checks it against Alembic's computed head).
HEAD = "0017"
MIGRATIONS = str(Path(__file__).resolve().parent / "migrations")
VERSION_TABLE = "alembic_version"
LEGACY_MARK = "master_keys"  # a table every mss database made before migrations holds
SCHEMA_LOCK = "schema"  # mss.locks: one upgrade at a time across nodes


class SchemaMismatch(Exception):
    """The database's schema is not this code's: one line naming the command to run."""


class NotInitialised(SchemaMismatch):
    """The database holds no mss schema, or no node keys: ``mss init`` was never run."""


def head() -> str:
    """The head revision as Alembic computes it from mss/migrations/versions."""
    heads = _scripts().get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"mss/migrations has {len(heads)} heads {heads}: one chain only")
    return heads[0]


def current(conn: Connection) -> str | None:
    """The database's revision; None when it has no ``alembic_version`` table (an empty
    database, or one made by an mss older than migrations)."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def tables(conn: Connection) -> list[str]:
    """The tables the database holds (its default schema), sorted."""
    return sorted(inspect(conn).get_table_names())


def require_current(engine: Engine) -> None:
    """Raise :class:`SchemaMismatch` unless the database is at :data:`HEAD`."""
    with engine.connect() as conn:
        revision = current(conn)
        if revision == HEAD:
            return
        if revision is None:
            if LEGACY_MARK not in tables(conn):
                raise NotInitialised(f"database {where(engine)} holds no mss schema: "
                                     "run mss init")
            raise SchemaMismatch(f"database schema predates migrations (an older mss): "
                                 f"run mss db upgrade (to {HEAD})")
    raise SchemaMismatch(describe(revision))


def where(engine: Engine) -> str:
    """The database of *engine*, for messages: its URL without the password."""
    return engine.url.render_as_string(hide_password=True)


def describe(revision: str) -> str:
    """Why *revision* (not the head) is refused, and what to do."""
    if revision in known_revisions():
        return (f"database schema {revision} is older than this mss ({HEAD}): "
                "run mss db upgrade")
    return (f"database schema {revision} is newer than this mss ({HEAD}) or unknown to it: "
            "upgrade mss")


def known_revisions() -> set[str]:
    """The revisions this mss upgrades from: HEAD and its ancestors (imports Alembic:
    mismatches only)."""
    return {script.revision for script in _scripts().iterate_revisions(HEAD, "base")}


def upgrade(engine: Engine, *, then: Callable[[Connection, str | None, str], None] | None = None
            ) -> tuple[str | None, str]:
    """Bring the database to :data:`HEAD`; (revision before, revision after).
    *then(conn, before, after)* runs in the same transaction (the audit record of
    ``mss db upgrade``: committed with the change or not at all).

    One transaction under the schema lock (PostgreSQL advisory lock; SQLite's BEGIN
    IMMEDIATE), so two nodes upgrading at once run the revisions once. On SQLite foreign
    keys are off meanwhile and checked before commit, as the SQLite procedure for schema
    changes asks (https://www.sqlite.org/lang_altertable.html, section 7)."""
    from alembic import command

    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            _pragma(conn, "PRAGMA foreign_keys=OFF")  # outside any transaction, or ignored
        try:
            with conn.begin():
                xact_lock(conn, SCHEMA_LOCK)
                before = current(conn)
                if before != HEAD:
                    if before is not None and before not in known_revisions():
                        raise SchemaMismatch(describe(before))
                    config = _config()
                    config.attributes["connection"] = conn
                    command.upgrade(config, HEAD)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
                    if broken is not None:
                        raise RuntimeError(f"schema upgrade broke a foreign key: {tuple(broken)}")
                after = current(conn)
                assert after is not None
                if then is not None:
                    then(conn, before, after)
        finally:
            if sqlite:
                _pragma(conn, "PRAGMA foreign_keys=ON")
    return before, after


def _pragma(conn: Connection, statement: str) -> None:
    raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.execute(statement)


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return config


def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())
