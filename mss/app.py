"""Opening a node's state: configuration, database engines, master key and keyring.

Shared by the CLI and ``mss serve``; a wrong or missing master key raises
:class:`mss.crypto.MasterKeyError` here, before anything else happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from audit.journal import AuditRecord, append
from mss import crypto
from mss.config import Config, load_config
from mss.db import create_schema, make_engine, unusable
from mss.mailstore import names as folder_names


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


def open_app(config_path: Path | str) -> App:
    """Raises ConfigError, MasterKeyError or DatabaseUnusable (one line each)."""
    config = load_config(config_path)
    provider = crypto.FileKeyProvider(config.master_key_file)
    engine = make_engine(config.database_url)
    reader = make_engine(config.database_url, writer=False)
    try:
        create_schema(engine)
        keyring = crypto.Keyring(reader, provider)
        with reader.connect() as conn:
            keyring.verify_master(conn)
        folder_names.migrate(engine, keyring)  # names written in clear by older versions
    except DBAPIError as exc:  # wrong path, not a database, corrupt pages
        engine.dispose()
        reader.dispose()
        raise unusable(config.database_url, exc) from None
    return App(config, engine, reader, keyring)
