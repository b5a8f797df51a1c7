"""Portal sessions, server-side in the database (table ``portal_sessions``): every worker
and node serving the portal reads the same rows, so a browser may land on any of them.

The cookie carries a 256-bit random secret; the row is keyed by its SHA-256, so reading
the table (a backup, a replica) gives no usable cookie. A session starts *pending* (the
OIDC state, nonce and PKCE verifier of a login in progress) and becomes *logged in* under
a new secret at the callback (no session fixation). It ends after ``portal.session_idle``
seconds without a request, ``portal.session_max`` seconds after its login, or at logout.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, or_, select, update

from mss import db

TOUCH_EVERY = 15.0  # seconds: last_seen is rewritten at most this often (one commit a request)


@dataclass(frozen=True)
class Session:
    key: str  # sha256 of the cookie secret (the row id)
    public_id: str  # in the audit records, never the cookie
    csrf: str
    issuer: str
    national_id: str | None  # None: a login in progress
    subject: str | None
    state: str | None
    nonce: str | None
    verifier: str | None
    created_at: float
    last_seen: float

    @property
    def logged_in(self) -> bool:
        return self.national_id is not None


def key_of(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii", "replace")).hexdigest()


def _session(m: Mapping[Any, Any]) -> Session:
    return Session(m["id"], m["public_id"], m["csrf"], m["issuer"], m["national_id"],
                   m["subject"], m["state"], m["nonce"], m["verifier"], m["created_at"],
                   m["last_seen"])


def start_login(conn: Connection, issuer: str, state: str, nonce: str, verifier: str,
                now: float) -> tuple[str, Session]:
    """A pending session; (cookie secret, session)."""
    secret = secrets.token_urlsafe(32)
    values: dict[str, Any] = {
        "id": key_of(secret), "public_id": secrets.token_hex(8),
        "csrf": secrets.token_urlsafe(32), "issuer": issuer, "national_id": None,
        "subject": None, "state": state, "nonce": nonce, "verifier": verifier,
        "created_at": now, "last_seen": now}
    conn.execute(insert(db.portal_sessions).values(**values))
    return secret, _session(values)


def log_in(conn: Connection, pending: Session, national_id: str, subject: str,
           now: float) -> tuple[str, Session]:
    """The pending session replaced by a logged-in one under a new secret (its state,
    nonce and verifier gone); (cookie secret, session). Raises LookupError when the
    pending session was already used (a replayed callback)."""
    gone = conn.execute(delete(db.portal_sessions).where(
        db.portal_sessions.c.id == pending.key,
        db.portal_sessions.c.national_id.is_(None))).rowcount
    if gone != 1:
        raise LookupError("login already completed or expired")
    secret = secrets.token_urlsafe(32)
    values: dict[str, Any] = {
        "id": key_of(secret), "public_id": pending.public_id,
        "csrf": secrets.token_urlsafe(32), "issuer": pending.issuer,
        "national_id": national_id, "subject": subject, "state": None, "nonce": None,
        "verifier": None, "created_at": now, "last_seen": now}
    conn.execute(insert(db.portal_sessions).values(**values))
    return secret, _session(values)


def find(conn: Connection, secret: str) -> Session | None:
    row = conn.execute(select(db.portal_sessions).where(
        db.portal_sessions.c.id == key_of(secret))).first()
    return _session(row._mapping) if row is not None else None


def alive(session: Session, now: float, *, idle: float, maximum: float,
          login_timeout: float) -> bool:
    if not session.logged_in:
        return now - session.created_at <= login_timeout
    return now - session.last_seen <= idle and now - session.created_at <= maximum


def touch(conn: Connection, session: Session, now: float) -> None:
    conn.execute(update(db.portal_sessions).where(db.portal_sessions.c.id == session.key)
                 .values(last_seen=now))


def end(conn: Connection, session: Session) -> None:
    conn.execute(delete(db.portal_sessions).where(db.portal_sessions.c.id == session.key))


def prune(conn: Connection, now: float, *, idle: float, maximum: float,
          login_timeout: float) -> int:
    """Delete the sessions past their idle, maximum or login time."""
    t = db.portal_sessions
    return int(conn.execute(delete(t).where(or_(
        t.c.last_seen < now - max(idle, login_timeout),
        t.c.created_at < now - max(maximum, login_timeout)))).rowcount or 0)
