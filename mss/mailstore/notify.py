"""Wake-ups between writers (SMTP delivery, IMAP sessions) and IMAP sessions.

A writer calls :meth:`Notifier.changed` after its transaction committed; sessions watching
that mailbox wake up and compute what changed from the database (the notification carries
no data, so a lost or duplicated one is harmless; sessions also poll, slowly:
``imap.idle_poll``). The in-process implementation serves one ``mss serve`` process:
writers of that process wake it at once; commits of other processes (``server.workers`` >
1, the CLI) reach it through the process's :class:`ChangeWatcher`, which calls
:meth:`LocalNotifier.poll` after the database changed: one query over the folders watched
in this process (``uidnext``, ``highestmodseq``, their mailbox's ``enabled``) waking only
the sessions of the folders that moved. A multi-node deployment plugs another
implementation (e.g. PostgreSQL LISTEN/NOTIFY) behind the same interface
(docs/architecture.md "Invariants").

Wake-ups on commits in general: a writer that committed something a sleeper waits for
wakes it directly when both live in one process (:class:`Signal`, e.g. a queued message
wakes the queue worker: ``Mailstore.queued``). Commits of other processes are seen by the
process's one :class:`ChangeWatcher`: every ``database.change_poll`` seconds it reads
SQLite's ``PRAGMA data_version`` (which moves when another connection committed), and only
then runs its listeners, each a small query comparing what its sleepers wait for with the
database. The cost is O(1) per interval while nothing changes, whatever the number of
sleepers. On PostgreSQL (no data_version) the listeners run every interval; LISTEN/NOTIFY
can replace the watcher there. Sleepers keep a slow safety poll of their own.

The notifier, the queued signal and the snapshot cache of a process belong to its one
:class:`mss.mailstore.Mailstore`; no module global holds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Protocol

import structlog
from sqlalchemy import Connection, Engine, select

from mss import db

log = structlog.get_logger("mss.changes")

Listener = Callable[[Connection], None]  # runs on an executor thread

_CHUNK = 500  # folder ids per IN (...) query (well under SQLite's variable limit)


class Watch(Protocol):
    async def wait(self, timeout: float) -> bool:
        """True when a change was signalled (since the last wait), False on timeout."""

    def close(self) -> None: ...


class Notifier(Protocol):
    def changed(self, mailbox_id: int) -> None:
        """Signal that a folder of *mailbox_id* changed (callable from any thread)."""

    def watch(self, mailbox_id: int, folder_id: int | None = None,
              delegated: bool = False) -> Watch:
        """Wake-ups for a session selecting *folder_id* of *mailbox_id* (*delegated*:
        through a grant, which another process may revoke)."""

    def poll(self, conn: Connection) -> None:
        """Compare the watched folders with the database (after another process
        committed) and wake the sessions of those that changed."""


class _LocalWatch:
    def __init__(self, owner: LocalNotifier, mailbox_id: int, folder_id: int | None,
                 delegated: bool) -> None:
        self.owner = owner
        self.mailbox_id = mailbox_id
        self.folder_id = folder_id
        self.delegated = delegated
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            return False
        self.event.clear()
        return True

    def close(self) -> None:
        self.owner._remove(self)


FolderState = tuple[int, int, bool]  # uidnext, highestmodseq (move with every change) and
# whether the folder's mailbox is enabled (a disabled one ends its sessions)
_STATES = (select(db.folders.c.id, db.folders.c.uidnext, db.folders.c.highestmodseq,
                  db.mailboxes.c.enabled)
           .join(db.mailboxes, db.mailboxes.c.id == db.folders.c.mailbox_id))


class LocalNotifier:
    """In-process notifier: a set of watches per mailbox and per selected folder."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[int, set[_LocalWatch]] = {}
        self._by_folder: dict[int, set[_LocalWatch]] = {}
        self._delegated: set[_LocalWatch] = set()
        self._states: dict[int, FolderState] = {}  # as poll last saw them

    def changed(self, mailbox_id: int) -> None:
        with self._lock:
            watches = list(self._watches.get(mailbox_id, ()))
        self._wake(watches)

    def watch(self, mailbox_id: int, folder_id: int | None = None,
              delegated: bool = False) -> Watch:
        watch = _LocalWatch(self, mailbox_id, folder_id, delegated)
        with self._lock:
            self._watches.setdefault(mailbox_id, set()).add(watch)
            if folder_id is not None:
                self._by_folder.setdefault(folder_id, set()).add(watch)
            if delegated:
                self._delegated.add(watch)
        return watch

    def poll(self, conn: Connection) -> None:
        with self._lock:
            folder_ids = list(self._by_folder)
            woken = list(self._delegated)  # a grant revoked elsewhere: re-checked on wake
        states: dict[int, FolderState] = {}
        for i in range(0, len(folder_ids), _CHUNK):
            chunk = folder_ids[i:i + _CHUNK]
            states.update((r.id, (r.uidnext, r.highestmodseq, bool(r.enabled)))
                          for r in conn.execute(_STATES.where(db.folders.c.id.in_(chunk))))
        with self._lock:
            for folder_id in folder_ids:  # moved, deleted, or not seen before
                state = states.get(folder_id)
                if state is None or self._states.get(folder_id) != state:
                    woken += self._by_folder.get(folder_id, ())
            self._states = states
        self._wake(woken)

    def watched_folders(self) -> int:
        with self._lock:
            return len(self._by_folder)

    def _wake(self, watches: list[_LocalWatch]) -> None:
        for watch in watches:
            try:
                watch.loop.call_soon_threadsafe(watch.event.set)
            except RuntimeError:  # its loop is closed: the session is gone
                self._remove(watch)

    def _remove(self, watch: _LocalWatch) -> None:
        with self._lock:
            self._delegated.discard(watch)
            for index, key in ((self._watches, watch.mailbox_id),
                               (self._by_folder, watch.folder_id)):
                if key is None:
                    continue
                watches = index.get(key)
                if watches is not None:
                    watches.discard(watch)
                    if not watches:
                        del index[key]


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
                if self._conn.invalidated:  # the connection was lost: a new one next round
                    self._close()
                    return

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
