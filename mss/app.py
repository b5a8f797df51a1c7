"""Opening a node's state: configuration, database engines, key provider and keyring.

Shared by the CLI and ``mss serve``; a wrong or missing key file or token, or a master
version in use that the provider cannot unwrap, raises :class:`mss.crypto.MasterKeyError`
here, before anything else happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DBAPIError

from audit.journal import AuditRecord, append
from mss import crypto, db
from mss.config import Config, load_config
from mss.db import create_schema, make_engine, unusable
from mss.mailstore import names as folder_names
from mss.schema import NotInitialised, require_current, where

if TYPE_CHECKING:
    from mss.pkcs11 import TokenConfig


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
        self.keyring.provider.close()


def key_provider(config: Config) -> crypto.KeyProvider:
    """The configured [keys] provider (a token session opened: MasterKeyError if not)."""
    cfg = config.keys
    if cfg.provider == "file":
        return crypto.FileKeyProvider(cfg.master_key_file)
    from mss.pkcs11 import Pkcs11KeyProvider  # the PKCS#11 library: loaded on demand

    previous = (crypto.FileKeyProvider(cfg.master_key_file)
                if cfg.master_key_file.exists() else None)
    lock = cfg.master_key_file.with_name("kek-ratchet.lock")  # keys/: made by mss init
    return Pkcs11KeyProvider(token_config(config), previous,
                             lock if lock.parent.is_dir() else None)


def token_config(config: Config) -> TokenConfig:
    cfg = config.keys
    from mss.pkcs11 import TokenConfig

    return TokenConfig(cfg.pkcs11_module, cfg.token_label, cfg.key_label, cfg.pin_file,
                       cfg.pin_env)


def open_app(config_path: Path | str, *, init: bool = False) -> App:
    """Raises ConfigError, MasterKeyError, DatabaseUnusable or SchemaMismatch (one line
    each). The database must be at this code's schema and initialised (a queue key:
    ``mss init``); *init* (``mss init`` only) brings its schema to the head instead and
    asks for no key (init creates them)."""
    config = load_config(config_path)
    provider = key_provider(config)
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
    except BaseException as exc:
        engine.dispose()
        reader.dispose()
        provider.close()
        if isinstance(exc, DBAPIError):  # wrong path, not a database, corrupt pages
            raise unusable(config.database_url, exc) from None
        raise  # MasterKeyError: a version in use that the provider cannot unwrap
    return App(config, engine, reader, keyring)


def _require_initialised(conn: Connection, reader: Engine) -> None:
    """A database whose schema was made but never initialised holds no queue key: mail
    would be accepted, then answered 451 ("no key 'queue' in the keyring")."""
    found = conn.execute(select(db.keyring.c.key_id)
                         .where(db.keyring.c.key_id == crypto.QUEUE_KEY_ID)).first()
    if found is None:
        raise NotInitialised(f"database {where(reader)} holds no node keys: run mss init")
