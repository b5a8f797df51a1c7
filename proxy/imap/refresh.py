"""What the sessions of one process woken by the same change read, read once.

A delivery to a folder selected by N sessions of a process wakes the N (RFC 2177 IDLE,
mss/mailstore/notify.py); each must learn the folder's new state, the messages changed
since the modseq it knows, and claim the new messages' \\Recent flag (RFC 3501 §2.3.2:
exactly one session sees it). Done per session that is N database round trips and N
writes; here the sessions knowing the same modseq share one read (:meth:`FolderReads.delta`)
and the claims of one process share one write (:meth:`FolderReads.claim`).

A session joins a read only while that read has not begun: a read begun before the
session was woken could miss the commit that woke it. Rows are immutable and shared
(:class:`mss.mailstore.messages.Row`), the lists are read, never changed, by the sessions.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine

from mss.mailstore import folders, messages

FolderState = tuple[int, int, int]  # uidnext, highestmodseq, recent_uid (folders.folder_state)
_MEMO = 4096  # folders whose last claim of this process is remembered


@dataclass
class Delta:
    """The folder as one read saw it: None when gone; what changed after *since*."""

    state: FolderState | None
    present: list[int] = field(default_factory=list)  # every UID, ascending
    changed: list[messages.Row] = field(default_factory=list)  # modseq > since, UID order


class _Flight:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.begun = False  # set on the executor thread as the read starts
        self.result: asyncio.Future[Delta] = loop.create_future()


Key = tuple[int, int, int]  # folder id, uidvalidity, the modseq the readers know


class FolderReads:
    """One per process (shared by its IMAP listeners); used on the event loop only."""

    def __init__(self) -> None:
        self._flights: dict[Key, _Flight] = {}
        self._claims: OrderedDict[int, tuple[int, asyncio.Future[bool]]] = OrderedDict()
        self.reads = 0  # reads run (tests and benchmarks)

    async def delta(self, reader: Engine, folder: folders.Folder, since: int) -> Delta:
        """The state of *folder* and, when its modseq moved past *since*, its UIDs and the
        rows changed after *since*: one read for every session asking meanwhile."""
        key = (folder.id, folder.uidvalidity, since)
        flight = self._flights.get(key)
        if flight is None or flight.begun:
            loop = asyncio.get_running_loop()
            flight = self._flights[key] = _Flight(loop)
            self.reads += 1
            # started after the sessions woken by the same change (the ready callbacks of
            # this loop iteration) had the time to join
            loop.call_soon(self._start, loop, flight, key, reader, folder, since)
        return await asyncio.shield(flight.result)

    def _start(self, loop: asyncio.AbstractEventLoop, flight: _Flight, key: Key,
               reader: Engine, folder: folders.Folder, since: int) -> None:
        def read() -> Delta:
            flight.begun = True  # before the read: a session joining now sees the commit
            with reader.connect() as conn:
                return _read(conn, folder, since)

        def done(future: asyncio.Future[Delta]) -> None:
            if self._flights.get(key) is flight:
                del self._flights[key]
            if future.cancelled():
                flight.result.cancel()
            elif (exc := future.exception()) is not None:
                flight.result.set_exception(exc)
            else:
                flight.result.set_result(future.result())
        loop.run_in_executor(None, read).add_done_callback(done)

    async def claim(self, folder_id: int, upto: int,
                    write: Callable[[], Awaitable[int]]) -> int | None:
        """The claim of \\Recent up to *upto* for one session of this process (*write*:
        folders.claim_recent in the writer); None when another session of this process
        claimed them already (or is claiming them): the caller sees none as \\Recent."""
        known = self._claims.get(folder_id)
        if known is not None and known[0] >= upto and await asyncio.shield(known[1]):
            return None  # answered once the other's claim committed
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._claims[folder_id] = (upto, done)
        self._claims.move_to_end(folder_id)
        while len(self._claims) > _MEMO:
            self._claims.popitem(last=False)
        try:
            claimed = await write()
        except BaseException:
            if self._claims.get(folder_id) == (upto, done):
                del self._claims[folder_id]  # not claimed: the next session tries
            done.set_result(False)  # those waiting claim for themselves
            raise
        done.set_result(True)
        return claimed


def _read(conn: Connection, folder: folders.Folder, since: int) -> Delta:
    state = folders.folder_state(conn, folder)
    if state is None or state[1] == since:
        return Delta(state)
    return Delta(state, messages.uids(conn, folder.id), messages.rows(conn, folder.id, since))
