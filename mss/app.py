"""Opening a node's state: configuration, database engines, master key and keyring.

Shared by the CLI and ``mss serve``; a wrong or missing master key raises
:class:`mss.crypto.MasterKeyError` here, before anything else happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DBAPIError

from audit.journal import AuditRecord, append
from mss import crypto, db
from mss.config import Config, load_config
from mss.db import create_schema, make_engine, unusable
from mss.mailstore import names as folder_names
from mss.schema import NotInitialised, require_current, where


@dataclass
class App:
    config: Config
    engine: Engine  # writer: BEGIN IMMEDIATE transactions
    reader: Engine  # readers: autocommit statements
    keyring: crypto.Keyring

    def audit(self, *records: AuditRecord) -> None:
        """Write audit records in a transaction of their own (CLI refusals)."""
        with self.engine.begin() as conn:
            append(conn, records)

    def close(self) -> None:
        self.engine.dispose()
        self.reader.dispose()


def open_app(config_path: Path | str, *, init: bool = False) -> App:
    """Raises ConfigError, MasterKeyError, DatabaseUnusable or SchemaMismatch (one line
    each). The database must be at this code's schema and initialised (a queue key:
    ``mss init``); *init* (``mss init`` only) brings its schema to the head instead and
    asks for no key (init creates them)."""
    config = load_config(config_path)
    provider = crypto.FileKeyProvider(config.master_key_file)
    engine = make_engine(config.database_url)
    reader = make_engine(config.database_url, writer=False)
    try:
        if init:
            create_schema(engine)
        else:
            require_current(reader)
        keyring = crypto.Keyring(reader, provider)
        with reader.connect() as conn:
            keyring.verify_master(conn)
            if not init:
                _require_initialised(conn, reader)
        folder_names.migrate(engine, keyring)  # names written in clear by older versions
    except DBAPIError as exc:  # wrong path, not a database, corrupt pages
        engine.dispose()
        reader.dispose()
        raise unusable(config.database_url, exc) from None
    except BaseException:
        engine.dispose()
        reader.dispose()
        raise
    return App(config, engine, reader, keyring)


def _require_initialised(conn: Connection, reader: Engine) -> None:
    """A database whose schema was made but never initialised holds no queue key: mail
    would be accepted, then answered 451 ("no key 'queue' in the keyring")."""
    found = conn.execute(select(db.keyring.c.key_id)
                         .where(db.keyring.c.key_id == crypto.QUEUE_KEY_ID)).first()
    if found is None:
        raise NotInitialised(f"database {where(reader)} holds no node keys: run mss init")
