"""The mail store (a service): domains, mailboxes, folders, messages, grants, and the
change notification of a process. Every write to those tables goes through this package:
SMTP delivery and DSNs (:mod:`.deliveries`), IMAP (:mod:`.folders`, :mod:`.messages`), the CLI
(:mod:`.domains`, :mod:`.mailboxes`, :mod:`.grants`).

Writes are functions of a connection inside the caller's transaction (the CLI's own, or the
group committer's), so ciphertext, state and audit records commit together. A folder's
state (UIDNEXT, HIGHESTMODSEQ) moves only through :func:`.state.bump`, which every write to
a folder's messages or flags calls: that is what lets :class:`.snapshots.SnapshotCache`
serve a folder's message list from memory (tests/test_mailstore.py tries every write path).

Modules: ``errors`` (StoreError, BackendError), ``state`` (bump), ``names`` (folder names
sealed at rest, the default folders), ``domains``, ``mailboxes``, ``folders``,
``messages``, ``deliveries``, ``reports`` (where a delivery report goes), ``grants``,
``snapshots``, ``notify`` (wake-ups).
"""

from __future__ import annotations

from mss.mailstore.notify import LocalNotifier, Notifier, Signal
from mss.mailstore.snapshots import SnapshotCache


class Mailstore:
    """The runtime state of the mail store in one process, built once by the root and
    handed down: the folder snapshot cache shared by IMAP sessions, the notifier that wakes
    sessions watching a mailbox, and the signal that wakes the outbound worker when a
    commit queued rows (on PostgreSQL, those of :class:`.notify.PgChangeWatcher`, which
    reach the other nodes)."""

    def __init__(self, *, snapshots: SnapshotCache | None = None,
                 notifier: Notifier | None = None, queued: Signal | None = None) -> None:
        self.snapshots = snapshots if snapshots is not None else SnapshotCache()
        self.notifier: Notifier = notifier if notifier is not None else LocalNotifier()
        # a commit queued outbound rows (SMTP handler, DSN); on PostgreSQL it reaches the
        # other nodes too (notify.ClusterSignal)
        self.queued = queued if queued is not None else Signal()


__all__ = ["Mailstore"]
