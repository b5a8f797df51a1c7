"""Wake-ups between writers (SMTP delivery, IMAP sessions) and IMAP sessions.

A writer calls :meth:`Notifier.changed` after its transaction committed; sessions watching
that mailbox wake up and compute what changed from the database (the notification carries
no data, so a lost or duplicated one is harmless; sessions also poll, slowly:
``imap.idle_poll``). The in-process implementation serves one ``mss serve`` process:
writers of that process wake it at once; commits of other processes (``server.workers`` >
1, the CLI) reach it through the process's :class:`mss.changes.ChangeWatcher`, which calls
:meth:`LocalNotifier.poll` after the database changed: one query over the folders watched
in this process (``uidnext``, ``highestmodseq``, their mailbox's ``enabled``) waking only
the sessions of the folders that moved. A multi-node deployment plugs another
implementation (e.g. PostgreSQL LISTEN/NOTIFY) behind the same interface (DESIGN.md §7).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Protocol

from sqlalchemy import Connection, select

from mss import db

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


_default: Notifier = LocalNotifier()


def default() -> Notifier:
    """The process's notifier (SMTP delivery and IMAP sessions share it)."""
    return _default


def install(notifier: Notifier) -> None:
    global _default
    _default = notifier
