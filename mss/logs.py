"""structlog set-up: JSON lines on stderr (or ``logging.file``), never a secret or message
content."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
# a column's value quoted by SQLite's decode error, and any stored password hash
_SECRETS = (re.compile(r"(with text )'.*?'(?=[\"')\]]|$)", re.S),
            re.compile(r"\$scrypt\$[^\s'\"]*"))


def redact(text: str) -> str:
    """*text* without column values quoted by the database driver or password hashes."""
    text = _SECRETS[0].sub(r"\1<redacted>", text)
    return _SECRETS[1].sub("<redacted>", text)


def _redact_values(_logger: object, _name: str,
                   event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the safety net under every log line (no secret in any)."""
    for key, value in event.items():
        if isinstance(value, BaseException):
            value = repr(value)
        if isinstance(value, str):
            event[key] = redact(value)
    return event


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))  # message and traceback alike


def configure(level: str = "info", file: Path | None = None) -> None:
    # line-buffered append: several worker processes may share the file, line by line
    out: TextIO = open(file, "a", buffering=1, encoding="utf-8") if file else sys.stderr  # noqa: SIM115
    handler = logging.StreamHandler(out)  # libraries' own lines (aiosmtpd, asyncio) too
    handler.setFormatter(_RedactingFormatter("%(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's own chatter
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_values,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
