"""Group commit: one writer thread turns many concurrent transactions into one fsync.

Sessions hand a *job* (a function of an open SQL connection) to :meth:`GroupCommitter.run`
and await its result. The writer thread takes every job waiting, runs them all in one
transaction, commits once (one WAL fsync), then wakes the callers. If a job raises, the
batch is rolled back and each job is run again in a transaction of its own, so a failing job
fails alone (jobs are pure functions of the connection: running one twice is safe); when
the database is away (:func:`mss.db.unavailable`) the whole batch fails at once and the
thread carries on with the next one (the pool reconnects). A caller is only woken after the
commit returned, so a 250 never precedes durability.

Each transaction the writer opens carries a *scratch space* (:func:`scratch`): a dict that
lives exactly as long as the transaction, shared by the jobs of one batch, dropped at commit
or rollback. Lower modules keep there what is true only inside the transaction (the audit
journal keeps its chain head, so a batch of jobs reads it once).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import structlog
from sqlalchemy import Connection, Engine

from mss.db import SCRATCH as _SCRATCH
from mss.db import unavailable
from mss.lifecycle import STOP_FLOOR, remaining

log = structlog.get_logger("mss.committer")
T = TypeVar("T")

Work = Callable[[Connection], Any]
class Refusal(Exception):
    """Raised by a work function that refuses what a client asked (an IMAP ``NO``): rolled
    back like any error, but an ordinary answer, logged at info and not as a failure."""


@dataclass
class _Job:
    work: Work
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[Any] | None = None
    result: Any = None
    error: BaseException | None = None


_STOP = object()


class Observer(Protocol):
    """Told of each committed transaction, on the writer thread (mss/metrics.py)."""

    def batch(self, jobs: int, commit_seconds: float) -> None: ...

    def committed(self, scratch: dict[str, Any]) -> None: ...


class GroupCommitter:
    def __init__(self, engine: Engine, max_batch: int = 512,
                 observer: Observer | None = None) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.observer = observer
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.jobs = 0

    async def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("committer already started")
        self._thread = threading.Thread(target=self._run, name="mss-committer", daemon=True)
        self._thread.start()

    async def stop(self, deadline: float) -> None:
        """Commit everything already submitted, then stop the thread (waited for until
        *deadline*, a time.monotonic() instant, and at least STOP_FLOOR seconds)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(
            None, thread.join, remaining(deadline, STOP_FLOOR))
        if thread.is_alive():
            log.error("committer still busy at the stop deadline")

    async def run(self, work: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(work, loop, future))
        return await future

    def submit(self, work: Work) -> None:
        """Commit *work* soon without waiting (audit of refusals); errors are logged."""
        self._queue.put(_Job(work))

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Job] = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch)

    def _transaction(self, jobs: list[_Job]) -> None:
        space: dict[str, Any] = {}
        with self.engine.begin() as conn:
            conn.info[_SCRATCH] = space
            try:
                for job in jobs:
                    job.result = job.work(conn)
            finally:  # (a lost connection's info is gone: reading it would raise
                # PendingRollbackError over the error that says the database is away)
                if not conn.invalidated:
                    conn.info.pop(_SCRATCH, None)
            done = time.perf_counter()
        if self.observer is not None:  # committed: the COMMIT (fsync) took this long
            try:  # (never an error of the transaction: it committed)
                self.observer.batch(len(jobs), time.perf_counter() - done)
                self.observer.committed(space)
            except Exception as exc:
                log.error("commit observer failed", error=repr(exc))

    def _commit(self, batch: list[_Job]) -> None:
        try:
            self._transaction(batch)
        except Exception as exc:
            if len(batch) == 1 or unavailable(exc):
                # the database is away: every job fails with it (their callers answer
                # 4xx / NO), none is run again; a COMMIT cut off may or may not have
                # happened, and a caller told "failed" retries: a duplicate, never a loss
                for job in batch:
                    job.error = exc
            else:  # find the culprit: one transaction per job
                for job in batch:
                    try:
                        self._transaction([job])
                    except Exception as job_exc:
                        job.error = job_exc
            errors = [job.error for job in batch if job.error is not None] or [exc]
            if all(isinstance(e, Refusal) for e in errors):
                log.info("commit refused", error=repr(errors[0]), jobs=len(batch))
            elif unavailable(exc):  # the pool opens a new connection for the next batch
                log.warning("database unavailable", error=repr(exc), jobs=len(batch))
            else:
                log.error("commit failed", error=repr(exc), jobs=len(batch))
        self.batches += 1
        self.jobs += len(batch)
        for job in batch:
            self._wake(job)

    @staticmethod
    def _wake(job: _Job) -> None:
        if job.future is None or job.loop is None:
            if job.error is not None:
                log.error("background commit failed", error=repr(job.error))
            return
        future = job.future

        def deliver() -> None:
            if future.done():
                return
            if job.error is not None:
                future.set_exception(job.error)
            else:
                future.set_result(job.result)

        with contextlib.suppress(RuntimeError):  # loop closed: the caller is gone
            job.loop.call_soon_threadsafe(deliver)
