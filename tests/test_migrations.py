"""Schema versions (docs/database.md): Alembic revisions in mss/migrations, ``mss db status``
and ``mss db upgrade``, and the commands that refuse a schema that is not theirs, on SQLite
and on a real PostgreSQL server (tests/postgres.py).

A *newer mss* is this source tree copied with one more revision (its HEAD moved): the real
CLI of that copy, run on a node of this one, is the release that brings a migration.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import (
    Column,
    Engine,
    ForeignKey,
    Index,
    MetaData,
    Table,
    UniqueConstraint,
    insert,
    inspect,
    make_url,
    select,
    text,
)

from mss import db, schema
from mss.config import load_config
from tests import node as nodes
from tests.node import CHILD_ENV, DOMAIN, MSS, REPO, Node, make_node
from tests.older import LATER_COLUMNS, LATER_INDEXES, LATER_TABLES, as_made_by_main
from tests.test_cli import one_line_error

BACKENDS = nodes.BACKENDS  # the backend fixture: each test on SQLite and PostgreSQL
PROBE = "zz_probe"  # the newer mss's revision
PROBE_REVISION = '''"""Test revision: a newer mss adds a table and a column."""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("probe_notes", sa.Column("id", sa.Integer(), primary_key=True),
                    sa.Column("note", sa.Text(), nullable=False))
    op.add_column("domains", sa.Column("probe_note", sa.Text()))


def downgrade() -> None:
    op.drop_column("domains", "probe_note")
    op.drop_table("probe_notes")
'''


def new_database(backend: str, tmp_path: Path, name: str = "m") -> str:
    """The URL of a new, empty database."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / f'{name}.db'}"
    from tests.postgres import shared_cluster

    cluster = shared_cluster()
    return cluster.url(cluster.create_database(name))


def schema_differences(engine: Engine) -> list[object]:
    """What Alembic's comparison finds between the database and mss/db.py's metadata."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        return [d for d in compare_metadata(MigrationContext.configure(conn), db.metadata)
                if not (d[0] == "remove_table" and d[1].name == schema.VERSION_TABLE)]


def revision_of(node: Node) -> str | None:
    engine = db.make_engine(load_config(node.config).database_url, writer=False)
    try:
        with engine.connect() as conn:
            return schema.current(conn)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the chain

def test_head_constant_is_alembics_single_head() -> None:
    """HEAD (compared by every command without importing Alembic) is the chain's head, and
    the chain has one head: a revision added with down_revision "0001" beside another must
    be re-chained (the migrations are one line)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", schema.MIGRATIONS)
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1, f"mss/migrations has several heads: {heads}"
    assert schema.head() == heads[0] == schema.HEAD
    assert "0001" in schema.known_revisions()


def test_migrations_make_exactly_the_schema_of_mss_db(backend: str, tmp_path: Path) -> None:
    """The revisions, run on an empty database, give the tables, columns, types and
    indexes of mss/db.py's metadata: a table added there needs a revision too."""
    engine = db.make_engine(new_database(backend, tmp_path))
    try:
        db.create_schema(engine)
        assert schema_differences(engine) == []
        with engine.connect() as conn:
            assert schema.current(conn) == schema.HEAD
        db.create_schema(engine)  # at the head: nothing to do
    finally:
        engine.dispose()


def test_two_upgrades_at_once_run_the_revisions_once(tmp_path: Path) -> None:
    """Two nodes upgrading one PostgreSQL database at once: the schema lock serialises
    them, the second finds the head (without it: 'relation "meta" already exists')."""
    url = new_database("postgresql", tmp_path)
    engines = [db.make_engine(url) for _ in range(2)]
    results: list[tuple[str | None, str]] = []
    errors: list[BaseException] = []

    def run(engine: Engine) -> None:
        try:
            results.append(schema.upgrade(engine))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for engine in engines:
        engine.dispose()
    assert errors == []
    assert sorted(results, key=str) == sorted([(None, schema.HEAD), (schema.HEAD, schema.HEAD)],
                                              key=str)


def test_checking_the_schema_does_not_import_alembic(tmp_path: Path) -> None:
    """open_app (every command) compares alembic_version with HEAD: no Alembic import."""
    node = make_node(tmp_path)
    code = ("import sys; from mss.app import open_app; open_app(sys.argv[1]).close(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))")
    proc = subprocess.run([sys.executable, "-c", code, str(node.config)], capture_output=True,
                          text=True, cwd=REPO, timeout=120, env=CHILD_ENV, check=True)
    assert proc.stdout.strip() == "[]"


# --------------------------------------------------------------------------- mss db status

