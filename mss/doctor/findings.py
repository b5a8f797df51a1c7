"""One row of ``mss doctor``: a check, its status, its fix (docs/doctor.md)."""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass

EXPIRY_WARN_DAYS = 30  # a certificate or an anchor expiring sooner: warn


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok | warn | fail
    fix: str = ""  # what to do (fail, warn), or what was seen (ok)

    def row(self) -> dict[str, object]:
        return {"check": self.check, "status": self.status, "fix": self.fix}


def ok(check: str, seen: str = "") -> Finding:
    return Finding(check, "ok", seen)


def warn(check: str, fix: str) -> Finding:
    return Finding(check, "warn", fix)


def fail(check: str, fix: str) -> Finding:
    return Finding(check, "fail", fix)


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def day(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
