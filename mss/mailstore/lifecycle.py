"""A mailbox's life after ``mss mailbox add`` (issue 16, docs/lifecycle.md): a new
password, suspension and resumption, re-enabling, renaming, deletion with a grace period
and the purge that ends it; a domain's suspension and removal.

Each function changes the rows in the caller's transaction (the CLI's, with its audit
record) and raises :class:`StoreError` on a state that does not allow the change, before
writing anything. A change that must end the mailbox's open sessions calls
:func:`~mss.mailstore.mailboxes.end_sessions` in the same transaction: IMAP sessions check it
every ``imap.enabled_check`` seconds (proxy/imap/connection.py), on every worker and node.

Renaming keeps every ciphertext as it is: a message's AEAD data binds the mailbox *key id*
(``mailbox:<id>``, mss/crypto.py ``_message_ad``) and a folder name's the mailbox id
(mss/mailstore/names.py), never the address, so only the address columns change.

The purge (:func:`purge`) removes, in one transaction, every row of the mailbox (messages,
folders, grants both ways, app passwords, certificate bindings, sending counters, the
portal sessions of its holder when no other mailbox of theirs remains, the mailbox row) and
destroys its key (:meth:`mss.crypto.Keyring.destroy`: crypto-shredding, what a copy of the
database still holds cannot be opened). The audit trail keeps its records: they name the
address, never content.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, bindparam, delete, func, or_, select, update

from audit.events import Event
from audit.journal import AuditRecord, append
from mss import crypto, db
from mss.mailstore.errors import StoreError
from mss.mailstore.mailboxes import (
    Mailbox,
    _address,
    end_sessions,
    get_mailbox,
    mailbox_of,
    require_mailbox,
    select_mailboxes,
)


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _set(conn: Connection, mailbox: Mailbox, **values: object) -> None:
    conn.execute(update(db.mailboxes).where(db.mailboxes.c.id == mailbox.id).values(**values))


def _reread(conn: Connection, mailbox: Mailbox) -> Mailbox:
    row = conn.execute(select_mailboxes().where(db.mailboxes.c.id == mailbox.id)).one()
    return mailbox_of(row)


def _not_deleting(mailbox: Mailbox, doing: str) -> None:
    if mailbox.state == "deleting":
        raise StoreError(f"mailbox {mailbox.address} is being deleted: cannot {doing} it "
                         f"(mss mailbox undelete {mailbox.address} first)")


# --------------------------------------------------------------------------- password

def set_password(conn: Connection, address: str, password_hash: str | None,
                 now: float | None = None) -> Mailbox:
    """Replace the mailbox's password (None: none, logins by certificate or token only);
    every session opened with the old one ends."""
    mailbox = require_mailbox(conn, address)
    _not_deleting(mailbox, "set the password of")
    _set(conn, mailbox, password_hash=password_hash)
    end_sessions(conn, mailbox.id, _now(now))
    return _reread(conn, mailbox)


# --------------------------------------------------------------------------- suspension

def suspend(conn: Connection, address: str, now: float | None = None) -> Mailbox:
    """Logins refused and sessions ended until :func:`resume`; inbound mail deferred or
    kept (lifecycle.suspended_inbound). Only an active mailbox is suspended."""
    mailbox = require_mailbox(conn, address)
    if mailbox.state in ("disabled", "deleting") or mailbox.suspended_at is not None:
        raise StoreError(f"mailbox {mailbox.address} is {mailbox.state}, not active: "
                         "only an active mailbox can be suspended")
    when = _now(now)  # (one of a suspended domain too: it stays so when the domain resumes)
    _set(conn, mailbox, suspended_at=when)
    end_sessions(conn, mailbox.id, when)
    return _reread(conn, mailbox)


def resume(conn: Connection, address: str) -> Mailbox:
    mailbox = require_mailbox(conn, address)
    if mailbox.suspended_at is None or mailbox.state != "suspended":
        domain = mailbox.address.split("@", 1)[1]
        hint = f" (its domain is: mss domain resume {domain})" \
            if mailbox.domain_suspended and mailbox.suspended_at is None else ""
        raise StoreError(f"mailbox {mailbox.address} is {mailbox.state}, not suspended{hint}")
    _set(conn, mailbox, suspended_at=None)
    return _reread(conn, mailbox)


def enable(conn: Connection, address: str) -> Mailbox:
    """Undo ``mss mailbox disable`` (not a shredded mailbox: its key is gone)."""
    mailbox = require_mailbox(conn, address)
    _not_deleting(mailbox, "enable")
    if mailbox.enabled:
        raise StoreError(f"mailbox {mailbox.address} is not disabled (state {mailbox.state})")
    key_id = crypto.mailbox_key_id(mailbox.id)
    if conn.execute(select(db.keyring.c.key_id).where(db.keyring.c.key_id == key_id)
                    ).first() is None:
        raise StoreError(f"mailbox {mailbox.address} was shredded (mss keys shred): its key "
                         "is gone, it cannot be enabled")
    _set(conn, mailbox, enabled=True, disabled_at=None)
    return _reread(conn, mailbox)


# --------------------------------------------------------------------------- rename

def _hosted_domain_id(conn: Connection, domain: str) -> int:
    domain_id = conn.execute(select(db.domains.c.id).where(db.domains.c.name == domain)).scalar()
    if domain_id is None:
        raise StoreError(f"domain {domain} is not hosted here (mss domain add {domain})")
    return int(domain_id)


def rename(conn: Connection, address: str, new_address: str,
           now: float | None = None) -> tuple[Mailbox, Mailbox]:
    """Give the mailbox another address, in its domain or another hosted one: folders,
    messages, grants, app passwords and certificate bindings follow (they hold the mailbox
    id); its sending counters follow too. Sessions end (they hold the old address).
    (old, new)."""
    mailbox = require_mailbox(conn, address)
    new = _address(new_address)
    _not_deleting(mailbox, "rename")
    if new == mailbox.address:
        raise StoreError(f"mailbox {mailbox.address} already has that address")
    domain_id = _hosted_domain_id(conn, new.split("@", 1)[1])
    if get_mailbox(conn, new) is not None:
        raise StoreError(f"mailbox {new} already exists")
    _set(conn, mailbox, address=new, domain_id=domain_id)
    old_key, new_key = f"mailbox:{mailbox.address}"[:400], f"mailbox:{new}"[:400]
    conn.execute(delete(db.send_counters).where(db.send_counters.c.key == new_key))
    conn.execute(update(db.send_counters).where(db.send_counters.c.key == old_key)
                 .values(key=new_key))
    end_sessions(conn, mailbox.id, _now(now))
    return mailbox, _reread(conn, mailbox)


# --------------------------------------------------------------------------- deletion

def schedule_delete(conn: Connection, address: str, grace: float,
                    now: float | None = None) -> Mailbox:
    """State "deleting" until now + *grace*, then :func:`purge` (the periodic job):
    logins refused, sessions ended, inbound mail refused as unknown. Refused under legal
    hold (mss mailbox hold)."""
    mailbox = require_mailbox(conn, address)
    if mailbox.state == "deleting":
        raise StoreError(f"mailbox {mailbox.address} is already being deleted")
    if mailbox.held_at is not None:
        raise StoreError(f"mailbox {mailbox.address} is under legal hold: it cannot be "
                         "deleted until released (mss mailbox release)")
    when = _now(now)
    _set(conn, mailbox, delete_after=when + grace)
    end_sessions(conn, mailbox.id, when)
    return _reread(conn, mailbox)


def cancel_delete(conn: Connection, address: str) -> Mailbox:
    """Cancel a scheduled deletion (during the grace period): back to its former state."""
    mailbox = require_mailbox(conn, address)
    if mailbox.state != "deleting":
        raise StoreError(f"mailbox {mailbox.address} is not being deleted (state "
                         f"{mailbox.state})")
    _set(conn, mailbox, delete_after=None)
    return _reread(conn, mailbox)


def due_for_purge(conn: Connection, now: float | None = None) -> list[Mailbox]:
    """Mailboxes whose grace period ended (a legal hold set since keeps them)."""
    m = db.mailboxes.c
    rows = conn.execute(select(db.mailboxes).where(
        m.delete_after.is_not(None), m.delete_after <= _now(now), m.held_at.is_(None))
        .order_by(m.delete_after))
    return [mailbox_of(r) for r in rows]


@dataclass(frozen=True)
class Purged:
    """What :func:`purge` removed (counts for the audit record; no content)."""

    mailbox: Mailbox
    messages: int
    bytes: int
    folders: int
    grants: int
    app_passwords: int
    certificates: int
    portal_sessions: int

    def counts(self) -> dict[str, int]:
        return {"messages": self.messages, "bytes": self.bytes, "folders": self.folders,
                "grants": self.grants, "app_passwords": self.app_passwords,
                "certificates": self.certificates, "portal_sessions": self.portal_sessions}


def purge(conn: Connection, keyring: crypto.Keyring, mailbox_id: int,
          now: float | None = None, *, immediate: bool = False) -> Purged | None:
    """Remove mailbox *mailbox_id* for good, in the caller's transaction: its rows, then
    its key (crypto-shredding). None when it is no longer due (deletion cancelled, legal
    hold, another process purged it first); *immediate*: due whatever its delete_after
    (``mss mailbox delete --now``), a legal hold still refuses."""
    # FOR UPDATE (PostgreSQL): an undelete or hold committing meanwhile waits for us, or
    # we see it (SQLite's BEGIN IMMEDIATE serialises writers anyway)
    row = conn.execute(select(db.mailboxes).where(db.mailboxes.c.id == mailbox_id)
                       .with_for_update()).first()
    if row is None:
        return None
    mailbox = mailbox_of(row)
    if mailbox.held_at is not None:
        if immediate:
            raise StoreError(f"mailbox {mailbox.address} is under legal hold: it cannot be "
                             "deleted until released (mss mailbox release)")
        return None
    if not immediate and (mailbox.delete_after is None or mailbox.delete_after > _now(now)):
        return None
    size = conn.execute(select(func.count(), func.coalesce(func.sum(db.messages.c.size), 0))
                        .where(db.messages.c.mailbox_id == mailbox_id)).one()
    counts = {}
    for name, statement in (
            ("messages", delete(db.messages).where(db.messages.c.mailbox_id == mailbox_id)),
            ("folders", delete(db.folders).where(db.folders.c.mailbox_id == mailbox_id)),
            ("grants", delete(db.mailbox_grants).where(or_(
                db.mailbox_grants.c.mailbox_id == mailbox_id,
                db.mailbox_grants.c.grantee_id == mailbox_id))),
            ("app_passwords", delete(db.app_passwords)
             .where(db.app_passwords.c.mailbox_id == mailbox_id)),
            ("certificates", delete(db.mailbox_certificates)
             .where(db.mailbox_certificates.c.mailbox_id == mailbox_id))):
        counts[name] = conn.execute(statement).rowcount
    conn.execute(delete(db.send_counters)
                 .where(db.send_counters.c.key == f"mailbox:{mailbox.address}"[:400]))
    # its registry rows (mss sessions; none once its sessions ended: mss mailbox delete)
    conn.execute(delete(db.client_sessions)
                 .where(db.client_sessions.c.mailbox_id == mailbox_id))
    counts["portal_sessions"] = 0
    if mailbox.rpps and conn.execute(select(db.mailboxes.c.id).where(
            db.mailboxes.c.rpps == mailbox.rpps, db.mailboxes.c.id != mailbox_id)).first() is None:
        # its holder has no other mailbox here: their portal sessions end with it
        counts["portal_sessions"] = conn.execute(delete(db.portal_sessions).where(
            db.portal_sessions.c.national_id == "8" + mailbox.rpps)).rowcount
    conn.execute(delete(db.mailboxes).where(db.mailboxes.c.id == mailbox_id))
    key_id = crypto.mailbox_key_id(mailbox_id)
    if conn.execute(select(db.keyring.c.key_id).where(db.keyring.c.key_id == key_id)).first():
        keyring.destroy(conn, key_id)  # absent: shredded before (mss keys shred)
    return Purged(mailbox, messages=counts["messages"], bytes=int(size[1]),
                  folders=counts["folders"], grants=counts["grants"],
                  app_passwords=counts["app_passwords"], certificates=counts["certificates"],
                  portal_sessions=counts["portal_sessions"])


def purge_due(engine: Engine, keyring: crypto.Keyring, now: float | None = None,
              actor: str = "mss") -> list[Purged]:
    """One round of the purge job (mss serve, elected; *now*: the clock, tests give
    theirs): each mailbox whose grace period ended is purged in a transaction of its own,
    with its ``mailbox.purge`` audit record (counts only)."""
    with engine.connect() as conn:
        due = [m.id for m in due_for_purge(conn, now)]
    done = []
    for mailbox_id in due:
        with engine.begin() as conn:  # re-checked inside: cancelled or held since, skipped
            purged = purge(conn, keyring, mailbox_id, now)
            if purged is None:
                continue
            append(conn, [AuditRecord(Event.MAILBOX_PURGE, actor=actor,
                                      mailbox=purged.mailbox.address,
                                      detail={"type": purged.mailbox.type,
                                              **purged.counts()})])
        done.append(purged)
    if done:  # committed: this process ratchets its key file or token now (docs/keys.md)
        with engine.connect() as conn:
            keyring.catch_up(conn)
    return done


# --------------------------------------------------------------------------- inbound

# SMTP RCPT (a hot path): a mailbox and its domain's suspension in one query; a domain's
# hosting, next hop and suspension in one more when there is no such mailbox
_RECIPIENT = select_mailboxes().where(db.mailboxes.c.address == bindparam("address"))
_DOMAIN = select(db.domains.c.relay_to, db.domains.c.suspended_at) \
    .where(db.domains.c.name == bindparam("name"))


@dataclass(frozen=True)
class Recipient:
    """What RCPT needs of a recipient of a hosted domain, or of a domain we do not host."""

    mailbox: Mailbox | None
    hosted: bool  # its domain is hosted here
    next_hop: str | None  # no mailbox here, the domain's mail goes to this host:port
    domain_suspended: bool


def recipient(conn: Connection, address: str) -> Recipient:
    """*address* normalised (lower case, IDNA domain)."""
    row = conn.execute(_RECIPIENT, {"address": address}).first()
    if row is not None:
        mailbox = mailbox_of(row)
        return Recipient(mailbox, True, None, mailbox.domain_suspended)
    found = conn.execute(_DOMAIN, {"name": address.rsplit("@", 1)[1]}).first()
    if found is None:
        return Recipient(None, False, None, False)
    return Recipient(None, True, str(found.relay_to) if found.relay_to else None,
                     found.suspended_at is not None)


# --------------------------------------------------------------------------- domains

@dataclass(frozen=True)
class Domain:
    name: str
    relay_to: str | None
    suspended_at: float | None
    mailboxes: int

    @property
    def state(self) -> str:
        return "suspended" if self.suspended_at is not None else "active"


def require_domain(conn: Connection, name: str) -> Domain:
    from mss.addresses import normalize_domain

    try:
        domain = normalize_domain(name)
    except ValueError as exc:
        raise StoreError(f"invalid domain {name!r}: {exc}") from None
    row = conn.execute(select(db.domains).where(db.domains.c.name == domain)).first()
    if row is None:
        raise StoreError(f"domain {domain} is not hosted here")
    count = conn.execute(select(func.count()).select_from(db.mailboxes)
                         .where(db.mailboxes.c.domain_id == row.id)).scalar_one()
    return Domain(row.name, row.relay_to or None, row.suspended_at, int(count))


def list_domains(conn: Connection) -> list[Domain]:
    counts: dict[int, int] = {r[0]: r[1] for r in conn.execute(
        select(db.mailboxes.c.domain_id, func.count()).group_by(db.mailboxes.c.domain_id))}
    rows = conn.execute(select(db.domains).order_by(db.domains.c.name))
    return [Domain(r.name, r.relay_to or None, r.suspended_at, int(counts.get(r.id, 0)))
            for r in rows]


def _domain_mailbox_ids(conn: Connection, name: str) -> list[int]:
    return list(conn.execute(select(db.mailboxes.c.id).join(
        db.domains, db.domains.c.id == db.mailboxes.c.domain_id)
        .where(db.domains.c.name == name)).scalars())


def suspend_domain(conn: Connection, name: str, now: float | None = None) -> Domain:
    """Every mailbox of the domain as suspended (their own state kept for the resume):
    logins refused, sessions ended, inbound mail deferred or kept."""
    domain = require_domain(conn, name)
    if domain.suspended_at is not None:
        raise StoreError(f"domain {domain.name} is already suspended")
    when = _now(now)
    conn.execute(update(db.domains).where(db.domains.c.name == domain.name)
                 .values(suspended_at=when))
    for mailbox_id in _domain_mailbox_ids(conn, domain.name):
        end_sessions(conn, mailbox_id, when)
    return require_domain(conn, domain.name)


def resume_domain(conn: Connection, name: str) -> Domain:
    domain = require_domain(conn, name)
    if domain.suspended_at is None:
        raise StoreError(f"domain {domain.name} is not suspended")
    conn.execute(update(db.domains).where(db.domains.c.name == domain.name)
                 .values(suspended_at=None))
    return require_domain(conn, domain.name)


def remove_domain(conn: Connection, name: str) -> Domain:
    """Stop hosting a domain: refused while it has mailboxes (mss mailbox delete, then
    the purge), so that no mail of it stays here unreachable."""
    domain = require_domain(conn, name)
    if domain.mailboxes:
        raise StoreError(f"domain {domain.name} still has {domain.mailboxes} mailbox(es): "
                         "delete them first (mss mailbox delete)")
    conn.execute(delete(db.domains).where(db.domains.c.name == domain.name))
    return domain
