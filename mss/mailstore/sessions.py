"""The session registry (issue 16, ``mss sessions``): who is logged in, on which node.

Two tables (mss/db.py). ``serving_processes``: one row per ``mss serve`` process (worker),
its id drawn at each start (a boot id: a restarted process never takes over its
predecessor's rows) and its ``heartbeat_at`` moved every ``sessions.heartbeat`` seconds.
``client_sessions``: one row per logged-in session, inserted by the login's own transaction
(the one holding its audit record: no commit added per login), deleted when the session
ends (a background write, batched with the others by the group committer) or with its
process (a clean stop deletes its rows; the rows of a process that died are hidden once
its heartbeat is :data:`STALE_HEARTBEATS` heartbeats old and deleted by the next
heartbeat of any process).

``mss sessions end`` sets a row's ``ended_at``: the session's process sees it at its next
change round (:func:`ended_here`, one indexed read) or at the session's next state check
(:func:`session_live`), and the session ends (IMAP: ``* BYE``). SQL only: the runtime's
:class:`mss.session_registry.SessionRegistry` drives it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, and_, bindparam, delete, insert, select, update

from mss import db
from mss.mailstore.mailboxes import mailbox_enabled, may_go_on, session_states

P, S = db.serving_processes, db.client_sessions
STALE_HEARTBEATS = 3  # a process silent for this many heartbeats is taken for dead
PROTOCOLS = ("imap", "smtp")


@dataclass(frozen=True)
class SessionRow:
    """One live session as ``mss sessions list`` shows it."""

    id: str
    node: str
    worker: int
    pid: int
    protocol: str
    listener: str
    remote_addr: str
    mailbox: str
    auth_method: str
    started_at: float
    ended_at: float | None  # ended by an operator, not yet gone


# ------------------------------------------------------------------ serving processes

def register_process(conn: Connection, process_id: str, node: str, worker: int, pid: int,
                     now: float) -> None:
    conn.execute(insert(P).values(id=process_id, node=node[:255], worker=worker, pid=pid,
                                  started_at=now, heartbeat_at=now))


def heartbeat(conn: Connection, process_id: str, live: Iterable[str], now: float,
              stale_before: float) -> int:
    """Move this process's heartbeat (its row written again if it was reaped meanwhile:
    a process paused longer than the stale limit comes back), delete its rows of sessions
    no longer live (a removal lost) and reap the processes silent since *stale_before*
    with their sessions. Returns the processes reaped."""
    keep = set(live)
    mine = set(conn.execute(select(S.c.id).where(S.c.process_id == process_id)).scalars())
    gone = sorted(mine - keep)
    for i in range(0, len(gone), 500):
        conn.execute(delete(S).where(S.c.id.in_(gone[i:i + 500])))
    conn.execute(update(P).where(P.c.id == process_id).values(heartbeat_at=now))
    dead = list(conn.execute(select(P.c.id).where(P.c.heartbeat_at < stale_before)
                             .where(P.c.id != process_id)).scalars())
    if dead:
        conn.execute(delete(S).where(S.c.process_id.in_(dead)))
        conn.execute(delete(P).where(P.c.id.in_(dead)))
    return len(dead)


def process_known(conn: Connection, process_id: str) -> bool:
    return conn.execute(select(P.c.id).where(P.c.id == process_id)).first() is not None


def unregister_process(conn: Connection, process_id: str) -> None:
    """A clean stop: the process and every session row it held."""
    conn.execute(delete(S).where(S.c.process_id == process_id))
    conn.execute(delete(P).where(P.c.id == process_id))


# ------------------------------------------------------------------ sessions

def add_session(conn: Connection, session_id: str, process_id: str, protocol: str,
                listener: str, mailbox_id: int, remote_addr: str, auth_method: str,
                now: float) -> None:
    """In the login's transaction (with its audit record)."""
    conn.execute(insert(S).values(id=session_id, process_id=process_id, protocol=protocol,
                                  listener=listener[:32], mailbox_id=mailbox_id,
                                  remote_addr=remote_addr[:64],
                                  auth_method=auth_method[:32], started_at=now))


