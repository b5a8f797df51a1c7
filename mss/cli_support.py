"""What every CLI command shares: opening the node, one-line errors, the actor name."""

from __future__ import annotations

import getpass
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from mss.config import ConfigError, TlsConfig, resolve_config_path

if TYPE_CHECKING:
    from mss.app import App

# Light on purpose: 'import mss.cli' loads this module, and every admin command pays for
# what it imports (sqlalchemy, the store, the protocols: most of a second); a command
# imports what it uses when it runs.

EXIT_ERROR = 2  # 1 is reserved for "no" answers such as 'whitelist check'
PRIVATE_UMASK = 0o077  # files 0600, directories 0700: the data dir holds keys, mail, logs


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


def next_hop(text: str) -> str:
    """--relay-to HOST:PORT normalised (proxy/outbound/mx.py), or the CLI's one-line error."""
    from proxy.outbound.mx import parse_next_hop

    try:
        host, port = parse_next_hop(text)
    except ValueError as exc:
        fail(str(exc))
    return f"{host}:{port}"


def password_hash_from_stdin(min_length: int) -> str:
    """Hash the password on the first line of stdin; fail if shorter than *min_length*."""
    from mss.passwords import hash_password

    password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < min_length:
        fail(f"password from stdin is shorter than {min_length} characters")
    return hash_password(password)


def actor() -> str:
    """Who runs the command, for audit records."""
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return f"cli:{user}"


def require_private_dir(data_dir: Path) -> None:
    """Refuse a data directory that group or others can read, write or enter."""
    try:
        mode = stat.S_IMODE(data_dir.stat().st_mode)
    except OSError as exc:
        fail(f"data directory {data_dir}: {exc.strerror or exc}")
    if mode & 0o077:
        fail(f"data directory {data_dir} is open to group/others (mode {mode:04o}); "
             f"run 'chmod 700 {data_dir}'")


def require_tls_files(tls: TlsConfig) -> None:
    """Each [tls] file readable, or one line naming its key and path."""
    for key in ("cert_file", "key_file", "ca_file"):
        path: Path = getattr(tls, key)
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            fail(f"tls.{key} {path}: {exc.strerror or exc}")


@contextmanager
def node(ctx: typer.Context) -> Iterator[App]:
    from sqlalchemy.exc import DBAPIError

    from mss.app import open_app
    from mss.db import unusable

    config_path: Path = resolve_config_path(ctx.obj.get("config") if ctx.obj else None)
    app = open_app(config_path)
    try:
        yield app
    except DBAPIError as exc:  # a database read or written by the command: one line too
        raise unusable(app.config.database_url, exc) from None
    finally:
        app.close()


def handled() -> tuple[type[Exception], ...]:
    """The errors a command reports as one line (exit 2): imported once one was raised."""
    from mss.addresses import AddressError
    from mss.crypto import KeyringError, TamperedError
    from mss.db import DatabaseUnusable
    from mss.mailstore.errors import StoreError
    from mss.schema import SchemaMismatch
    from trustspace.relays import RelayError

    return (CliError, ConfigError, KeyringError, TamperedError, StoreError, RelayError,
            DatabaseUnusable, OSError, AddressError, SchemaMismatch)


def report(exc: BaseException) -> NoReturn:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    print(f"mss: error: {text}", file=sys.stderr)
    raise SystemExit(EXIT_ERROR)
