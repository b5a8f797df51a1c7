"""structlog set-up: JSON lines on stderr (or ``logging.file``), never a secret or message
content. ``mss serve`` also routes what Python itself would print as plain text (an uncaught
exception in a thread or at the top, an exception ignored in ``__del__``) into the same JSON
lines: every line of the log parses (issue 17)."""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import MutableMapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, TextIO

import structlog

# printf-style placeholders of a stdlib log message template
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[a-zA-Z%]")


class _ToStructlog(logging.Handler):
    """Stdlib records (libraries) as structlog JSON lines. With *drop_args* only the
    template is kept, its placeholders blanked: aiosmtpd's ``mail.log`` puts client input
    in its arguments (the first word of an unrecognised line: message text after a
    refused DATA, or a credential), which must never reach a log."""

    def __init__(self, drop_args: bool) -> None:
        super().__init__()
        self.drop_args = drop_args

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = (_PLACEHOLDER.sub("-", str(record.msg)) if self.drop_args
                    else record.getMessage())
            fields: dict[str, str] = {"logger": record.name}
            if record.exc_info and record.exc_info[1] is not None and not self.drop_args:
                fields["error"] = repr(record.exc_info[1])
            structlog.get_logger("stdlib").log(record.levelno, text, **fields)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)

class _LineWriter:
    """structlog's output: each line in one write(2) of its own. Several processes share
    the log (``server.workers`` on one stderr or ``logging.file``): print() wrote a line
    and its newline in two calls, and two workers stopping at once wrote
    ``{...}{...}`` then an empty line (tests/test_json_log.py)."""

    def __init__(self, file: TextIO) -> None:
        self._file = file
        self._lock = threading.Lock()
        try:
            self._fd: int | None = file.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):  # a stream of a test
            self._fd = None

    def msg(self, message: str) -> None:
        line = message + "\n"
        with self._lock:
            if self._fd is None:
                self._file.write(line)
                self._file.flush()
                return
            self._file.flush()  # anything written through the stream itself goes first
            data = line.encode("utf-8", "backslashreplace")
            while data:  # a regular file or pipe takes it whole; a short write continues
                data = data[os.write(self._fd, data):]

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg
    failure = msg


_LEVELS = MappingProxyType({"debug": logging.DEBUG, "info": logging.INFO,
                            "warning": logging.WARNING, "error": logging.ERROR})
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


def configure(level: str = "info", file: Path | None = None) -> None:
    # line-buffered append: several worker processes may share the file, line by line
    out: TextIO = open(file, "a", buffering=1, encoding="utf-8") if file else sys.stderr  # noqa: SIM115
    logging.basicConfig(level=logging.WARNING, handlers=[_ToStructlog(drop_args=False)],
                        force=True)
    logging.captureWarnings(True)  # warnings.warn (aiosmtpd's) as JSON lines too
    mail_log = logging.getLogger("mail.log")  # aiosmtpd's own chatter: templates only
    mail_log.setLevel(logging.WARNING)
    mail_log.handlers = [_ToStructlog(drop_args=True)]
    mail_log.propagate = False
    writer = _LineWriter(out)  # one per process: forked workers each write whole lines
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_values,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *_args: writer,
        cache_logger_on_first_use=True,
    )


def where(tb: TracebackType | None, depth: int = 6) -> list[str]:
    """The innermost frames of *tb* as ``file:line in function``: where a crash happened,
    without the source lines nor the locals (data a crash may hold stays out of the log)."""
    return [f"{frame.filename}:{frame.lineno} in {frame.name}"
            for frame in traceback.extract_tb(tb)[-depth:]]


def route_crashes() -> None:
    """Uncaught exceptions (main thread, other threads) and unraisable ones as JSON lines
    instead of Python's plain-text tracebacks on stderr. For the serving process only (a
    test process keeps its own hooks)."""
    crash_log = structlog.get_logger("mss.crash")

    def main_hook(kind: type[BaseException], exc: BaseException,
                  tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            crash_log.info("interrupted")
            return
        crash_log.critical("uncaught exception", error=repr(exc), where=where(tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        crash_log.critical("uncaught exception in thread", error=repr(args.exc_value),
                           thread=args.thread.name if args.thread else None,
                           where=where(args.exc_traceback))

    def unraisable_hook(unraisable: Any) -> None:
        crash_log.error("exception ignored", error=repr(unraisable.exc_value),
                        context=unraisable.err_msg or "Exception ignored in",
                        object=type(unraisable.object).__name__,
                        where=where(unraisable.exc_traceback))

    sys.excepthook = main_hook
    threading.excepthook = thread_hook
    sys.unraisablehook = unraisable_hook
