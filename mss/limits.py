"""Resource bounds shared by the SMTP and IMAP listeners of one serving process.

- :class:`ConnectionLimiter`: per listener, connections in total and per client address,
  and of those not yet authenticated, in total and per address. Over a cap the listener
  answers ``421 4.7.0`` (SMTP) or ``* BYE`` (IMAP) and closes.
- :class:`MemoryBudget`: the bytes held by SMTP DATA and IMAP literals being read, summed
  over the sessions of the process; past it DATA gets ``452 4.3.1`` and a literal ``NO``,
  both temporary.
- :class:`ReportGate`: at most one log line (and audit record) per key and interval, with
  the count of the events it stood for.
- :func:`install_loop_error_handler`: asyncio's own errors (``socket.accept() out of system
  resource`` while descriptors are exhausted, failed TLS handshakes...) logged through the
  gate instead of one traceback each.

- :class:`OpenFiles`: the connections of all listeners against the process's descriptor
  limit, so that ``accept()`` does not run out of them.

Everything is per serving process: with ``server.workers = N`` a client gets N budgets.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import structlog

from audit.events import Event, Outcome
from audit.journal import AuditRecord, append
from mss.committer import GroupCommitter
from mss.config import ListenerConfig

log = structlog.get_logger("mss.limits")

# refusal reasons (audit reason and log field)
TOTAL, PER_ADDRESS, PREAUTH, PREAUTH_PER_ADDRESS, OPEN_FILES = (
    "max_connections", "max_connections_per_address", "max_preauth",
    "max_preauth_per_address", "open_files")
FILES_RESERVE = 256  # descriptors kept for the database, logs, outbound delivery, TLS


@dataclass
class OpenFiles:
    """Connections of every listener of the process against the descriptors it may open:
    a connection is refused before ``accept()`` could fail with EMFILE (asyncio then retries
    in a loop that grows with each failure)."""

    limit: int
    used: int = 0

    @classmethod
    def of_process(cls, reserve: int = FILES_RESERVE) -> OpenFiles:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 20
        return cls(max(16, soft - reserve))


@dataclass
class Admission:
    """One admitted connection; :meth:`authenticated` once it logs in, :meth:`release` at
    close (both idempotent)."""

    limiter: ConnectionLimiter
    address: str
    preauth: bool = True
    released: bool = False

    def authenticated(self) -> None:
        if self.preauth and not self.released:
            self.preauth = False
            self.limiter._drop(self.limiter.preauth, self.address)

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        if self.preauth:
            self.limiter._drop(self.limiter.preauth, self.address)
        self.limiter._drop(self.limiter.connections, self.address)
        if self.limiter.files is not None:
            self.limiter.files.used -= 1


@dataclass
class ConnectionLimiter:
    """The caps of one listener (``listeners.NAME.max_*``)."""

    max_connections: int
    max_per_address: int
    max_preauth: int
    max_preauth_per_address: int
    connections: Counter[str] = field(default_factory=Counter)
    preauth: Counter[str] = field(default_factory=Counter)
    total: int = 0
    preauth_total: int = 0
    files: OpenFiles | None = None  # shared by the listeners of the process

    def admit(self, address: str) -> Admission | str:
        """An :class:`Admission`, or the name of the cap a new connection would exceed."""
        if self.files is not None and self.files.used >= self.files.limit:
            return OPEN_FILES
        if self.total >= self.max_connections:
            return TOTAL
        if self.connections[address] >= self.max_per_address:
            return PER_ADDRESS
        if self.preauth_total >= self.max_preauth:
            return PREAUTH
        if self.preauth[address] >= self.max_preauth_per_address:
            return PREAUTH_PER_ADDRESS
        self.connections[address] += 1
        self.preauth[address] += 1
        self.total += 1
        self.preauth_total += 1
        if self.files is not None:
            self.files.used += 1
        return Admission(self, address)

    def _drop(self, counter: Counter[str], address: str) -> None:
        counter[address] -= 1
        if counter[address] <= 0:
            del counter[address]  # bounded memory: only addresses with open connections
        if counter is self.connections:
            self.total -= 1
        else:
            self.preauth_total -= 1


@dataclass
class MemoryBudget:
    """Bytes of DATA and literals held by the sessions of this process."""

    limit: int
    used: int = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used = max(0, self.used - size)


@dataclass
class ProcessLimits:
    """What the listeners of one serving process share."""

    budget: MemoryBudget
    files: OpenFiles


@dataclass
class ReportGate:
    """``due(key)`` is the number of events since the last report of *key* when one is due
    (at most one per *interval* seconds), else 0; counts what it suppresses."""

    interval: float
    _last: dict[str, float] = field(default_factory=dict)
    _counts: Counter[str] = field(default_factory=Counter)

    def due(self, key: str, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        self._counts[key] += 1
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return 0
        self._last[key] = now
        if len(self._last) > 10_000:  # bounded under a spray of keys
            self._last = {key: now}
        count = self._counts.pop(key)
        if len(self._counts) > 10_000:
            self._counts.clear()
        return count


def install_loop_error_handler(loop: asyncio.AbstractEventLoop, interval: float) -> None:
    """Route asyncio's error reports (accept() failing with EMFILE/ENFILE, handshake and
    transport errors) through a :class:`ReportGate`: one line per kind and interval, without
    traceback, with the number of occurrences it stands for."""
    gate = ReportGate(interval)

    def handle(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "event loop error"))
        error = context.get("exception")
        kind = f"{message}|{type(error).__name__}"
        count = gate.due(kind)
        if count:
            log.error("event loop error", message=message, error=repr(error),
                      occurrences=count, interval=interval)

    loop.set_exception_handler(handle)


def raise_open_files_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards *wanted* (at most the hard limit); the limit
    now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


@dataclass
class ListenerGuard:
    """A listener's :class:`ConnectionLimiter` plus the report of its refusals: a log line
    and a ``connection.refused`` audit record per cap and *interval* (with the count)."""

    listener: str
    limiter: ConnectionLimiter
    committer: GroupCommitter
    gate: ReportGate

    @classmethod
    def of(cls, listener: ListenerConfig, committer: GroupCommitter, interval: float,
           files: OpenFiles | None = None) -> ListenerGuard:
        return cls(listener.name, ConnectionLimiter(
            listener.max_connections, listener.max_connections_per_address,
            listener.max_preauth, listener.max_preauth_per_address, files=files),
            committer, ReportGate(interval))

    def admit(self, address: str) -> Admission | None:
        result = self.limiter.admit(address)
        if isinstance(result, Admission):
            return result
        count = self.gate.due(result)
        if count:
            log.warning("connection refused", listener=self.listener, reason=result,
                        remote=address, refused=count, interval=self.gate.interval)
            record = AuditRecord(Event.CONNECTION_REFUSED, Outcome.MINOR_FAILURE, actor=address,
                                 remote_addr=address, listener=self.listener, reason=result,
                                 detail={"refused": count, "interval": self.gate.interval})
            self.committer.submit(lambda conn: append(conn, [record]))
        return None
