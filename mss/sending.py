"""Sending limits: messages and recipients per window per sender mailbox and per relay, and
IMAP APPEND bytes per window per login (``[limits.sending]``, docs/limits.md).

Counted in the database (table ``send_counters``: one row per sender key and window), so
that every worker process and every node adds up. Two steps:

- :meth:`SendingLimits.count` (at MAIL FROM, and for APPEND before the message is sealed):
  refuse early, before the client sends DATA, from the counts this process last saw for the
  sender (its last bump's answer), or one indexed read of the row when those are within a
  tenth of a cap or unknown;
- :func:`bump`, in the very transaction that records the accepted message (the committer's
  job, after the audit chain lock every writer takes first, so no lock-order deadlock): a
  conditional upsert that adds the message only while the counts stay within the caps.
  It is the authoritative check: concurrent sessions on other processes or nodes that all
  passed the early read cannot push a sender past its cap (the row is locked by the upsert,
  PostgreSQL; the writer is alone, SQLite). A bump that does not fit changes nothing, and
  the job then records nothing either (no exception: the rest of the batch commits).

No in-memory batch: a count per message in the transaction that already commits it costs
one statement more, and is exact across nodes; a batch would let a sender through N times
its cap on N processes until the next flush.

Windows are fixed (``int(time.time() // window)``, aligned on the epoch): a sender may
send its cap at the end of one window and again at the start of the next. A refusal is
audited ``limit.exceeded`` once per key, limit and window for the whole cluster (the row's
``audited`` column, set in the same upsert as the record), and logged once per process.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import structlog
from sqlalchemy import Connection, Engine, Insert, and_, bindparam, delete, not_, select
from sqlalchemy.dialects import postgresql, sqlite

from audit.events import Event, Outcome
from audit.journal import AuditRecord, append, lock_chain
from mss import db
from mss.config import SendingLimitsConfig

log = structlog.get_logger("mss.sending")

C = db.send_counters
Limit = Literal["messages", "recipients", "append_bytes"]
Submit = Callable[[Callable[[Connection], object]], None]  # GroupCommitter.submit
UNLIMITED = 1 << 62  # a cap of 0 (off) in the conditional upsert
PRUNE_EVERY = 1024  # bumps of this process between two deletions of past windows

# RFC 3463 4.7.1 "delivery not authorized", temporary: the client retries later (RFC 5321
# §4.2.5); RFC 9051 §7.1 LIMIT "exceeded a server-set limit"
MAIL_REPLY = "451 4.7.1 Sending limit reached, try again later"
RCPT_REPLY = "451 4.7.1 Recipient limit reached, try again later"
APPEND_TEXT = "APPEND volume limit reached, try again later"

_USAGE = select(C.c.messages, C.c.recipients, C.c.append_bytes).where(and_(
    C.c.key == bindparam("key"), C.c.window == bindparam("window")))


class Usage(NamedTuple):
    messages: int = 0
    recipients: int = 0
    append_bytes: int = 0


@dataclass(frozen=True)
class Caps:
    """The caps of one kind of sender (0: off)."""

    messages: int = 0
    recipients: int = 0
    append_bytes: int = 0

    def over(self, usage: Usage, messages: int = 0, recipients: int = 0,
             append_bytes: int = 0) -> Limit | None:
        """The first limit that *usage* plus the amounts would exceed, or None."""
        for name, cap, used, more in (("messages", self.messages, usage.messages, messages),
                                      ("recipients", self.recipients, usage.recipients,
                                       recipients),
                                      ("append_bytes", self.append_bytes, usage.append_bytes,
                                       append_bytes)):
            if cap and more and used + more > cap:
                return name  # type: ignore[return-value]
        return None

    @property
    def off(self) -> bool:
        return not (self.messages or self.recipients or self.append_bytes)


@dataclass(frozen=True)
class Count:
    """A sender's key, caps and use in one window, as read at the start of a transaction."""

    key: str
    window: int
    caps: Caps
    usage: Usage
    actor: str  # the audit records' actor: the mailbox address or relay:NAME


def near(caps: Caps, usage: Usage) -> bool:
    """Within a tenth of a cap (other processes may have taken that much since): the early
    check reads the database."""
    return any(cap and used + max(1, cap // 10) >= cap for cap, used in (
        (caps.messages, usage.messages), (caps.recipients, usage.recipients),
        (caps.append_bytes, usage.append_bytes)))


def mailbox_key(address: str) -> str:
    return f"mailbox:{address}"[:400]


def relay_key(name: str) -> str:
    return f"relay:{name}"[:400]


def _dialect_insert(conn: Connection) -> Callable[[Any], Any]:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _bump_statement(conn: Connection) -> Insert:
    """INSERT ... ON CONFLICT DO UPDATE ... WHERE the sums stay within the caps (built once
    per dialect; the caps are parameters)."""
    return _bump_for(conn.dialect.name)


@functools.cache
def _bump_for(dialect: str) -> Insert:
    insert_for = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert_for(C).values(
        key=bindparam("key"), window=bindparam("window"), messages=bindparam("m"),
        recipients=bindparam("r"), append_bytes=bindparam("b"), audited="")
    ex = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[C.c.key, C.c.window],
        set_={"messages": C.c.messages + ex.messages,
              "recipients": C.c.recipients + ex.recipients,
              "append_bytes": C.c.append_bytes + ex.append_bytes},
        where=and_(C.c.messages + ex.messages <= bindparam("cap_m"),
                   C.c.recipients + ex.recipients <= bindparam("cap_r"),
                   C.c.append_bytes + ex.append_bytes <= bindparam("cap_b"))
    ).returning(C.c.messages, C.c.recipients, C.c.append_bytes)  # the new counts
    # (no row back: not added; rowcount says 1 either way on psycopg)


