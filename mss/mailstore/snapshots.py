"""Folder snapshots shared between IMAP sessions of a process (no content)."""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from mss.mailstore.folders import Folder
from mss.mailstore.messages import Row, count, rows


@dataclass(frozen=True)
class Snapshot:
    """A folder's message list at one (uidvalidity, uidnext, highestmodseq)."""

    rows: tuple[Row, ...]
    keywords: frozenset[str]
    first_unseen: int | None  # sequence number (RFC 3501 §7.1 UNSEEN)

    def uids_between(self, low: int, high: int) -> set[int]:
        """The UIDs u with low < u <= high (rows are in UID order: two bisections, so a
        SELECT's \\Recent set costs nothing per message of a large folder)."""
        start = bisect.bisect_right(self.rows, low, key=_uid)
        end = bisect.bisect_right(self.rows, high, lo=start, key=_uid)
        return {r.uid for r in self.rows[start:end]}


def _uid(row: Row) -> int:
    return row.uid


def _keywords(found: Sequence[Row]) -> frozenset[str]:
    return frozenset(f for r in found if r.flags for f in r.flags if not f.startswith("\\"))


def _first_unseen(found: Sequence[Row]) -> int | None:
    return next((i for i, r in enumerate(found, 1) if "\\Seen" not in r.flags), None)


def _snapshot(found: Sequence[Row], keywords: frozenset[str] | None = None) -> Snapshot:
    return Snapshot(tuple(found), _keywords(found) if keywords is None else keywords,
                    _first_unseen(found))


class SnapshotCache:
    """Folder message lists kept per process, keyed by the folder's state.

    Every write to a folder's messages moves its UIDNEXT or HIGHESTMODSEQ (through
    :func:`mss.mailstore.state.bump`, the only writer of both), and both only grow, so a
    snapshot whose key equals the folder row just read is exactly the current list: SELECT
    of an unchanged folder needs no message scan. A folder that changed since its snapshot
    (a delivery, a flag change, an expunge) is brought up to date from the rows changed
    since (RFC 7162 §3.1: every changed row carries a higher MODSEQ; new UIDs are above
    every UID held) and a count of the folder's rows (an expunge or a move away removes
    rows without a MODSEQ to find them by: the count tells, and a full read follows), so
    a large folder is not read whole after each new message. Bounded by the total number
    of rows held (LRU); no content.
    """

    def __init__(self, max_rows: int = 400_000) -> None:
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._items: OrderedDict[int, tuple[tuple[int, int, int, int], Snapshot]] = \
            OrderedDict()
        self._rows = 0
        self.scans = 0  # full reads of a folder's rows (tests, benchmarks)
        self.updates = 0  # snapshots brought up to date from the changed rows only

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
        key = self._key(folder)
        with self._lock:
            hit = self._items.get(folder.id)
        if hit is not None and hit[0] == key:
            self.peek(folder)  # LRU order
            return hit[1]
        snap = None
        if hit is not None and hit[0][:2] == key[:2] and hit[0][3] <= key[3]:
            snap = self._update(conn, folder, hit[1], hit[0][3])
        if snap is None:
            self.scans += 1
            snap = _snapshot(rows(conn, folder.id))
        else:
            self.updates += 1
        self._keep(folder, snap)
        return snap

    @staticmethod
    def _update(conn: Connection, folder: Folder, old: Snapshot, modseq: int
                ) -> Snapshot | None:
        """*old* (taken at *modseq*) with the rows changed since; None when rows were
        removed (expunged, moved away) or the change is not a plain one: read it all."""
        changed = rows(conn, folder.id, modseq)
        held = old.rows
        last = held[-1].uid if held else 0
        updated = list(held)
        new: list[Row] = []
        keywords: frozenset[str] | None = old.keywords
        for row in changed:
            at = bisect.bisect_left(held, row.uid, key=_uid)
            if at < len(held) and held[at].uid == row.uid:
                before = updated[at]
                if any(not f.startswith("\\") for f in before.flags if f not in row.flags):
                    keywords = None  # a keyword removed: count them again
                updated[at] = row
            elif row.uid > last and (not new or row.uid > new[-1].uid):
                new.append(row)
            else:
                return None  # a row that is neither held nor new (cannot happen): read all
        if count(conn, folder.id) != len(held) + len(new):
            return None  # rows left the folder
        updated += new
        if keywords is not None:
            keywords = keywords | _keywords(changed)
        return _snapshot(updated, keywords)

    def _keep(self, folder: Folder, snap: Snapshot) -> None:
        with self._lock:
            old = self._items.pop(folder.id, None)
            if old is not None:
                self._rows -= len(old[1].rows)
            if len(snap.rows) <= self.max_rows:
                self._items[folder.id] = (self._key(folder), snap)
                self._rows += len(snap.rows)
            while self._rows > self.max_rows:
                _, (_, dropped) = self._items.popitem(last=False)
                self._rows -= len(dropped.rows)