def remove_sessions(conn: Connection, session_ids: Iterable[str]) -> None:
    ids = sorted(set(session_ids))
    for i in range(0, len(ids), 500):
        conn.execute(delete(S).where(S.c.id.in_(ids[i:i + 500])))


_LIVE = (select(S.c.id, P.c.node, P.c.worker, P.c.pid, S.c.protocol, S.c.listener, S.c.remote_addr,
                db.mailboxes.c.address.label("mailbox"), S.c.auth_method, S.c.started_at,
                S.c.ended_at)
         .join(P, P.c.id == S.c.process_id)
         .join(db.mailboxes, db.mailboxes.c.id == S.c.mailbox_id))


def live_sessions(conn: Connection, stale_before: float, mailbox_id: int | None = None,
                  session_id: str | None = None) -> list[SessionRow]:
    """The sessions of every process whose heartbeat is not older than *stale_before*,
    oldest first (of one mailbox, or the one *session_id*)."""
    query = _LIVE.where(P.c.heartbeat_at >= stale_before)
    if mailbox_id is not None:
        query = query.where(S.c.mailbox_id == mailbox_id)
    if session_id is not None:
        query = query.where(S.c.id == session_id)
    rows = conn.execute(query.order_by(S.c.started_at, S.c.id))
    return [SessionRow(**r._mapping) for r in rows]


def end_session(conn: Connection, session_id: str, now: float) -> bool:
    """Mark one session ended; False when it is unknown or already ended."""
    return bool(conn.execute(update(S).where(and_(S.c.id == session_id, S.c.ended_at.is_(None)))
                             .values(ended_at=now)).rowcount)


def end_mailbox_sessions(conn: Connection, mailbox_id: int, now: float) -> list[str]:
    """Mark every registered session of the mailbox ended (their processes end them at
    their next change round); the ids marked."""
    ids = list(conn.execute(select(S.c.id).where(and_(S.c.mailbox_id == mailbox_id,
                                                      S.c.ended_at.is_(None)))).scalars())
    if ids:
        conn.execute(update(S).where(and_(S.c.mailbox_id == mailbox_id,
                                          S.c.ended_at.is_(None))).values(ended_at=now))
    return ids


_ENDED_HERE = select(S.c.id).where(and_(S.c.process_id == bindparam("process_id"),
                                        S.c.ended_at.is_not(None)))


def ended_here(conn: Connection, process_id: str) -> list[str]:
    """The sessions of this process an operator ended (one probe of the process index)."""
    return list(conn.execute(_ENDED_HERE, {"process_id": process_id}).scalars())


_ENDED = select(S.c.ended_at).where(S.c.id == bindparam("session_id"))


def session_live(conn: Connection, session_id: str, mailbox_id: int, since: float
                 ) -> str | None:
    """None while a session may go on; else why it must end: "ended" (mss sessions end)
    or "disabled" (mailboxes.mailbox_enabled: disabled, suspended, being deleted, its
    domain suspended, its sessions ended since *since*)."""
    if conn.execute(_ENDED, {"session_id": session_id}).scalar() is not None:
        return "ended"
    return None if mailbox_enabled(conn, mailbox_id, since) else "disabled"


def sessions_live(conn: Connection, checks: Iterable[tuple[str, int, float]]
                  ) -> dict[str, str]:
    """:func:`session_live` of many sessions (session id, mailbox id, login time) in a few
    queries (a process's IDLE sessions, checked together every imap.enabled_check): why
    each of those that must end must end ("ended" or "disabled")."""
    checks = list(checks)
    ids = [c[0] for c in checks]
    out: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        out.update((sid, "ended") for sid in conn.execute(
            select(S.c.id).where(S.c.id.in_(ids[i:i + 500]), S.c.ended_at.is_not(None)))
            .scalars())
    states = session_states(conn, sorted({c[1] for c in checks}))
    for session_id, mailbox_id, since in checks:
        if session_id not in out and not may_go_on(states.get(mailbox_id), since):
            out[session_id] = "disabled"
    return out
