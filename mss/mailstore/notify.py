"""Wake-ups between writers (SMTP delivery, IMAP sessions) and IMAP sessions.

A writer calls :meth:`Notifier.changed` after its transaction committed; sessions watching
that mailbox wake up and compute what changed from the database (the notification carries
no data, so a lost or duplicated one is harmless; sessions also poll, slowly:
``imap.idle_poll``). The in-process implementation serves one ``mss serve`` process:
writers of that process wake it at once; commits of other processes (``server.workers`` >
1, the CLI) reach it through the process's :class:`ChangeWatcher`, which calls
:meth:`LocalNotifier.poll` after the database changed: one query over the folders watched
in this process (``uidnext``, ``highestmodseq``, their mailbox's ``enabled``) waking only
the sessions of the folders that moved. Nodes sharing a PostgreSQL database use
:class:`ClusterNotifier` behind the same interface: ``changed`` also reaches the other nodes
(LISTEN/NOTIFY, :class:`PgChangeWatcher`; docs/architecture.md "Invariants").

Wake-ups on commits in general: a writer that committed something a sleeper waits for
wakes it directly when both live in one process (:class:`Signal`, e.g. a queued message
wakes the queue worker: ``Mailstore.queued``). Commits of other processes are seen by the
process's one :class:`ChangeWatcher`: every ``database.change_poll`` seconds it reads
SQLite's ``PRAGMA data_version`` (which moves when another connection committed), and only
then runs its listeners, each a small query comparing what its sleepers wait for with the
database. The cost is O(1) per interval while nothing changes, whatever the number of
sleepers. On PostgreSQL (no data_version) :class:`PgChangeWatcher` listens instead: a
notification of another node wakes the sleepers it names (a mailbox's sessions, the queue
worker) without a query, and the listeners run after the listening connection
(re)connected and every ``database.notify_poll`` seconds. Sleepers keep a slow safety poll
of their own.

The notifier, the queued signal and the snapshot cache of a process belong to its one
:class:`mss.mailstore.Mailstore`; no module global holds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import select as _select
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from sqlalchemy import Connection, Engine, select, text

from mss import db

if TYPE_CHECKING:  # PostgreSQL only: a SQLite node (and every CLI command) never loads it
    import psycopg

log = structlog.get_logger("mss.changes")

Listener = Callable[[Connection], None]  # runs on an executor thread

_CHUNK = 500  # folder ids per IN (...) query (well under SQLite's variable limit)


class Watch(Protocol):
    async def wait(self, timeout: float | None) -> bool:
        """True when a change was signalled (since the last wait), False on timeout (None:
        no timeout)."""

    def on_signal(self, callback: Callable[[], None] | None) -> None:
        """*callback* (None: no more) is called on the watch's loop at each signal."""

    def signalled(self) -> bool:
        """A change was signalled and not yet taken."""

    def take(self) -> bool:
        """True when a change was signalled since the last take or wait (then cleared),
        the session about to read the folder."""

    def saw(self, uidnext: int, modseq: int) -> None:
        """The session has reported its folder up to this state: a poll finding the
        folder there need not wake it."""

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
        self.known: tuple[int, int] | None = None  # (uidnext, highestmodseq) reported
        # woken, its session reading the folder (until saw): a poll's newer state is
        # compared with what it saw instead of waking it a second time
        self.reading = False
        self.target: tuple[int, int] | None = None
        self.callback: Callable[[], None] | None = None

    async def wait(self, timeout: float | None) -> bool:
        if timeout is None:
            await self.event.wait()
        else:
            try:
                await asyncio.wait_for(self.event.wait(), timeout)
            except TimeoutError:
                return False
        self.event.clear()
        self.reading = True
        return True

    def on_signal(self, callback: Callable[[], None] | None) -> None:
        self.callback = callback

    def signalled(self) -> bool:
        return self.event.is_set()

    def take(self) -> bool:
        if not self.event.is_set():
            return False
        self.event.clear()
        self.reading = True
        return True

    def signal(self) -> None:
        """On the watch's loop."""
        self.event.set()
        if self.callback is not None:
            self.callback()

    def saw(self, uidnext: int, modseq: int) -> None:
        self.known = (uidnext, modseq)
        self.reading = False
        target, self.target = self.target, None
        if target is not None and target != self.known:
            self.signal()  # a poll saw a state its read did not: once more

    def offer(self, state: tuple[int, int]) -> None:
        """On the watch's loop: a poll found the folder at *state*."""
        if self.known == state:
            return  # reported already (woken by this process's commit)
        if self.reading:
            self.target = state  # compared once its read is done (saw)
        else:
            self.signal()

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
        offered: list[tuple[_LocalWatch, tuple[int, int]]] = []
        states: dict[int, FolderState] = {}
        for i in range(0, len(folder_ids), _CHUNK):
            chunk = folder_ids[i:i + _CHUNK]
            states.update((r.id, (r.uidnext, r.highestmodseq, bool(r.enabled)))
                          for r in conn.execute(_STATES.where(db.folders.c.id.in_(chunk))))
        with self._lock:
            for folder_id in folder_ids:  # moved, deleted, or not seen before
                state, before = states.get(folder_id), self._states.get(folder_id)
                if state is None or before is None or before[2] != state[2]:
                    woken += self._by_folder.get(folder_id, ())
                elif before != state:  # moved: those that did not report it yet
                    offered += [(w, state[:2]) for w in self._by_folder.get(folder_id, ())]
            self._states = states
        self._wake(woken)
        self._offer(offered)

    def watched_folders(self) -> int:
        with self._lock:
            return len(self._by_folder)

    def _wake(self, watches: list[_LocalWatch]) -> None:
        """One call per event loop for all its watches (one wake-up of its selector, not
        one per session: 10 000 sessions of one folder)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_LocalWatch]] = {}
        for watch in watches:
            by_loop.setdefault(watch.loop, []).append(watch)
        for loop, group in by_loop.items():
            try:
                loop.call_soon_threadsafe(_set_all, group)
            except RuntimeError:  # its loop is closed: the sessions are gone
                for watch in group:
                    self._remove(watch)

    def _offer(self, offers: list[tuple[_LocalWatch, tuple[int, int]]]) -> None:
        """:meth:`_LocalWatch.offer` on each watch's loop, one call per loop: a session
        that reported the state already, or is reading the folder, is not woken again
        (one wake-up per change, not one per path that saw it)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_LocalWatch, tuple[int, int]]]] = {}
        for watch, state in offers:
            by_loop.setdefault(watch.loop, []).append((watch, state))
        for loop, group in by_loop.items():
            try:
                loop.call_soon_threadsafe(_offer_all, group)
            except RuntimeError:  # its loop is closed: the sessions are gone
                for watch, _ in group:
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


