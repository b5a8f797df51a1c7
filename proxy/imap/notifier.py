"""Wake-ups between writers (SMTP delivery, IMAP sessions) and IMAP sessions.

A writer calls :meth:`Notifier.changed` after its transaction committed; sessions watching
that mailbox wake up and compute what changed from the database (the notification carries no
data, so a lost or duplicated one is harmless: sessions also poll). The in-process
implementation serves one ``mss serve`` process; a multi-node deployment plugs another
implementation (e.g. PostgreSQL LISTEN/NOTIFY) behind the same interface (DESIGN.md §7).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Protocol


class Watch(Protocol):
    async def wait(self, timeout: float) -> bool:
        """True when a change was signalled (since the last wait), False on timeout."""

    def close(self) -> None: ...


class Notifier(Protocol):
    def changed(self, mailbox_id: int) -> None:
        """Signal that a folder of *mailbox_id* changed (callable from any thread)."""

    def watch(self, mailbox_id: int) -> Watch: ...


class _LocalWatch:
    def __init__(self, owner: LocalNotifier, mailbox_id: int) -> None:
        self.owner = owner
        self.mailbox_id = mailbox_id
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


class LocalNotifier:
    """In-process notifier: a set of watches per mailbox."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[int, set[_LocalWatch]] = {}

    def changed(self, mailbox_id: int) -> None:
        with self._lock:
            watches = list(self._watches.get(mailbox_id, ()))
        for watch in watches:
            try:
                watch.loop.call_soon_threadsafe(watch.event.set)
            except RuntimeError:  # its loop is closed: the session is gone
                self._remove(watch)

    def watch(self, mailbox_id: int) -> Watch:
        watch = _LocalWatch(self, mailbox_id)
        with self._lock:
            self._watches.setdefault(mailbox_id, set()).add(watch)
        return watch

    def _remove(self, watch: _LocalWatch) -> None:
        with self._lock:
            watches = self._watches.get(watch.mailbox_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[watch.mailbox_id]


_default: Notifier = LocalNotifier()


def default() -> Notifier:
    """The process's notifier (SMTP delivery and IMAP sessions share it)."""
    return _default


def install(notifier: Notifier) -> None:
    global _default
    _default = notifier
