"""Mailboxes: create (with the default folders), look up, disable, count."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select, bindparam, func, insert, select, update

from mss import crypto, db
from mss.addresses import AddressError, normalize_address
from mss.mailstore.errors import StoreError
from mss.mailstore.folders import ensure_default_folders
from mss.mailstore.notify import request_rounds

# A mailbox row with its domain's suspension (mss domain suspend): Mailbox.state and
# .usable say "suspended" for both, so that every login path refuses it (issue 16).
DOMAIN_SUSPENDED = db.domains.c.suspended_at.label("domain_suspended_at")


def select_mailboxes() -> Select[Any]:
    """``SELECT mailboxes.*, domain_suspended_at`` (what :func:`mailbox_of` reads), the
    mailboxes joined to their domain (the caller's joins and filters follow)."""
    return select(db.mailboxes, DOMAIN_SUSPENDED).select_from(db.mailboxes.join(
        db.domains, db.domains.c.id == db.mailboxes.c.domain_id))


# Statements on the SMTP hot path are built once; SQLAlchemy caches their compiled form.
_MAILBOX_BY_ADDRESS = select_mailboxes().where(db.mailboxes.c.address == bindparam("address"))


MAILBOX_TYPES = ("PER", "ORG", "APP", "CAB")  # CAB: a practice (cabinet), issue 16


@dataclass(frozen=True)
class Mailbox:
    id: int
    address: str
    type: str
    enabled: bool
    rpps: str | None
    finess: str | None
    created_at: float
    password_hash: str | None = field(default=None, repr=False)
    liste_rouge: bool = False
    suspended_at: float | None = None  # mss mailbox suspend (issue 16)
    delete_after: float | None = None  # mss mailbox delete: purged after this
    held_at: float | None = None  # mss mailbox hold: legal hold
    hold_reason: str | None = None
    sessions_ended_at: float | None = None  # sessions begun before it end
    domain_suspended: bool = False  # mss domain suspend: as if the mailbox were suspended

    @property
    def state(self) -> str:
        """active | suspended (itself or its domain) | disabled | deleting (deletion
        scheduled)."""
        if self.delete_after is not None:
            return "deleting"
        if not self.enabled:
            return "disabled"
        suspended = self.suspended_at is not None or self.domain_suspended
        return "suspended" if suspended else "active"

    @property
    def usable(self) -> bool:
        """Logins allowed."""
        return self.state == "active"


def _address(address: str) -> str:
    """*address* normalised (mss.addresses), a StoreError when invalid."""
    try:
        return normalize_address(address)
    except AddressError as exc:
        raise StoreError(str(exc)) from None


def mailbox_of(row: object) -> Mailbox:
    m = row._mapping  # type: ignore[attr-defined]
    return Mailbox(id=m["id"], address=m["address"], type=m["type"], enabled=bool(m["enabled"]),
                   rpps=m["rpps"], finess=m["finess"], created_at=m["created_at"],
                   password_hash=m["password_hash"], liste_rouge=bool(m["liste_rouge"]),
                   suspended_at=m["suspended_at"], delete_after=m["delete_after"],
                   held_at=m["held_at"], hold_reason=m["hold_reason"],
                   sessions_ended_at=m["sessions_ended_at"],
                   domain_suspended=m.get("domain_suspended_at") is not None)


def add_mailbox(conn: Connection, keyring: crypto.Keyring, address: str, mailbox_type: str,
                *, rpps: str | None = None, finess: str | None = None,
                password_hash: str | None = None, liste_rouge: bool = False) -> Mailbox:
    address = _address(address)
    mailbox_type = mailbox_type.upper()
    if mailbox_type not in MAILBOX_TYPES:
        raise StoreError(f"invalid mailbox type {mailbox_type!r}: use PER, ORG, APP or CAB")
    if rpps is not None and not re.fullmatch(r"\d{11}", rpps):
        raise StoreError(f"invalid RPPS {rpps!r}: 11 digits expected")
    if finess is not None and not re.fullmatch(r"\d[0-9AB]\d{7}", finess):
        raise StoreError(f"invalid FINESS {finess!r}: 9 characters expected")
    if mailbox_type == "PER" and finess and not rpps:
        raise StoreError("a PER mailbox is a professional's: give --rpps")
    domain = address.split("@", 1)[1]
    domain_id = conn.execute(select(db.domains.c.id).where(db.domains.c.name == domain)).scalar()
    if domain_id is None:
        raise StoreError(f"domain {domain} is not hosted here (mss domain add {domain})")
    if conn.execute(select(db.mailboxes.c.id).where(db.mailboxes.c.address == address)).first():
        raise StoreError(f"mailbox {address} already exists")
    now = time.time()
    mailbox_id = conn.execute(insert(db.mailboxes).values(
        address=address, domain_id=domain_id, type=mailbox_type, rpps=rpps, finess=finess,
        password_hash=password_hash, enabled=True, created_at=now, liste_rouge=liste_rouge,
    )).inserted_primary_key[0]  # type: ignore[index]
    keyring.create_key(conn, crypto.mailbox_key_id(mailbox_id))
    ensure_default_folders(conn, keyring, mailbox_id)
    return Mailbox(mailbox_id, address, mailbox_type, True, rpps, finess, now, password_hash,
                   liste_rouge)


def get_mailbox(conn: Connection, address: str) -> Mailbox | None:
    row = conn.execute(_MAILBOX_BY_ADDRESS, {"address": address.lower()}).first()
    return mailbox_of(row) if row else None


def require_mailbox(conn: Connection, address: str) -> Mailbox:
    mailbox = get_mailbox(conn, _address(address))
    if mailbox is None:
        raise StoreError(f"no mailbox {address}")
    return mailbox


def list_mailboxes(conn: Connection) -> list[Mailbox]:
    rows = conn.execute(select_mailboxes().order_by(db.mailboxes.c.address))
    return [mailbox_of(r) for r in rows]


def disable_mailbox(conn: Connection, address: str) -> Mailbox:
    mailbox = require_mailbox(conn, address)
    if not mailbox.enabled:
        raise StoreError(f"mailbox {mailbox.address} is already disabled")
    now = time.time()
    conn.execute(update(db.mailboxes).where(db.mailboxes.c.id == mailbox.id)
                 .values(enabled=False, disabled_at=now))
    end_sessions(conn, mailbox.id, now)  # at once, not at their next state check
    return mailbox


def mailbox_counts(conn: Connection, mailbox_id: int) -> tuple[int, int]:
    """(messages, total bytes) in a mailbox."""
    row = conn.execute(select(func.count(), func.coalesce(func.sum(db.messages.c.size), 0))
                       .where(db.messages.c.mailbox_id == mailbox_id)).one()
    return int(row[0]), int(row[1])


_SESSION_COLUMNS = select(db.mailboxes.c.id, db.mailboxes.c.enabled,
                          db.mailboxes.c.suspended_at, db.mailboxes.c.delete_after,
                          db.mailboxes.c.sessions_ended_at,
                          db.domains.c.suspended_at.label("domain_suspended_at")) \
    .join(db.domains, db.domains.c.id == db.mailboxes.c.domain_id)
_SESSION_STATE = _SESSION_COLUMNS.where(db.mailboxes.c.id == bindparam("mailbox_id"))
_SESSION_STATES = _SESSION_COLUMNS.where(db.mailboxes.c.id.in_(bindparam("ids",
                                                                          expanding=True)))


def mailbox_enabled(conn: Connection, mailbox_id: int, since: float | None = None) -> bool:
    """A logged-in session of the mailbox may go on: enabled, neither suspended nor being
    deleted, its domain not suspended and, for a session begun at *since* (time.time()),
    its sessions not ended since (mss mailbox passwd, mss sessions end --mailbox)."""
    return may_go_on(conn.execute(_SESSION_STATE, {"mailbox_id": mailbox_id}).first(), since)


def may_go_on(row: Any, since: float | None) -> bool:
    """:func:`mailbox_enabled` on a row of :data:`_SESSION_STATE` (None: no mailbox)."""
    if row is None or not row.enabled or row.suspended_at is not None or \
            row.delete_after is not None or row.domain_suspended_at is not None:
        return False
    return since is None or row.sessions_ended_at is None or row.sessions_ended_at < since


def session_states(conn: Connection, mailbox_ids: list[int]) -> dict[int, Any]:
    """The :data:`_SESSION_STATE` rows of many mailboxes (chunks of 500 ids), by id."""
    out: dict[int, Any] = {}
    for i in range(0, len(mailbox_ids), 500):
        out.update((row.id, row) for row in conn.execute(
            _SESSION_STATES, {"ids": mailbox_ids[i:i + 500]}))
    return out


def end_sessions(conn: Connection, mailbox_id: int, now: float | None = None) -> None:
    """Every session of the mailbox begun before *now* ends: the registered ones at once
    (their rows marked ended: each serving process ends its own at its next change round,
    PostgreSQL nodes asked for one at the commit), any other at its next state check (IMAP:
    at most imap.enabled_check seconds later, on every worker and node)."""
    when = time.time() if now is None else now
    conn.execute(update(db.mailboxes).where(db.mailboxes.c.id == mailbox_id)
                 .values(sessions_ended_at=when))
    s = db.client_sessions
    if conn.execute(update(s).where(s.c.mailbox_id == mailbox_id, s.c.ended_at.is_(None),
                                    s.c.started_at <= when).values(ended_at=when)).rowcount:
        request_rounds(conn)