def bump(conn: Connection, key: str, window: int, caps: Caps, messages: int = 0,
         recipients: int = 0, append_bytes: int = 0) -> Usage | None:
    """Add the amounts to *key*'s row of *window* when they fit its caps (in the caller's
    transaction, the one recording what they count): the row's new counts (every process's
    and node's), or None, and nothing changed, when they do not fit."""
    if caps.over(Usage(), messages, recipients, append_bytes):
        return None  # more than a whole window's cap at once
    lock_chain(conn)  # every writer's first lock (audit/journal.py): one lock order
    result = conn.execute(_bump_statement(conn), {
        "key": key, "window": window, "m": messages, "r": recipients, "b": append_bytes,
        "cap_m": caps.messages or UNLIMITED, "cap_r": caps.recipients or UNLIMITED,
        "cap_b": caps.append_bytes or UNLIMITED})
    row = result.first()
    return Usage(*row) if row is not None else None


def _mark_statement(conn: Connection, limit: Limit) -> Insert:
    stmt = _dialect_insert(conn)(C).values(key=bindparam("key"), window=bindparam("window"),
                                           messages=0, recipients=0, append_bytes=0,
                                           audited=f",{limit}")
    return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[C.c.key, C.c.window],
        set_={"audited": C.c.audited + f",{limit}"},
        where=not_(C.c.audited.contains(f",{limit}"))).returning(C.c.window)


def audit_once(conn: Connection, key: str, window: int, limit: Limit,
               record: AuditRecord) -> bool:
    """Append *record* unless this key's *limit* was already audited in *window* (by any
    process or node): the mark and the record commit together."""
    lock_chain(conn)
    marked = conn.execute(_mark_statement(conn, limit), {"key": key, "window": window})
    if marked.first() is None:
        return False
    append(conn, [record])
    return True


@dataclass
class SendingLimits:
    """The process's view of ``[limits.sending]``: reads on *reader*, background writes
    (audit of a refusal, pruning) through *submit* (the group committer)."""

    config: SendingLimitsConfig
    reader: Engine
    submit: Submit
    _audited: set[tuple[str, str]] = field(default_factory=set)  # in _window
    _window: int = -1
    _bumps: int = 0
    _seen: dict[str, tuple[int, Usage]] = field(default_factory=dict)  # key: last counts

    @property
    def mailbox(self) -> Caps:
        cfg = self.config
        return Caps(cfg.messages_per_mailbox, cfg.recipients_per_mailbox,
                    cfg.append_bytes_per_mailbox)

    @property
    def relay(self) -> Caps:
        return Caps(self.config.messages_per_relay, self.config.recipients_per_relay)

    def window(self, now: float | None = None) -> int:
        return int((time.time() if now is None else now) // self.config.window)

    def usage(self, key: str, window: int) -> Usage:
        """The counts of *key* in *window* (one indexed read; the caller runs it off the
        event loop on a database server)."""
        with self.reader.connect() as conn:
            row = conn.execute(_USAGE, {"key": key, "window": window}).first()
        return Usage(*row) if row is not None else Usage()

    def count(self, key: str, caps: Caps, actor: str) -> Count:
        """*key*'s caps and use in the current window: the counts this process last saw
        (its last bump's, every node's at that time) while they are clear of the caps, else
        one read of the database (the early check only: the bump decides)."""
        window = self.window()
        seen = self._seen.get(key)
        if seen is not None and seen[0] == window and not near(caps, seen[1]):
            return Count(key, window, caps, seen[1], actor)
        usage = self.usage(key, window)
        self.saw(key, window, usage)
        return Count(key, window, caps, usage, actor)

    def saw(self, key: str, window: int, usage: Usage) -> None:
        if len(self._seen) > 10_000:
            self._seen.clear()  # bounded under a spray of senders
        self._seen[key] = (window, usage)

    def counted(self, key: str, window: int, usage: Usage) -> None:
        """A bump committed by this process, *usage* the counts it returned; every
        PRUNE_EVERY, past windows are deleted."""
        self.saw(key, window, usage)
        self._bumps += 1
        if self._bumps % PRUNE_EVERY == 0:
            before = self.window() - 1  # the previous window stays (reports, clock skew)

            def prune(conn: Connection) -> None:
                lock_chain(conn)  # the writers' one lock order (two nodes pruning at once)
                conn.execute(delete(C).where(C.c.window < before))
            self.submit(prune)

    def refused(self, key: str, window: int, limit: Limit, record: AuditRecord) -> None:
        """A refusal over *limit*: audited once per key, limit and window (cluster-wide),
        logged once per process; nothing more for the next ones."""
        if window != self._window or len(self._audited) > 10_000:
            self._audited.clear()  # bounded: this window's keys only
            self._window = window
        seen = (key, limit)
        if seen in self._audited:
            return
        self._audited.add(seen)
        log.warning("sending limit reached", key=key, limit=limit, window=window,
                    window_seconds=self.config.window)
        self.submit(lambda conn: audit_once(conn, key, window, limit, record))

    def record(self, key: str, window: int, limit: Limit, caps: Caps, **fields: Any
               ) -> AuditRecord:
        """The ``limit.exceeded`` record of a refusal (*fields*: the session's)."""
        cap = getattr(caps, limit)
        return AuditRecord(Event.LIMIT_EXCEEDED, Outcome.MINOR_FAILURE, reason=limit,
                           detail={"key": key, "limit": cap,
                                   "window_start": window * self.config.window,
                                   "window": self.config.window}, **fields)
