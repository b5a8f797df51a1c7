"""Real peers the tests need (swaks, slapd, rsyslog, Postfix, mbsync, shared data): found,
or the test is skipped with the reason locally and FAILS under CI (``CI=true``), where a
skip would hide a missing install step (Makefile DEBIAN_TEST_PACKAGES)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

SBIN = ("/usr/sbin", "/sbin", "/usr/lib/postfix/sbin")


def on_ci() -> bool:
    """True when the tests run under CI (``CI`` set to true/1/yes, as CI runners do)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def missing(reason: str) -> NoReturn:
    """Skip (locally) or fail (under CI) the current test for a missing peer."""
    if on_ci():
        pytest.fail(f"missing test peer under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def require(condition: bool, reason: str) -> None:
    """The test goes on only if *condition* holds (a peer, a user, a data file)."""
    if not condition:
        missing(reason)


def find_program(name: str) -> str | None:
    """*name* on PATH or in the sbin directories (not on a non-root user's PATH)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in SBIN:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _not_installed(what: str, package: str) -> str:
    return f"{what} not installed (Debian package '{package}'; `make system-deps`)"


def require_peer(name: str, package: str | None = None) -> str:
    """The path of program *name*, or skip/fail naming the Debian *package* bringing it."""
    found = find_program(name)
    if found is None:
        missing(_not_installed(name, package or name))
    return found


def require_file(path: Path | str, package: str | None = None, *,
                 source: str | None = None) -> Path:
    """*path* (a plugin, a schema directory) brought by Debian *package*, or a data file
    from *source*; else skip/fail."""
    file = Path(path)
    if not file.exists():
        missing(_not_installed(str(file), package) if package
                else f"{file} not found ({source or 'no source named'})")
    return file
