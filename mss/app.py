"""Opening a node's state: configuration, database engines, key provider and keyring.

Shared by the CLI and ``mss serve``; a wrong or missing key file or token, or a master
version in use that the provider cannot unwrap, raises :class:`mss.crypto.MasterKeyError`
here, before anything else happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from audit.journal import AuditRecord, append
from mss import crypto
from mss.config import Config, load_config
from mss.db import create_schema, make_engine, unusable
from mss.mailstore import names as folder_names

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
    return Pkcs11KeyProvider(token_config(config), previous)


def token_config(config: Config) -> TokenConfig:
    cfg = config.keys
    from mss.pkcs11 import TokenConfig

    return TokenConfig(cfg.pkcs11_module, cfg.token_label, cfg.key_label, cfg.pin_file,
                       cfg.pin_env)


def open_app(config_path: Path | str) -> App:
    """Raises ConfigError, MasterKeyError or DatabaseUnusable (one line each)."""
    config = load_config(config_path)
    provider = key_provider(config)
    engine = make_engine(config.database_url)
    reader = make_engine(config.database_url, writer=False)
    try:
        create_schema(engine)
        keyring = crypto.Keyring(reader, provider)
        with reader.connect() as conn:
            keyring.verify_master(conn)
        folder_names.migrate(engine, keyring)  # names written in clear by older versions
    except BaseException as exc:
        engine.dispose()
        reader.dispose()
        provider.close()
        if isinstance(exc, DBAPIError):  # wrong path, not a database, corrupt pages
            raise unusable(config.database_url, exc) from None
        raise  # MasterKeyError: a version in use that the provider cannot unwrap
    return App(config, engine, reader, keyring)
