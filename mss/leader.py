"""Periodic jobs run by one process of the whole cluster at a time (elected).

Audit checkpoints, the whitelist fetch, the directory sync and audit shipping (one per
destination: its cursor) must run once per cluster, not once per node or worker. Every
serving process runs each job under :meth:`Elector.run`: it tries to take the job's lock
every ``server.election_interval`` seconds and runs the job while it holds it.

- PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``, PostgreSQL docs
  §9.27.10 "Advisory Lock Functions") keyed by :func:`mss.locks.lock_key` of
  ``"job:<name>"``, on one connection of the process kept for that (:class:`PgLocks`). The
  lock lives as long as the session: a node that dies (even ``kill -9``) closes its
  connection and PostgreSQL releases it; another node takes it at its next attempt. The
  leader checks its connection every interval: broken (database restarted, network cut),
  it stops its jobs at once, since another node may lead already.
- SQLite (one node, ``server.workers`` processes): an ``flock`` on
  ``<data_dir>/locks/job-<name>.lock`` (:class:`FileLocks`), released by the kernel when
  the process ends.

A job stopped by a lost lock is cancelled between two of its rounds' awaits; a round
already running in a thread finishes (what it writes is safe twice: checkpoints chain under
the audit-chain lock, the shipper's cursor is confirmed per record).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

import psycopg
import structlog
from sqlalchemy import Engine

from mss.locks import lock_key

log = structlog.get_logger("mss.leader")

Job = Callable[[], Coroutine[Any, Any, None]]
ELECTION_CONNECTION = "mss-election"  # application_name of the connection holding the locks


def dedicated_connection(engine: Engine, name: str) -> psycopg.Connection[Any]:
    """A psycopg connection of *engine*'s database (its connect options), out of its pool,
    in autocommit: for a session held for long (a listener, session-level locks), named
    *name* in ``pg_stat_activity.application_name``."""
    raw = engine.raw_connection()
    pg = raw.dbapi_connection
    raw.detach()  # the pool forgets it: it is ours to close
    if not isinstance(pg, psycopg.Connection):
        raise TypeError(f"not a psycopg connection: {type(pg).__name__}")
    pg.rollback()
    pg.autocommit = True
    pg.execute("SELECT set_config('application_name', %s, false)", [name])
    return pg


class Locks(Protocol):
    def try_take(self, name: str) -> int | None:
        """A token when this process now holds job *name*'s lock, else None."""

    def holds(self, name: str, token: int) -> bool:
        """Whether the lock taken with *token* is still held (a broken connection: no)."""

    def release(self, name: str, token: int) -> None: ...

    def close(self) -> None: ...


class PgLocks:
    """Session-level advisory locks on one connection of this process (lazily opened,
    reopened after it broke: every lock held on it was lost with it)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()  # one statement at a time on the connection
        self._conn: psycopg.Connection[Any] | None = None
        self._generation = 0  # moves when the connection (and its locks) went away

    def try_take(self, name: str) -> int | None:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = dedicated_connection(self.engine, ELECTION_CONNECTION)
                    self._generation += 1
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s)",
                                         [lock_key(f"job:{name}")]).fetchone()
            except psycopg.Error:
                self._drop()
                raise
            return self._generation if row is not None and row[0] else None

    def holds(self, name: str, token: int) -> bool:
        with self._lock:
            if self._conn is None or token != self._generation:
                return False
            try:  # the session alive is the lock held (only this code unlocks)
                self._conn.execute("SELECT 1")
            except psycopg.Error as exc:
                log.warning("election connection lost", error=repr(exc))
                self._drop()
                return False
            return True

    def release(self, name: str, token: int) -> None:
        with self._lock:
            if self._conn is None or token != self._generation:
                return
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)",
                                   [lock_key(f"job:{name}")])
            except psycopg.Error:
                self._drop()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


class FileLocks:
    """``flock`` on a file per job in *directory* (the processes of one node)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._held: dict[str, int] = {}  # job name -> descriptor
        self._lock = threading.Lock()

    def try_take(self, name: str) -> int | None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / f"job-{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        with self._lock:
            self._held[name] = fd
        return fd

    def holds(self, name: str, token: int) -> bool:
        with self._lock:
            return self._held.get(name) == token

    def release(self, name: str, token: int) -> None:
        with self._lock:
            if self._held.get(name) != token:
                return
            del self._held[name]
        os.close(token)  # closing the descriptor releases the flock

    def close(self) -> None:
        with self._lock:
            held, self._held = self._held, {}
        for fd in held.values():
            os.close(fd)


def locks_for(engine: Engine, data_dir: Path) -> Locks:
    if engine.dialect.name == "postgresql":
        return PgLocks(engine)
    return FileLocks(data_dir / "locks")


class Elector:
    """The elections of one serving process: :meth:`run` wraps each periodic job."""

    def __init__(self, locks: Locks, interval: float) -> None:
        self.locks = locks
        self.interval = interval
        self.leading: set[str] = set()  # jobs this process runs now (tests, status)

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def run(self, name: str, job: Job) -> None:
        """Forever: take job *name*'s lock (every interval until it is free), run *job*
        while it is held, stop it when the lock is lost."""
        while True:
            try:
                token = await self._in_thread(self.locks.try_take, name)
            except Exception as exc:  # database unreachable: nobody here leads
                log.warning("election failed", job=name, error=repr(exc))
                token = None
            if token is not None:
                await self._lead(name, job, token)
            await asyncio.sleep(self.interval)  # the lock lost: the others' turn first

    async def _lead(self, name: str, job: Job, token: int) -> None:
        log.info("job leadership taken", job=name, pid=os.getpid())
        self.leading.add(name)
        task = asyncio.create_task(job(), name=f"elected-{name}")
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=self.interval)
                if not task.done() and not await self._in_thread(self.locks.holds, name,
                                                                 token):
                    log.warning("job leadership lost: job stopped", job=name)
                    break
        finally:
            self.leading.discard(name)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await asyncio.shield(self._in_thread(self.locks.release, name, token))
        if not task.cancelled() and task.exception() is not None:
            log.error("elected job failed", job=name, error=repr(task.exception()))

    async def start(self) -> None:  # a component: the jobs' tasks are their own
        pass

    async def stop(self, deadline: float) -> None:
        """Stopped after the jobs (reverse start order): their locks go with the connection
        (PostgreSQL) or the descriptors (SQLite)."""
        await self._in_thread(self.locks.close)