def _set_all(watches: list[_LocalWatch]) -> None:
    for watch in watches:
        watch.signal()


def _offer_all(offers: list[tuple[_LocalWatch, tuple[int, int]]]) -> None:
    for watch, state in offers:
        watch.offer(state)


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
        # end the round's read transaction: on PostgreSQL one left open between rounds
        # ("idle in transaction") holds back VACUUM and blocks DDL (mss db upgrade) for
        # as long as the node runs; SQLite's data_version is per connection, not per
        # transaction
        self._conn.rollback()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


# ---------------------------------------------------------------------- across nodes
# payloads: "m<mailbox id>" (a folder of it changed), "q" (queued), ROUND
CHANNEL = "mss_changes"
ROUND = "r"  # every node runs a full round of its listeners (a CLI change to see now)
LISTEN_CONNECTION = "mss-listen"  # its application_name (pg_stat_activity)
_PING = 10.0  # seconds without traffic before the listening connection is checked


def request_rounds(conn: Connection) -> None:
    """Ask every node for a full round of its change listeners once the caller's
    transaction commits (PostgreSQL delivers a NOTIFY at the commit; PostgreSQL docs
    "NOTIFY"). For a CLI change the nodes must see before their next notify_poll round;
    on SQLite nothing to do: every serving process sees the commit move data_version."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify(:channel, :payload)"),
                     {"channel": CHANNEL, "payload": ROUND})


class ClusterNotifier(LocalNotifier):
    """The notifier of a node sharing its PostgreSQL database with others: wakes this
    process's sessions at once, and the other nodes' through :class:`PgChangeWatcher`."""

    def __init__(self, publish: Callable[[str], None]) -> None:
        super().__init__()
        self._publish = publish

    def changed(self, mailbox_id: int) -> None:
        super().changed(mailbox_id)
        self._publish(f"m{mailbox_id}")

    def changed_elsewhere(self, mailbox_id: int) -> None:
        """Another node committed a change of *mailbox_id*: wake this process's sessions."""
        super().changed(mailbox_id)


class ClusterSignal(Signal):
    """:attr:`Mailstore.queued` of a node on PostgreSQL: a queued row wakes every node's
    delivery worker (any of them may claim it)."""

    def __init__(self, publish: Callable[[str], None]) -> None:
        super().__init__()
        self._publish = publish

    def fire(self) -> None:
        super().fire()
        self._publish("q")

    def fired_elsewhere(self) -> None:
        super().fire()