def test_fresh_node_is_at_head_and_status_says_so(fresh_node: Node) -> None:
    assert revision_of(fresh_node) == schema.HEAD
    out = fresh_node.cli("db", "status").stdout.splitlines()
    assert out[1:] == [f"current:  {schema.HEAD}", f"head:     {schema.HEAD}", "up to date"]
    url = make_url(load_config(fresh_node.config).database_url)
    assert out[0] == f"database: {url.render_as_string(hide_password=True)}"
    upgrade = fresh_node.cli("db", "upgrade").stdout
    assert upgrade.strip() == f"database schema already at {schema.HEAD}"
    assert fresh_node.audit("--event", "admin.db.upgrade") == []  # nothing changed


def test_multi_host_url_reaches_the_host_that_answers(tmp_path: Path) -> None:
    """The two-site URL of docs/database.md: libpq skips a first host that is down."""
    from tests.postgres import HOST, free_port

    node = make_node(tmp_path, backend="postgresql")
    url = make_url(nodes.database_of(node.config))
    two_sites = (f"postgresql+psycopg://{url.username}@/{url.database}?host={HOST}:{free_port()}"
                 f"&host={HOST}:{url.port}&target_session_attrs=read-write&connect_timeout=5")
    node.config.write_text(node.config.read_text().replace(str(url), two_sites))
    out = node.cli("db", "status").stdout
    assert out.endswith("up to date\n") and "target_session_attrs=read-write" in out


# --------------------------------------------------------------------------- a newer mss

