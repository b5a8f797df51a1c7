"""Alembic's entry point: runs the revisions on the connection mss/schema.py hands over.

No ``alembic.ini`` and no URL here: :func:`mss.schema.upgrade` opens the transaction, takes
the schema lock and passes the connection in ``config.attributes["connection"]``, so the
whole upgrade is one transaction (PostgreSQL DDL is transactional; on SQLite it is too,
inside BEGIN IMMEDIATE).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection


def run() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("mss migrations run through mss.schema.upgrade (no alembic.ini)")
    # SQLite alters little in place: ALTERs other than ADD COLUMN are "move and copy" batch
    # operations (https://www.sqlite.org/lang_altertable.html, "other kinds of changes")
    context.configure(connection=connection,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():  # joins the caller's transaction
        context.run_migrations()


# Alembic executes this file under a module name of its own; imported as mss.migrations.env
# (tools walking the package) it does nothing
if __name__ != "mss.migrations.env":
    run()