class PgChangeWatcher(ChangeWatcher):
    """The change watcher of a process on PostgreSQL: LISTEN/NOTIFY instead of polling.

    One connection per process (a thread: :meth:`_listen`) listens on :data:`CHANNEL` and
    sends this process's notifications. The writers' ``changed``/``fire`` run after their
    commit (as on SQLite) and only queue the payload; the thread sends what is queued in
    one autocommit statement. Sending after the commit, not inside the writers'
    transaction (where NOTIFY would be delivered at its commit, PostgreSQL docs "NOTIFY"),
    keeps the writers and the interface as they are (a writer does not know the notifier,
    the CLI none) and keeps the writers' commits out of the lock PostgreSQL takes to
    serialise the commits of notifying transactions (src/backend/commands/async.c,
    PreCommit_Notify); a burst's payloads go in one statement. It keeps "never a wake-up
    before the data": the data committed before the payload was even queued. A wake-up can
    be lost (the node dies between the two; another node's listening connection was down):
    the notification carries no data, sleepers keep their safety polls, a listener that
    reconnects runs one full round of the listeners (what was sent meanwhile is not
    replayed), a payload whose sending failed is sent again after the reconnection, and a
    full round runs every ``interval`` anyway (``database.notify_poll``: commits of the CLI
    send no notification).

    A notification of another node wakes this process's sessions of that mailbox (or its
    delivery worker) without a query; the sessions compute what changed from the database.
    """

    def __init__(self, reader: Engine, engine: Engine, interval: float) -> None:
        super().__init__(reader, interval)
        self.engine = engine  # the primary's (a standby takes no LISTEN nor NOTIFY)
        self.notifier = ClusterNotifier(self.publish)
        self.queued = ClusterSignal(self.publish)
        self.received = 0  # notifications of other nodes (for tests and benchmarks)
        self.connects = 0
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        # wakes the listening thread's select() when a payload is queued (socket objects: a
        # send after close fails, it never reaches a descriptor number reused meanwhile)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = threading.Event()
        self._full_round = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def publish(self, payload: str) -> None:
        """Queue *payload* for the other nodes (any thread; sent by the listening thread)."""
        with self._lock:
            first = not self._pending
            self._pending.add(payload)
        if first:
            self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending) or closed
            self._wake_w.send(b"x")

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        thread = threading.Thread(target=self._listen, name="pg-listen", daemon=True)
        thread.start()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full_round.wait(), self.interval)
                self._full_round.clear()
                try:
                    await self._loop.run_in_executor(None, self.check)
                except Exception as exc:  # database gone: the listener reconnects
                    log.error("change watch failed", error=repr(exc))
                    self._close()
        finally:
            self._stopping.set()
            self._poke()
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 5.0)
            self._close()
            self._wake_r.close()
            self._wake_w.close()

    # ---------------------------------------------------------------- listening thread
    def _listen(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                pg = self._connect()
            except Exception as exc:  # database down: try again
                log.warning("change listener cannot connect", error=repr(exc))
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            self.connects += 1
            self._request_full_round()  # what was sent while no one listened is lost
            try:
                self._serve(pg)
            except Exception as exc:  # connection lost (database restarted): reconnect
                if not self._stopping.is_set():
                    log.warning("change listener disconnected", error=repr(exc))
            finally:
                with contextlib.suppress(Exception):
                    pg.close()

    def _connect(self) -> psycopg.Connection[Any]:
        from mss.leader import dedicated_connection

        pg = dedicated_connection(self.engine, LISTEN_CONNECTION)  # autocommit
        pg.execute(f"LISTEN {CHANNEL}")
        return pg

    def _serve(self, pg: psycopg.Connection[Any]) -> None:
        import psycopg

        own = pg.info.backend_pid
        while not self._stopping.is_set():
            with self._lock:
                out, self._pending = sorted(self._pending), set()
            if out:  # one transaction: PostgreSQL delivers them at its commit
                try:
                    pg.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p",
                               [CHANNEL, out])
                except psycopg.Error:  # sent again once reconnected (twice is harmless)
                    with self._lock:
                        self._pending.update(out)
                    raise
            for note in pg.notifies(timeout=0):  # those read meanwhile, then the socket's
                if note.pid != own:
                    self._dispatch(note.payload)
            ready, _, _ = _select.select([pg.fileno(), self._wake_r.fileno()], [], [], _PING)
            if self._wake_r.fileno() in ready:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
            if not ready:
                pg.execute("SELECT 1")  # a connection dead without a word (no FIN)

    def _dispatch(self, payload: str) -> None:
        self.received += 1
        if payload == "q":
            self.queued.fired_elsewhere()
        elif payload.startswith("m") and payload[1:].isdigit():
            self.notifier.changed_elsewhere(int(payload[1:]))
        elif payload == ROUND:  # e.g. mss sessions end
            self._request_full_round()
        else:  # a payload of a newer version: compare everything
            self._request_full_round()

    def _request_full_round(self) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed: stopping
                loop.call_soon_threadsafe(self._full_round.set)