@pytest.fixture(scope="module")
def newer_mss(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This source tree with one more revision after HEAD (and HEAD moved to it)."""
    root = tmp_path_factory.mktemp("newer-mss")
    for package in ("mss", "proxy", "trustspace", "directory", "audit"):
        shutil.copytree(REPO / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    versions = root / "mss" / "migrations" / "versions"
    (versions / f"{PROBE}.py").write_text(
        PROBE_REVISION.format(revision=PROBE, down=schema.HEAD), encoding="utf-8")
    source = root / "mss" / "schema.py"
    moved, count = re.subn(r'(?m)^HEAD = "[^"]*"$', f'HEAD = "{PROBE}"',
                           source.read_text(encoding="utf-8"))
    assert count == 1
    source.write_text(moved, encoding="utf-8")
    yield root


def run_mss(code: Path, node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI of the source tree *code* on *node*."""
    return subprocess.run([*MSS, "--config", str(node.config), *args], capture_output=True,
                          text=True, cwd=code, timeout=120, env=CHILD_ENV)


def test_older_schema_is_refused_by_serve_then_upgraded(fresh_node: Node, newer_mss: Path
                                                        ) -> None:
    """A node at HEAD meets a newer mss: serve refuses in one line naming mss db upgrade;
    mss db upgrade applies the revision (audited); then this (older) mss refuses the
    database in one line naming the other way out: upgrade mss."""
    before = fresh_node.cli("mailbox", "list").stdout
    older = (f"mss: error: database schema {schema.HEAD} is older than this mss ({PROBE}): "
             "run mss db upgrade")
    assert one_line_error(run_mss(newer_mss, fresh_node, "serve")) == older
    status = run_mss(newer_mss, fresh_node, "db", "status")
    assert status.returncode == 1
    assert status.stdout.splitlines()[1:] == [
        f"current:  {schema.HEAD}", f"head:     {PROBE}", older.removeprefix("mss: error: ")]

    upgraded = run_mss(newer_mss, fresh_node, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"database schema upgraded from {schema.HEAD} to {PROBE}"
    assert revision_of(fresh_node) == PROBE
    assert run_mss(newer_mss, fresh_node, "mailbox", "list").stdout == before
    records = fresh_node.audit("--event", "admin.db.upgrade")
    assert [r["detail"] for r in records] == [{"from": schema.HEAD, "to": PROBE}]

    newer = (f"mss: error: database schema {PROBE} is newer than this mss ({schema.HEAD}) or "
             "unknown to it: upgrade mss")
    for args in (["serve"], ["mailbox", "list"], ["db", "upgrade"]):
        assert one_line_error(fresh_node.cli(*args, check=False)) == newer, args
    assert fresh_node.cli("db", "status", check=False).returncode == 1
    assert revision_of(fresh_node) == PROBE


# --------------------------------------------------------------------------- pre-migrations

def test_database_of_an_older_mss_is_adopted_losing_nothing(tmp_path: Path) -> None:
    """A database made by metadata.create_all of an older shape (no alembic_version; a
    table, a nullable column and an index missing): upgraded, it keeps every row and has
    exactly the head's schema."""
    older = MetaData()
    for table in db.metadata.sorted_tables:
        if table.name == "relays" or table.name in LATER_TABLES:
            continue  # a table that version did not have
        copy = Table(table.name, older, *(
            Column(c.name, c.type, *(ForeignKey(fk.target_fullname) for fk in c.foreign_keys),
                   primary_key=c.primary_key, nullable=c.nullable, unique=c.unique)
            for c in table.columns
            if c.name != "name_sealed" and (table.name, c.name) not in LATER_COLUMNS), *(
            UniqueConstraint(*(c.name for c in u.columns)) for u in table.constraints
            if isinstance(u, UniqueConstraint) and len(u.columns) > 1))
        for index in table.indexes:
            if index.name != "ix_messages_folder_meta" and index.name not in LATER_INDEXES:
                Index(index.name, *(copy.c[c.name] for c in index.columns), unique=index.unique)
    engine = db.make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    older.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(older.tables["domains"]).values(id=1, name=DOMAIN, created_at=1.0))
        conn.execute(insert(older.tables["mailboxes"]).values(
            id=1, address=f"bob@{DOMAIN}", domain_id=1, type="PER", enabled=True,
            created_at=1.0, liste_rouge=False))
        conn.execute(insert(older.tables["folders"]).values(
            id=1, mailbox_id=1, name="INBOX", uidvalidity=7, uidnext=2, highestmodseq=3,
            subscribed=True))
    with engine.connect() as conn:
        rows = {t: conn.execute(select(older.tables[t])).all()
                for t in ("domains", "mailboxes", "folders")}
    with pytest.raises(schema.SchemaMismatch, match="predates migrations.*mss db upgrade"):
        schema.require_current(engine)
    assert {d[0] for d in schema_differences(engine)} == {"add_table", "add_column", "add_index"}

    assert schema.upgrade(engine) == (None, schema.HEAD)
    assert schema_differences(engine) == []
    schema.require_current(engine)
    with engine.connect() as conn:
        for name, kept in rows.items():
            table = db.metadata.tables[name]
            names = [c.name for c in older.tables[name].columns]
            assert conn.execute(select(*(table.c[n] for n in names))).all() == kept
        assert conn.execute(select(db.folders.c.name_sealed)).scalar() is None
        assert inspect(conn).has_table("relays")
    engine.dispose()


def make_pre_migration(node: Node) -> None:
    """Turn *node*'s database into one an older mss made: main 0b40d7e's (tests/older.py),
    and older still: no folders.name_sealed (a nullable column added later), no relays
    table, no covering index of the IMAP folder list."""
    as_made_by_main(node)
    engine = db.make_engine(load_config(node.config).database_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE relays"))
        conn.execute(text("DROP INDEX ix_messages_folder_meta"))
        conn.execute(text("ALTER TABLE folders DROP COLUMN name_sealed"))
    engine.dispose()


def test_pre_migration_node_is_refused_then_upgraded(fresh_node: Node) -> None:
    """A node an older mss made: serve refuses (one line: mss db upgrade); the upgrade
    keeps its mailboxes and its audit chain (mss audit verify passes)."""
    mailboxes = fresh_node.cli("mailbox", "list").stdout
    make_pre_migration(fresh_node)
    error = one_line_error(fresh_node.cli("serve", check=False))
    assert error == ("mss: error: database schema predates migrations (an older mss): "
                     f"run mss db upgrade (to {schema.HEAD})")
    status = fresh_node.cli("db", "status", check=False)
    assert status.returncode == 1
    assert "current:  none (made before migrations)" in status.stdout
    assert "upgrade needed: run mss db upgrade" in status.stdout
    out = fresh_node.cli("db", "upgrade").stdout
    assert out.strip() == (f"database schema upgraded from none (made before migrations) "
                           f"to {schema.HEAD}")
    assert revision_of(fresh_node) == schema.HEAD
    engine = db.make_engine(load_config(fresh_node.config).database_url, writer=False)
    assert schema_differences(engine) == []
    engine.dispose()
    assert fresh_node.cli("mailbox", "list").stdout == mailboxes
    fresh_node.cli("audit", "verify")
    records = fresh_node.audit("--event", "admin.db.upgrade")
    assert [r["detail"] for r in records] == [{"from": "none", "to": schema.HEAD}]


# --------------------------------------------------------------------------- mss init

def init(data_dir: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MSS, "init", "--data-dir", str(data_dir), "--domain", DOMAIN,
                           "--database-url", url, *extra],
                          capture_output=True, text=True, cwd=REPO, timeout=120, env=CHILD_ENV)


def test_init_refuses_a_non_empty_postgresql_database(tmp_path: Path) -> None:
    """mss init on a PostgreSQL database holding a table: one line, nothing written;
    --force drops mss's tables only (another application's stays) and initialises."""
    from tests.postgres import shared_cluster

    cluster = shared_cluster()
    name = cluster.create_database("init")
    cluster.psql("CREATE TABLE other_app (x integer); INSERT INTO other_app VALUES (7)", name)
    url = cluster.url(name)
    error = one_line_error(init(tmp_path / "a", url))
    assert "is not empty (1 tables); use --force" in error and "mss:" in error
    assert not (tmp_path / "a").exists()

    first = init(tmp_path / "a", url, "--force")
    assert first.returncode == 0, first.stderr
    node = Node(tmp_path / "a")
    assert node.cli("db", "status").stdout.endswith("up to date\n")
    node.cli("domain", "add", "autre.mssante.fr")
    assert "is not empty" in one_line_error(init(tmp_path / "b", url))

    again = init(tmp_path / "a", url, "--force")  # a second init: mss's tables dropped
    assert again.returncode == 0, again.stderr
    assert [d["domain"] for d in node.cli_json("domain", "list")] == [DOMAIN]
    assert [r["event"] for r in node.audit()] == ["admin.init", "admin.domain.add"]
    assert cluster.psql("SELECT x FROM other_app", name).strip() == "7"


def test_serve_on_an_uninitialised_postgresql_database_names_mss_init(tmp_path: Path) -> None:
    """The issue's bug: serve on a PostgreSQL database that mss init never saw accepted
    mail and answered 451 (no queue key). Now it refuses in one line naming mss init: on
    an empty database, and on one whose schema was made without init's keys."""
    node = make_node(tmp_path)
    url = new_database("postgresql", tmp_path, "bare")
    node.config.write_text(re.sub(r'(?m)^url = ".*"$', f'url = "{url}"', node.config.read_text()))
    empty = one_line_error(node.cli("serve", check=False))
    assert empty.endswith("holds no mss schema: run mss init") and "bare" in empty
    assert "run mss init" in one_line_error(node.cli("db", "upgrade", check=False))
    status = node.cli("db", "status", check=False)
    assert status.returncode == 1
    assert status.stdout.splitlines()[1:] == [
        "current:  none", f"head:     {schema.HEAD}", "no mss schema: run mss init"]

    engine = db.make_engine(url)
    db.create_schema(engine)  # tables, but no master key, no queue key
    engine.dispose()
    keyless = one_line_error(node.cli("serve", check=False))
    assert keyless.endswith("holds no node keys: run mss init")


def test_force_drops_only_the_tables_of_mss(backend: str, tmp_path: Path) -> None:
    """What ``mss init --force`` does to a database wherever it lives (PostgreSQL, or a
    SQLite file outside the data dir): mss's tables and alembic_version go, others stay."""
    from mss.cli_support import CliError
    from mss.db_cli import drop_mss_tables, require_empty_database

    url = new_database(backend, tmp_path)
    require_empty_database(url)
    engine = db.make_engine(url)
    db.create_schema(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE other_app (x integer)"))
    with pytest.raises(CliError, match=r"is not empty \(\d+ tables\); use --force"):
        require_empty_database(url)
    drop_mss_tables(url)
    with engine.connect() as conn:
        assert schema.tables(conn) == ["other_app"]
    engine.dispose()


def test_older_shape_lists_what_later_revisions_add(tmp_path: Path) -> None:
    """tests/older.py's LATER_TABLES/LATER_COLUMNS/LATER_INDEXES are exactly what the
    revisions after the baseline add: a database at 0001 differs from the head by those and
    nothing else."""
    from alembic import command

    engine = db.make_engine(f"sqlite:///{tmp_path / 'baseline.db'}")
    with engine.begin() as conn:
        config = schema._config()
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    with engine.connect() as conn:
        found = inspect(conn)
        at_baseline = {t: {c["name"] for c in found.get_columns(t)}
                       for t in found.get_table_names() if t != schema.VERSION_TABLE}
        indexes_at_baseline = {i["name"] for t in at_baseline for i in found.get_indexes(t)}
    engine.dispose()
    at_head = {t.name: {c.name for c in t.columns} for t in db.metadata.sorted_tables}
    assert set(at_head) - set(at_baseline) == set(LATER_TABLES)
    assert {(t, c) for t in at_baseline for c in at_head[t] - at_baseline[t]} == \
        set(LATER_COLUMNS)
    assert {i.name for t in db.metadata.sorted_tables if t.name in at_baseline
            for i in t.indexes} - indexes_at_baseline == set(LATER_INDEXES)
