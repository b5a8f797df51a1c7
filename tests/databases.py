"""A database with the schema, on either backend, for tests that build their own engine
(no node): a SQLite file in the test's directory, or a PostgreSQL database of its own
copied from a per-process template that already holds the schema (``CREATE DATABASE ...
TEMPLATE``: milliseconds, where creating the schema takes a second of DDL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine

from mss import db

_TEMPLATE: list[str] = []  # the name of this process's schema template database
_TEMPLATE_LOCK = threading.Lock()


def _schema_template() -> str:
    """A PostgreSQL database holding the empty schema, made once per test process; nobody
    stays connected to it (a template that is in use cannot be copied)."""
    from tests.postgres import shared_cluster

    with _TEMPLATE_LOCK:
        if not _TEMPLATE:
            cluster = shared_cluster()
            name = cluster.create_database("schema")
            engine = db.make_engine(cluster.url(name))
            try:
                db.create_schema(engine)
            finally:
                engine.dispose()
            _TEMPLATE.append(name)
        return _TEMPLATE[0]


def schema_url(backend: str, directory: Path, name: str = "mss") -> str:
    """The URL of a new database holding the schema: ``directory/name.db`` on SQLite, a new
    database on this process's PostgreSQL server otherwise."""
    if backend == "sqlite":
        url = f"sqlite:///{directory / f'{name}.db'}"
        engine = db.make_engine(url)
        try:
            db.create_schema(engine)
        finally:
            engine.dispose()
        return url
    assert backend == "postgresql", f"unknown backend {backend!r}"
    from tests.postgres import shared_cluster

    cluster = shared_cluster()
    return cluster.url(cluster.create_database(name, template=_schema_template()))


@contextmanager
def schema_engine(backend: str, directory: Path, name: str = "mss") -> Iterator[Engine]:
    """A writer engine on a new database with the schema, disposed on exit (a PostgreSQL
    test that leaves its pool open holds server connections until the process ends)."""
    engine = db.make_engine(schema_url(backend, directory, name))
    try:
        yield engine
    finally:
        engine.dispose()


def postgresql_dump(url: str) -> bytes:
    """Every row of a PostgreSQL database as ``pg_dump --data-only`` writes it (what a
    search of the database for plaintext reads; the server's files hold every test's
    databases)."""
    import subprocess

    from tests.postgres import pg_bindir

    bindir = pg_bindir()
    assert bindir is not None
    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    return subprocess.run([str(bindir / "pg_dump"), "--data-only", "-d", plain],
                          capture_output=True, check=True, timeout=60).stdout


def postgresql_wal(url: str) -> bytes:
    """The server's write-ahead log segments (pg_wal): every change any database of the
    cluster committed lately, in the bytes that reach the disk."""
    from tests.postgres import shared_cluster

    cluster = shared_cluster()
    assert f":{cluster.port}/" in url, "not a database of this process's server"
    return b"".join(p.read_bytes() for p in sorted((cluster.data / "pg_wal").iterdir())
                    if p.is_file())
