"""The session registry of one serving process (issue 16, ``mss sessions``).

A component of ``mss serve`` (:meth:`mss.runtime.Runtime.services`), started after the
committer and before the listeners, stopped after them. It gives the process its boot id
(a row of ``serving_processes``), moves its heartbeat every ``sessions.heartbeat``
seconds, and knows the process's logged-in sessions: a protocol calls :meth:`expect`
before its login transaction, adds :meth:`row` to that transaction (the registry row
commits with the login's audit record, no commit of its own), and :meth:`gone` when the
session ends (the row's deletion is a background write, batched by the group committer).

``mss sessions end`` marks rows ended; the process learns it from its change watcher
(:meth:`poll`, run after another process committed: one probe of the process's index;
on PostgreSQL the command's NOTIFY asks every node for such a round) and calls each
ended session's callback on its event loop. SQL: :mod:`mss.mailstore.sessions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

import structlog
from sqlalchemy import Connection

from mss.committer import GroupCommitter
from mss.lifecycle import BackgroundTask
from mss.mailstore import sessions

log = structlog.get_logger("mss.sessions")

Clock = Callable[[], float]


class SessionRegistry:
    def __init__(self, committer: GroupCommitter, worker: int, node: str, interval: float,
                 clock: Clock = time.time) -> None:
        self.committer = committer
        self.worker = worker
        self.node = node or socket.gethostname()
        self.interval = interval  # sessions.heartbeat
        self.clock = clock
        self.id = secrets.token_hex(8)  # this process's boot id
        self._lock = threading.Lock()
        # session id -> what ends it (called on its loop: call_soon_threadsafe)
        self._live: dict[str, Callable[[], object]] = {}
        self._task = BackgroundTask("session-registry", self._heartbeats)
        self.registered = False

    # ------------------------------------------------------------------ component
    async def start(self) -> None:
        now = self.clock()
        await self.committer.run(functools.partial(
            sessions.register_process, process_id=self.id, node=self.node,
            worker=self.worker, pid=os.getpid(), now=now))
        self.registered = True
        await self._task.start()

    async def stop(self, deadline: float) -> None:
        """After the listeners (their sessions said BYE): the process's rows go."""
        await self._task.stop(deadline)
        if self.registered:
            try:
                await self.committer.run(functools.partial(sessions.unregister_process,
                                                           process_id=self.id))
            except Exception as exc:  # hidden once stale, reaped by another process
                log.warning("session registry not cleared", error=repr(exc))

    def stale_before(self, now: float) -> float:
        return now - sessions.STALE_HEARTBEATS * self.interval

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.committer.run(self._beat)
            except Exception as exc:  # database away: the next beat, or hidden once stale
                log.warning("session heartbeat failed", error=repr(exc))

    def _beat(self, conn: Connection) -> None:
        now = self.clock()
        with self._lock:
            live = list(self._live)
        if not sessions.process_known(conn, self.id):  # reaped while this process paused
            sessions.register_process(conn, self.id, self.node, self.worker, os.getpid(),
                                      now)
        reaped = sessions.heartbeat(conn, self.id, live, now, self.stale_before(now))
        if reaped:
            log.info("sessions of silent processes removed", processes=reaped)

    # ------------------------------------------------------------------ sessions
    def expect(self, session_id: str, end: Callable[[], None]) -> None:
        """Before the login transaction holding :meth:`row` is submitted (a heartbeat
        between its commit and here would take the row for a lost one): *end* is called
        on the caller's event loop when an operator ends the session."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._live[session_id] = functools.partial(loop.call_soon_threadsafe, end)

    def row(self, conn: Connection, session_id: str, protocol: str, listener: str,
            mailbox_id: int, remote_addr: str, auth_method: str) -> None:
        """The session's row, in the login's transaction."""
        sessions.add_session(conn, session_id, self.id, protocol, listener, mailbox_id,
                             remote_addr, auth_method, self.clock())

    def forget(self, session_id: str) -> None:
        """The login failed (its transaction rolled back): nothing to delete."""
        with self._lock:
            self._live.pop(session_id, None)

    def gone(self, session_id: str) -> None:
        """The session ended: its row is deleted in the background."""
        with self._lock:
            if self._live.pop(session_id, None) is None:
                return
        self.committer.submit(functools.partial(sessions.remove_sessions,
                                                session_ids=[session_id]))

    def poll(self, conn: Connection) -> None:
        """Change watcher listener (another process committed): end the sessions of this
        process an operator ended."""
        with self._lock:
            if not self._live:
                return
        ended = sessions.ended_here(conn, self.id)
        with self._lock:
            calls = [self._live[i] for i in ended if i in self._live]
        for call in calls:
            with contextlib.suppress(RuntimeError):  # its loop is closed: session gone
                call()

    def live(self) -> int:
        with self._lock:
            return len(self._live)
