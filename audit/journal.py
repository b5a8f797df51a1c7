"""The audit journal: append-only, hash-chained rows written inside the caller's transaction.

A record is written in the same SQL transaction as the exchange it describes, so an
acknowledged message always has its audit record and a rolled-back one never does. Each row
carries ``prev_hash`` and ``hash = sha256(prev_hash || canonical JSON of the row)``;
:mod:`audit.checkpoints` signs checkpoints of the chain and :mod:`audit.verify` (``mss audit
verify``) checks it.

Several nodes append to one chain (PostgreSQL): a record hashes its predecessor, so appends
are serialized by the cluster lock ``audit-chain`` (:func:`lock_chain`, an advisory lock held
until the transaction ends), taken before the head is read. Under READ COMMITTED each
statement sees what was committed before it began, so the head read after the lock is the
head every earlier holder committed (on SQLite, ``BEGIN IMMEDIATE`` serializes writers
already). Because the lock is held until commit, ids also commit in chain order: a reader of
``id > n`` (the shipper's cursor) never sees a lower id appear later. Writers of folder state
take it first too (:func:`mss.mailstore.state.bump`), so every writing transaction takes its
locks in one order, chain lock then rows, and two nodes' batches never deadlock on it.

A record never holds message content or a subject: only envelope data, ids and reasons.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select

from audit.events import Event, Outcome, kind
from mss import db
from mss.locks import xact_lock

GENESIS = "0" * 64
_HEAD = "audit.journal.head"  # the chain head, in the committer's transaction scratch space
# the records appended in a committer's transaction, for its observer after the commit
# (mss/metrics.py counts what was committed)
COMMITTED = "audit.journal.committed"
_LOCKED = "audit.journal.locked"  # the chain lock is held by the committer's transaction
CHAIN_LOCK = "audit-chain"


@dataclass
class AuditRecord:
    event: Event
    outcome: Outcome = Outcome.SUCCESS
    actor: str | None = None
    remote_addr: str | None = None
    session: str | None = None
    listener: str | None = None
    message_id: str | None = None
    mail_from: str | None = None
    rcpt: str | None = None
    mailbox: str | None = None
    reason: str | None = None
    whitelist_version: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    ts: str = ""

    def __post_init__(self) -> None:
        # refuse an event the catalogue does not list (mypy catches it first, when the
        # caller names a member; a string is accepted if it is a member's value)
        self.event = kind(self.event).name
        if not self.ts:
            self.ts = now_iso()


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_FIELDS = ("ts", "event", "outcome", "actor", "remote_addr", "session", "listener",
           "message_id", "mail_from", "rcpt", "mailbox", "reason", "whitelist_version")


def _row_of(record: AuditRecord) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in _FIELDS}
    row["event"] = str(record.event)  # the member's value, as a plain str
    row["outcome"] = int(record.outcome)
    row["detail"] = json.dumps(record.detail, sort_keys=True, separators=(",", ":")) \
        if record.detail else None
    return row


def chain_hash(prev_hash: str, row: dict[str, Any]) -> str:
    canonical = json.dumps({k: row.get(k) for k in (*_FIELDS, "detail")}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(prev_hash.encode("ascii") + canonical.encode("utf-8")).hexdigest()


def lock_chain(conn: Connection) -> None:
    """Hold the cluster lock of the chain until *conn*'s transaction ends: once per
    committer transaction (its scratch space remembers), at each call otherwise (an
    advisory lock taken again by its holder is granted at once)."""
    cache = db.scratch(conn)
    if cache is not None:
        if cache.get(_LOCKED):
            return
        cache[_LOCKED] = True
    xact_lock(conn, CHAIN_LOCK)


def append(conn: Connection, records: Iterable[AuditRecord]) -> None:
    """Insert *records* in order, chained to the newest row; the caller commits."""
    records = list(records)
    rows = [_row_of(r) for r in records]
    if not rows:
        return
    cache = db.scratch(conn)
    if cache is not None:
        cache.setdefault(COMMITTED, []).extend(records)
    prev = cache.get(_HEAD) if cache is not None else None
    if prev is None:
        lock_chain(conn)  # before the head is read: no other node appends until we commit
        prev = conn.execute(
            select(db.audit_log.c.hash).order_by(db.audit_log.c.id.desc()).limit(1)
        ).scalar() or GENESIS
    for row in rows:
        row["prev_hash"] = prev
        row["hash"] = prev = chain_hash(prev, row)
    conn.execute(insert(db.audit_log), rows)
    if cache is not None:
        cache[_HEAD] = prev


def query(conn: Connection, *, mailbox: str | None = None, since: str | None = None,
          until: str | None = None, actor: str | None = None, event: str | None = None,
          outcome: int | None = None, message_id: str | None = None,
          patient: str | None = None, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Rows as dicts, oldest first. *mailbox* matches the mailbox, actor, sender or
    recipient; *event* matches a kind or a dotted prefix ('admin.mailbox' or 'admin.mailbox.'
    matches admin.mailbox.add, not admin.mailboxes); *message_id* with or without its angle
    brackets (RFC 5322 §3.6.4 msg-id); times are ISO 8601 UTC."""
    t = db.audit_log
    stmt = select(t).order_by(t.c.id)
    if mailbox:
        m = mailbox.lower()
        stmt = stmt.where((t.c.mailbox == m) | (t.c.actor == m) | (t.c.mail_from == m)
                          | (t.c.rcpt == m))
    if since:
        stmt = stmt.where(t.c.ts >= since)
    if until:
        stmt = stmt.where(t.c.ts < until)
    if actor:
        stmt = stmt.where(t.c.actor == actor)
    if event:
        stem = event.removesuffix(".")
        stmt = stmt.where((t.c.event == stem)
                          | t.c.event.startswith(f"{stem}.", autoescape=True))
    if outcome is not None:
        stmt = stmt.where(t.c.outcome == outcome)
    if message_id:
        bare = message_id.strip().removeprefix("<").removesuffix(">")
        stmt = stmt.where(t.c.message_id.in_([f"<{bare}>", bare]))
    if patient:
        stmt = stmt.where(t.c.detail.contains(f'"patient":"{patient}"'))
    if limit:
        stmt = stmt.limit(limit)
    for row in conn.execute(stmt):
        out = dict(row._mapping)
        out["detail"] = json.loads(out["detail"]) if out["detail"] else {}
        yield out


