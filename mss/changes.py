"""Wake-ups on commits: in-process signals, and one watcher per process for the others.

A writer that committed something a sleeper waits for wakes it directly when both live in
one process (:class:`Signal`, e.g. a queued message wakes the queue worker). Commits of
other processes (``server.workers`` > 1, the CLI) are seen by the process's one
:class:`ChangeWatcher`: every ``database.change_poll`` seconds it reads SQLite's
``PRAGMA data_version`` (which moves when another connection committed), and only then runs
its listeners, each a small query comparing what its sleepers wait for with the database.
The cost is O(1) per interval while nothing changes, whatever the number of sleepers.
On PostgreSQL (no data_version) the listeners run every interval; LISTEN/NOTIFY can
replace the watcher there (DESIGN.md §7). Sleepers keep a slow safety poll of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

import structlog
from sqlalchemy import Connection, Engine

log = structlog.get_logger("mss.changes")

Listener = Callable[[Connection], None]  # runs on an executor thread


class Signal:
    """Wake every asyncio event subscribed, from any thread (a commit's caller)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[asyncio.Event, asyncio.AbstractEventLoop] = {}

    def subscribe(self, event: asyncio.Event) -> None:
        with self._lock:
            self._events[event] = asyncio.get_running_loop()

    def unsubscribe(self, event: asyncio.Event) -> None:
        with self._lock:
            self._events.pop(event, None)

    def fire(self) -> None:
        with self._lock:
            events = list(self._events.items())
        for event, loop in events:
            with contextlib.suppress(RuntimeError):  # its loop is closed
                loop.call_soon_threadsafe(event.set)


queued = Signal()  # a commit queued outbound rows (SMTP handler, DSN): wake the worker


def data_version(conn: Connection) -> int | None:
    """SQLite's change counter of the database file as seen by *conn* (moves when another
    connection committed); None on other databases."""
    if conn.dialect.name != "sqlite":
        return None
    return int(conn.exec_driver_sql("PRAGMA data_version").scalar_one())


class ChangeWatcher:
    """One per serving process: runs its listeners after other connections committed."""

    def __init__(self, reader: Engine, interval: float) -> None:
        self.reader = reader
        self.interval = interval
        self.listeners: list[Listener] = []
        self._version: int | None = None
        self._conn: Connection | None = None
        self.checks = 0  # listener rounds run (for tests and benchmarks)

    def add(self, listener: Listener) -> None:
        self.listeners.append(listener)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    await loop.run_in_executor(None, self.check)
                except Exception as exc:  # database busy or gone: sleepers still poll
                    log.error("change watch failed", error=repr(exc))
                    self._close()
                await asyncio.sleep(self.interval)
        finally:
            self._close()

    def check(self) -> None:
        """Run the listeners when the database changed since the last check."""
        if self._conn is None:  # one connection kept: data_version is per connection
            self._conn = self.reader.connect()
            self._version = None
        version = data_version(self._conn)
        if version is not None and version == self._version:
            return
        self._version = version
        self.checks += 1
        for listener in self.listeners:
            try:
                listener(self._conn)
            except Exception as exc:  # one listener's failure must not starve the others
                log.error("change listener failed", error=repr(exc))

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
