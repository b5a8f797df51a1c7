"""Login throttling shared by IMAP and SMTP AUTH (submission and relay listeners).

After ``failures`` failed logins within ``window`` seconds for one user name, or for one
client address, further logins of that user or from that address are refused without a
password check for ``lockout`` seconds, and audited.

Counted per process in memory (the fast path: a lock this process set costs no query) and,
with a :class:`SharedFailures` store, in the database (table ``login_failures``) so that the
failures of every node and worker process add up and a lockout holds everywhere. A login
asks the database once (:meth:`Throttle.blocked`: one indexed read of the two keys' recent
rows); a success writes only when failures of that user were seen; failures and lockouts
are written by the group committer without waiting (append-only rows: two nodes recording
at once never wait for each other). Times in the database are wall-clock (the nodes' clocks
agree, NTP); two failures committed at the same instant on two nodes may both miss the one
that completes the count, the next failure then locks.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, and_, bindparam, delete, func, insert, or_, select

from mss import db

F = db.login_failures
Submit = Callable[[Callable[[Connection], object]], None]  # GroupCommitter.submit

# a login's one read: lockouts in force and recent failures of its two keys (built once)
_STATE = select(F.c.key, F.c.locked_until).where(and_(
    or_(F.c.key == bindparam("user"), F.c.key == bindparam("addr")),
    F.c.at > bindparam("since"),
    or_(F.c.locked_until.is_(None), F.c.locked_until > bindparam("now")))).limit(64)


class SharedFailures:
    """Failures and lockouts in the database: reads on *reader*, writes through *submit*
    (the group committer's background commit). *scope* names the throttle ("imap",
    "smtp"): each has its budget, as each has its configuration."""

    PRUNE_EVERY = 256  # failures recorded by this process between two prunes of old rows

    def __init__(self, reader: Engine, submit: Submit, scope: str) -> None:
        self.reader = reader
        self.submit = submit
        self.scope = scope
        self._recorded = 0

    def key(self, key: str) -> str:
        return f"{self.scope}:{key}"[:400]

    def state(self, keys: tuple[str, str], window: float, now: float) -> tuple[bool, bool]:
        """(either key locked now, the first key has recent failures): one query."""
        user, addr = (self.key(k) for k in keys)
        with self.reader.connect() as conn:
            rows = conn.execute(_STATE, {"user": user, "addr": addr, "since": now - window,
                                         "now": now}).all()
        locked = any(until is not None for _, until in rows)
        return locked, any(k == user and until is None for k, until in rows)

    def record_failure(self, keys: tuple[str, str], failures: int, window: float,
                       lockout: float) -> None:
        now = time.time()
        names = [self.key(k) for k in keys]
        self._recorded += 1
        prune = self._recorded % self.PRUNE_EVERY == 0

        def work(conn: Connection) -> None:
            conn.execute(insert(F), [{"key": k, "at": now, "locked_until": None}
                                     for k in names])
            for name in names:
                if _count(conn, name, now - window) >= failures:
                    conn.execute(insert(F).values(key=name, at=now,
                                                  locked_until=now + lockout))
            if prune:  # rows past both the window and the lockout count for nothing
                conn.execute(delete(F).where(F.c.at < now - max(window, lockout)))
        self.submit(work)

    def forget_user(self, key: str) -> None:
        """A success clears that user's failures (not a lockout, not the address's)."""
        name, now = self.key(key), time.time()
        self.submit(lambda conn: conn.execute(delete(F).where(and_(
            F.c.key == name, F.c.locked_until.is_(None), F.c.at <= now))))


def _count(conn: Connection, name: str, since: float) -> int:
    """Failures of *name* after *since* and after its last lockout (a lockout starts the
    count again, as the in-memory throttle clears its list)."""
    last_lock = select(func.max(F.c.at)).where(and_(F.c.key == name,
                                                    F.c.locked_until.is_not(None)))
    since_lock = conn.execute(last_lock).scalar()
    start = max(since, float(since_lock)) if since_lock is not None else since
    return int(conn.execute(select(func.count()).select_from(F).where(and_(
        F.c.key == name, F.c.locked_until.is_(None), F.c.at > start))).scalar() or 0)


@dataclass
class Throttle:
    failures: int = 5
    window: float = 900.0
    lockout: float = 300.0
    shared: SharedFailures | None = None  # the database's count (every node), when given
    _seen: dict[str, deque[float]] = field(default_factory=dict)
    _locked: dict[str, float] = field(default_factory=dict)
    _failed_elsewhere: set[str] = field(default_factory=set)  # users with failures in the db

    def _keys(self, user: str, address: str) -> tuple[str, str]:
        return f"user:{user.lower()}", f"addr:{address}"

    def blocked(self, user: str, address: str, now: float | None = None) -> bool:
        """Whether this user or address is locked out (in this process, then in the
        database): a blocking query, for threads and tests; sessions await :meth:`check`."""
        keys = self._keys(user, address)
        if self._locked_here(keys, time.monotonic() if now is None else now):
            return True
        return self.shared is not None and self._shared_state(keys)

    async def check(self, user: str, address: str) -> bool:
        """:meth:`blocked` for an event loop: the database's count is read on an executor
        thread, so a slow or lost database (connect_timeout) never freezes the loop. A
        DBAPIError (database away) reaches the caller: a temporary refusal."""
        keys = self._keys(user, address)
        if self._locked_here(keys, time.monotonic()):
            return True
        if self.shared is None:
            return False
        return await asyncio.get_running_loop().run_in_executor(None, self._shared_state,
                                                                keys)

    def _locked_here(self, keys: tuple[str, str], now: float) -> bool:
        for key in keys:
            until = self._locked.get(key)
            if until is not None:
                if until > now:
                    return True
                del self._locked[key]
        return False

    def _shared_state(self, keys: tuple[str, str]) -> bool:
        assert self.shared is not None
        locked, user_failed = self.shared.state(keys, max(self.window, self.lockout),
                                                time.time())
        if user_failed:
            self._remember(keys[0])
        return locked

    def _remember(self, key: str) -> None:
        if len(self._failed_elsewhere) > 100_000:  # bounded under a spray of names
            self._failed_elsewhere.clear()
        self._failed_elsewhere.add(key)

    def failed(self, user: str, address: str, now: float | None = None) -> bool:
        """Count a failure; True when it locked the user or the address (in this
        process: the database's count may lock it a moment later, from every node's)."""
        now = time.monotonic() if now is None else now
        locked = False
        keys = self._keys(user, address)
        for key in keys:
            seen = self._seen.setdefault(key, deque())
            seen.append(now)
            while seen and seen[0] < now - self.window:
                seen.popleft()
            if len(seen) >= self.failures:
                self._locked[key] = now + self.lockout
                seen.clear()
                locked = True
        if len(self._seen) > 100_000:  # bounded memory under a spray of names
            self._seen.clear()
        if self.shared is not None:
            self.shared.record_failure(keys, self.failures, self.window, self.lockout)
            self._remember(keys[0])
        return locked

    def succeeded(self, user: str, address: str) -> None:
        key = f"user:{user.lower()}"
        self._seen.pop(key, None)
        if self.shared is not None and key in self._failed_elsewhere:
            self._failed_elsewhere.discard(key)
            self.shared.forget_user(key)
