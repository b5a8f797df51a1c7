"""Folder snapshots shared between IMAP sessions of a process (no content)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import Connection

from mss.mailstore.folders import Folder
from mss.mailstore.messages import Row, rows


@dataclass(frozen=True)
class Snapshot:
    """A folder's message list at one (uidvalidity, uidnext, highestmodseq)."""

    rows: tuple[Row, ...]
    keywords: frozenset[str]
    first_unseen: int | None  # sequence number (RFC 3501 §7.1 UNSEEN)


class SnapshotCache:
    """Folder message lists kept per process, keyed by the folder's state.

    Every write to a folder's messages moves its UIDNEXT or HIGHESTMODSEQ (through
    :func:`mss.mailstore.state.bump`, the only writer of both), and both only grow, so a
    snapshot whose key equals the folder row just read is exactly the current list: SELECT
    of an unchanged folder needs no message scan. Bounded by the total number of rows held
    (LRU); no content.
    """

    def __init__(self, max_rows: int = 400_000) -> None:
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._items: OrderedDict[int, tuple[tuple[int, int, int, int], Snapshot]] = \
            OrderedDict()
        self._rows = 0

    @staticmethod
    def _key(folder: Folder) -> tuple[int, int, int, int]:
        # a row id can be reused by a later folder (SQLite rowids), of this mailbox or
        # another: the mailbox and UIDVALIDITY (unique per mailbox, folders.next_uidvalidity)
        # tell a recreated folder from the one the snapshot was taken of
        return folder.mailbox_id, folder.uidvalidity, folder.uidnext, folder.highestmodseq

    def peek(self, folder: Folder) -> Snapshot | None:
        """The snapshot of *folder* in its current state if held, without a scan."""
        with self._lock:
            hit = self._items.get(folder.id)
            if hit is not None and hit[0] == self._key(folder):
                self._items.move_to_end(folder.id)
                return hit[1]
        return None

    def get(self, conn: Connection, folder: Folder) -> Snapshot:
        held = self.peek(folder)
        if held is not None:
            return held
        found = rows(conn, folder.id)
        snap = Snapshot(tuple(found),
                        frozenset(f for r in found for f in r.flags if not f.startswith("\\")),
                        next((i for i, r in enumerate(found, 1) if "\\Seen" not in r.flags),
                             None))
        with self._lock:
            old = self._items.pop(folder.id, None)
            if old is not None:
                self._rows -= len(old[1].rows)
            if len(found) <= self.max_rows:
                self._items[folder.id] = (self._key(folder), snap)
                self._rows += len(found)
            while self._rows > self.max_rows:
                _, (_, dropped) = self._items.popitem(last=False)
                self._rows -= len(dropped.rows)
        return snap