def count(conn: Connection, *, since: str | None = None, until: str | None = None) -> int:
    """Rows in the time window (what an export will print)."""
    t = db.audit_log
    stmt = select(func.count()).select_from(t)
    if since:
        stmt = stmt.where(t.c.ts >= since)
    if until:
        stmt = stmt.where(t.c.ts < until)
    return int(conn.execute(stmt).scalar() or 0)


def query_after(conn: Connection, after_id: int, limit: int) -> Iterator[dict[str, Any]]:
    """Rows with id > *after_id*, oldest first (the audit outbox)."""
    t = db.audit_log
    for row in conn.execute(select(t).where(t.c.id > after_id).order_by(t.c.id).limit(limit)):
        out = dict(row._mapping)
        out["detail"] = json.loads(out["detail"]) if out["detail"] else {}
        yield out



def access_history(conn: Connection, addresses: Iterable[str], events: Iterable[str], *,
                   limit: int, before_id: int | None = None) -> list[dict[str, Any]]:
    """The newest rows (at most *limit*, id below *before_id*) of *events* whose mailbox or
    actor is one of *addresses*: what was done to those mailboxes, by them or by a
    delegate (the portal's access history)."""
    t = db.audit_log
    wanted = [a.lower() for a in addresses]
    stmt = (select(t).where(t.c.event.in_(list(events)),
                            t.c.mailbox.in_(wanted) | t.c.actor.in_(wanted))
            .order_by(t.c.id.desc()).limit(limit))
    if before_id is not None:
        stmt = stmt.where(t.c.id < before_id)
    out = []
    for row in conn.execute(stmt):
        item = dict(row._mapping)
        item["detail"] = json.loads(item["detail"]) if item["detail"] else {}
        out.append(item)
    return out
