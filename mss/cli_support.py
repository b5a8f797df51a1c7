"""What every CLI command shares: opening the node, one-line errors, the actor name."""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import typer

from mss.app import App, open_app
from mss.config import ConfigError, resolve_config_path
from mss.crypto import KeyringError, TamperedError
from mss.store import StoreError

EXIT_ERROR = 2  # 1 is reserved for "no" answers such as 'whitelist check'


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


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


@contextmanager
def node(ctx: typer.Context) -> Iterator[App]:
    config_path: Path = resolve_config_path(ctx.obj.get("config") if ctx.obj else None)
    app = open_app(config_path)
    try:
        yield app
    finally:
        app.close()


HANDLED = (CliError, ConfigError, KeyringError, TamperedError, StoreError, OSError)


def report(exc: BaseException) -> NoReturn:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    print(f"mss: error: {text}", file=sys.stderr)
    raise SystemExit(EXIT_ERROR)
