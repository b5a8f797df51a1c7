"""structlog set-up: JSON lines on stderr (or ``logging.file``), never a secret or message
content."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure(level: str = "info", file: Path | None = None) -> None:
    # line-buffered append: several worker processes may share the file, line by line
    out: TextIO = open(file, "a", buffering=1, encoding="utf-8") if file else sys.stderr  # noqa: SIM115
    logging.basicConfig(level=logging.WARNING, stream=out,
                        format="%(name)s: %(message)s", force=True)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's own chatter
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
