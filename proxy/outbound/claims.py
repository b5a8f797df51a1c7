"""Queue rows: leased claims and the recording of each attempt's result (SQL only).

A worker claims due rows in one write transaction: the UPDATE repeats the "due and not
leased" condition, so two workers (processes or nodes) never hold the same row; a worker
that dies leaves its lease to expire and any worker reclaims the row then. On PostgreSQL
the rows are picked ``FOR UPDATE SKIP LOCKED`` (PostgreSQL docs, SELECT, "The Locking
Clause"): a node's worker skips the rows another node's worker is claiming instead of
waiting for its commit and then finding them leased (SQLite has one writer at a time).
Every result is written with its audit record in one transaction; a row becomes
``delivered`` only after the peer's 250 (a crash in between can deliver twice: RFC 5321
§6.1 allows duplicates, never loss).

Row statuses: ``queued`` (waiting or leased), ``delivered``, ``bounced`` (permanent
failure, or bounced by an operator), ``expired`` (attempts or max_age used up).

Holds (``mss queue hold DOMAIN``, issue 16): no worker claims a queued row of a held
domain (the claim's condition, so every worker and node honours it at its next claim; a
row already leased finishes its attempt). A held row is not attempted, hence never
expires while held: expiry is decided after an attempt, and the time a row spent held
(``held_for``, added at the release) does not count towards delivery.max_age. The
release makes the domain's rows due at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    Integer,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)

from audit.events import Event, Outcome
from audit.journal import AuditRecord, append
from mss import db

Q = db.outbound_queue
H = db.queue_holds
FINAL = ("delivered", "bounced", "expired")


@dataclass(frozen=True)
class Claim:
    id: str
    mail_from: str
    rcpt: str
    domain: str
    message_id: str | None
    size: int
    attempts: int
    created_at: float
    patient: str | None = None  # pseudonym from the submission (delivery.queued record)
    # RFC 3461 parameters (mss.dsn): the recipient's NOTIFY and ORCPT, the message's RET and
    # ENVID; when the last "delayed" report was written
    dsn_notify: str | None = None
    dsn_orcpt: str | None = None
    dsn_ret: str | None = None
    dsn_envid: str | None = None
    delay_reported_at: float | None = None
    held_for: float = 0.0  # seconds held (mss queue hold): not counted in max_age

    @property
    def aged_from(self) -> float:
        """When the row's delivery.max_age counts from: its creation, moved by the time
        it spent held."""
        return self.created_at + self.held_for


def _held() -> Any:
    """The row's domain is held (a correlated probe of queue_holds' key)."""
    return exists().where(H.c.domain == Q.c.domain)


def _due(now: Any) -> Any:  # a time, or the bound parameter of one
    return and_(Q.c.status == "queued", Q.c.next_attempt_at <= now,
                or_(Q.c.lease_until.is_(None), Q.c.lease_until < now), ~_held())


# The worker's statements run for every message: built once, with bound parameters (a
# statement object keeps its cache key, so SQLAlchemy neither rebuilds nor recompiles it)
_NOW = bindparam("q_now", type_=Float)
_PICK = (select(Q.c.id).where(_due(_NOW)).order_by(Q.c.next_attempt_at)
         .limit(bindparam("q_limit", type_=Integer)))
_CLAIMED = (Q.c.id, Q.c.mail_from, Q.c.rcpt, Q.c.domain, Q.c.message_id, Q.c.size,
            Q.c.attempts, Q.c.created_at, Q.c.patient, Q.c.dsn_notify, Q.c.dsn_orcpt,
            Q.c.dsn_ret, Q.c.dsn_envid, Q.c.delay_reported_at, Q.c.held_for)


def _lease(pick: Any) -> Any:
    """One statement: lease the picked rows, return them (the outer condition repeats
    "due and not leased", so a row another worker leased meanwhile is left alone)."""
    return (update(Q).where(Q.c.id.in_(pick) & _due(_NOW))
            .values(lease_owner=bindparam("q_owner"), lease_until=bindparam("q_until"))
            .returning(*_CLAIMED))


_CLAIM = _lease(_PICK)
# PostgreSQL: the pick in a MATERIALIZED CTE, run once before the update; as a plain IN
# (subquery ... LIMIT n FOR UPDATE SKIP LOCKED) the planner may run it as a join that
# re-evaluates the pick, leasing more than n rows (tests/test_cluster.py)
_CLAIM_PG = _lease(select(_PICK.with_for_update(skip_locked=True)
                          .cte("picked").prefix_with("MATERIALIZED").c.id))
_DUE_EXISTS = select(Q.c.id).where(_due(_NOW)).limit(1)
_NEXT_DUE = (select(func.min(case((Q.c.lease_until > Q.c.next_attempt_at, Q.c.lease_until),
                                  else_=Q.c.next_attempt_at)))
             .where(Q.c.status == "queued").where(~_held()))
_DELIVERED = update(Q).where(Q.c.id == bindparam("q_id")).values(
    status="delivered", attempts=Q.c.attempts + 1, lease_owner=None, lease_until=None,
    last_error=None, remote_reply=bindparam("q_reply"), updated_at=bindparam("q_at"))


def claim(conn: Connection, owner: str, now: float, lease: float, limit: int) -> list[Claim]:
    """Lease up to *limit* due rows to *owner* until now + lease."""
    if limit <= 0:
        return []
    statement = _CLAIM_PG if conn.dialect.name == "postgresql" else _CLAIM
    rows = conn.execute(statement, {"q_now": now, "q_limit": limit, "q_owner": owner,
                                    "q_until": now + lease})
    return [Claim(**r._mapping) for r in rows]


def due_exists(conn: Connection, now: float) -> bool:
    """A row a worker could claim now (the change watcher's check: one index probe)."""
    return conn.execute(_DUE_EXISTS, {"q_now": now}).first() is not None


def next_due(conn: Connection) -> float | None:
    """When the earliest waiting row becomes claimable (its retry time, or the end of the
    lease another worker holds on it); None when nothing waits (held rows wait for their
    release, whose commit wakes the workers)."""
    value = conn.execute(_NEXT_DUE).scalar()
    return float(value) if value is not None else None


def release(conn: Connection, owner: str, queue_id: str | None = None) -> int:
    """Give back the leases of *owner* (all, at a clean stop, or one row not attempted):
    the rows are due again at once."""
    where = (Q.c.lease_owner == owner) & (Q.c.status == "queued")
    if queue_id is not None:
        where = where & (Q.c.id == queue_id)
    return conn.execute(update(Q).where(where)
                        .values(lease_owner=None, lease_until=None)).rowcount


def _record(event: Event, c: Claim, outcome: Outcome, reason: str | None,
            detail: dict[str, Any], actor: str = "mss") -> AuditRecord:
    about = {"patient": c.patient} if c.patient else {}
    return AuditRecord(event, outcome, actor=actor, message_id=c.message_id,
                       mail_from=c.mail_from, rcpt=c.rcpt, reason=reason,
                       detail={"queue_id": c.id, **detail, **about})


def delivered(conn: Connection, c: Claim, host: str, reply: str, now: float,
              peer_dn: str | None = None, peer_dsn: bool | None = None) -> None:
    """The row is delivered; its record names the server that took it (host, certificate
    subject DN) and the patient, so the message's path can be followed to the peer."""
    conn.execute(_DELIVERED, {"q_id": c.id, "q_reply": reply, "q_at": now})
    peer: dict[str, Any] = {"peer_dn": peer_dn} if peer_dn else {}
    if peer_dsn is not None:  # the peer offered DSN: the RFC 3461 parameters went on
        peer["dsn"] = peer_dsn
    append(conn, [_record(Event.QUEUE_DELIVERED, c, Outcome.SUCCESS, reply,
                          {"host": host, **peer, "attempt": c.attempts + 1, "size": c.size})])


def deferred(conn: Connection, c: Claim, reason: str, reply: str | None, next_at: float,
             now: float, *, counts_attempt: bool = True,
             delay_reported: bool = False) -> None:
    """Back to waiting until *next_at*; *counts_attempt* False: no attempt was made (a
    row held by a local peer block, trustspace/blocks.py); *delay_reported*: a "delayed"
    report was written in this transaction (its time kept: at most one per
    delivery.delay_warning_repeat)."""
    values: dict[str, Any] = {"delay_reported_at": now} if delay_reported else {}
    step = 1 if counts_attempt else 0
    conn.execute(update(Q).where(Q.c.id == c.id).values(
        attempts=Q.c.attempts + step, lease_owner=None, lease_until=None, last_error=reason,
        remote_reply=reply, next_attempt_at=next_at, updated_at=now, **values))
    append(conn, [_record(Event.QUEUE_DEFERRED, c, Outcome.MINOR_FAILURE, reason,
                          {"attempt": c.attempts + step, "next_attempt_at": round(next_at, 3)})])


def failed(conn: Connection, c: Claim, status: str, reason: str, reply: str | None,
           now: float, *, counts_attempt: bool = True, actor: str = "mss") -> bool:
    """Mark the row ``bounced`` or ``expired`` (*status*); False when it was final already."""
    event = Event.QUEUE_BOUNCED if status == "bounced" else Event.QUEUE_EXPIRED
    done = conn.execute(update(Q).where((Q.c.id == c.id) & Q.c.status.notin_(FINAL)).values(
        status=status, attempts=Q.c.attempts + (1 if counts_attempt else 0),
        lease_owner=None, lease_until=None, last_error=reason, remote_reply=reply,
        updated_at=now)).rowcount
    if done:
        append(conn, [_record(event, c, Outcome.SERIOUS_FAILURE, reason,
                              {"attempts": c.attempts + (1 if counts_attempt else 0)}, actor)])
    return bool(done)


# --------------------------------------------------------------------------- operator views

def get(conn: Connection, queue_id: str) -> dict[str, Any] | None:
    """One row without its ciphertext; *queue_id* may be a unique prefix (>= 8 chars)."""
    rows = matching(conn, queue_id, 2)
    return rows[0] if len(rows) == 1 else None


def matching(conn: Connection, prefix: str, limit: int = 1000) -> list[dict[str, Any]]:
    """Rows (no ciphertext) whose id starts with *prefix* (>= 8 chars), oldest first: the
    16-character id of ``250 ... queued as`` names every row of its transaction."""
    if len(prefix) < 8:
        return []
    columns = [c for c in Q.c if c.name not in ("key_blob", "body_blob")]
    query = (select(*columns).where(Q.c.id.startswith(prefix, autoescape=True))
             .order_by(Q.c.created_at, Q.c.id).limit(limit))
    return [dict(r._mapping) for r in conn.execute(query)]


def as_claim(row: dict[str, Any]) -> Claim:
    return Claim(id=row["id"], mail_from=row["mail_from"], rcpt=row["rcpt"],
                 domain=row["domain"], message_id=row["message_id"], size=row["size"],
                 attempts=row["attempts"], created_at=row["created_at"],
                 patient=row.get("patient"), dsn_notify=row.get("dsn_notify"),
                 dsn_orcpt=row.get("dsn_orcpt"), dsn_ret=row.get("dsn_ret"),
                 dsn_envid=row.get("dsn_envid"),
                 delay_reported_at=row.get("delay_reported_at"),
                 held_for=row.get("held_for") or 0.0)


def listing(conn: Connection, status: str | None, limit: int) -> list[dict[str, Any]]:
    """Rows without ciphertext, oldest first, each with ``held`` (its domain is held);
    *status* "held": the queued rows of held domains."""
    columns = [c for c in Q.c if c.name not in ("key_blob", "body_blob")]
    query = select(*columns, _held().label("held")).order_by(Q.c.created_at).limit(limit)
    if status == "held":
        query = query.where(Q.c.status == "queued").where(_held())
    elif status:
        query = query.where(Q.c.status == status)
    return [{**r._mapping, "held": bool(r.held)} for r in conn.execute(query)]


# --------------------------------------------------------------------------- holds

@dataclass(frozen=True)
class Hold:
    domain: str
    held_at: float
    held_by: str
    reason: str | None
    rows: int  # queued rows of the domain


def _queued_of(domain: str) -> Any:
    return and_(Q.c.domain == domain, Q.c.status == "queued")


def holds(conn: Connection, domain: str | None = None) -> list[Hold]:
    """The held domains (or *domain*'s hold), with their queued rows."""
    count = (select(func.count()).where(and_(Q.c.domain == H.c.domain,
                                             Q.c.status == "queued"))
             .scalar_subquery())
    query = select(H.c.domain, H.c.held_at, H.c.held_by, H.c.reason, count.label("rows"))
    if domain is not None:
        query = query.where(H.c.domain == domain)
    return [Hold(**r._mapping) for r in conn.execute(query.order_by(H.c.domain))]


def hold(conn: Connection, domain: str, held_by: str, reason: str | None, now: float) -> int:
    """Hold *domain* (the caller checked it is not held); its queued rows."""
    conn.execute(insert(H).values(domain=domain, held_at=now, held_by=held_by[:320],
                                  reason=reason))
    return int(conn.execute(select(func.count()).where(_queued_of(domain))).scalar_one())


def release_hold(conn: Connection, held: Hold, now: float) -> int:
    """Lift *held*: its queued rows are due now, each credited the time it spent held
    (since the hold, or since it was queued if later). Returns the rows released."""
    since = case((Q.c.created_at > held.held_at, Q.c.created_at), else_=held.held_at)
    released = conn.execute(update(Q).where(_queued_of(held.domain)).values(
        held_for=Q.c.held_for + func.max(0.0, now - since)
        if conn.dialect.name == "sqlite" else
        Q.c.held_for + func.greatest(0.0, now - since),
        next_attempt_at=now, updated_at=now)).rowcount
    conn.execute(delete(H).where(H.c.domain == held.domain))
    return int(released)


def retry(conn: Connection, queue_id: str | None, now: float) -> list[Claim]:
    """Make one row (or every waiting row) due now; a bounced or expired row is queued
    again with its attempts reset. Returns the rows changed."""
    columns = [c for c in Q.c if c.name not in ("key_blob", "body_blob")]
    where = Q.c.status != "delivered"
    if queue_id is not None:
        where = where & (Q.c.id == queue_id)
    rows = [dict(r._mapping) for r in conn.execute(select(*columns).where(where))]
    for row in rows:
        values: dict[str, Any] = {"next_attempt_at": now, "updated_at": now}
        if row["status"] != "queued":
            values.update(status="queued", attempts=0, created_at=now, lease_owner=None,
                          lease_until=None, delay_reported_at=None, held_for=0.0)
        conn.execute(update(Q).where(Q.c.id == row["id"]).values(**values))
    return [as_claim(r) for r in rows]


def purge(conn: Connection, statuses: tuple[str, ...]) -> int:
    return conn.execute(delete(Q).where(Q.c.status.in_(statuses))).rowcount


HELD_PREFIX = "peer_blocked:"  # last_error of a row the worker holds for a local block


def release_held(conn: Connection, now: float, domain: str | None = None) -> int:
    """Waiting rows held or failed by a local peer block (``mss peer unblock``) made due
    now: those of *domain*, or (a certificate DN unblocked: None) every such row."""
    where = (Q.c.status == "queued") & Q.c.last_error.contains(HELD_PREFIX, autoescape=True)
    if domain is not None:
        where = where & (Q.c.domain == domain)
    return conn.execute(update(Q).where(where).values(next_attempt_at=now,
                                                      updated_at=now)).rowcount
