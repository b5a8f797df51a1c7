"""App passwords: one per device of a mailbox's owner, scoped to IMAP and/or SMTP
submission, shown once, listed with their last use, revocable (docs/app-passwords.md).

The secret is made here, never chosen by a person: 24 characters of a 31-letter alphabet
(over 118 bits from :mod:`secrets`), shown in groups of four. Only its SHA-256 is stored.
A slow hash (scrypt, as mailbox passwords) protects guessable secrets; against a random
118-bit one an offline search is hopeless either way, so a fast hash costs nothing in
safety and keeps an app-password login cheap (no salt either: no two secrets are alike, so
a precomputed table has nothing to share). A login compares the digest with each live app
password of the mailbox in constant time (:func:`matching`).

Writes are functions of the caller's connection and transaction (its audit record commits
with them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, and_, bindparam, func, insert, select, update

from mss import db
from mss.mailstore.errors import StoreError

SCOPES = ("imap", "smtp")
CREATORS = ("operator", "portal")
ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no i, l, o, 0, 1: read off a screen
SECRET_LENGTH = 24  # 24 * log2(31) > 118 bits
GROUP = 4
MAX_LABEL = 64
MAX_ACTIVE = 20  # live app passwords per mailbox: bounds the work of a login
_PREFIX = b"mss-app-password:v1\0"  # domain separation of the stored digest

_LIVE_OF_MAILBOX = (select(db.app_passwords.c.id, db.app_passwords.c.scopes,
                           db.app_passwords.c.hash)
                    .where(and_(db.app_passwords.c.mailbox_id == bindparam("mailbox_id"),
                                db.app_passwords.c.revoked_at.is_(None)))
                    .order_by(db.app_passwords.c.id))


@dataclass(frozen=True)
class AppPassword:
    id: int
    mailbox_id: int
    label: str
    scopes: tuple[str, ...]
    created_at: float
    created_by: str
    last_used_at: float | None
    last_used_from: str | None
    revoked_at: float | None

    @property
    def state(self) -> str:
        return "revoked" if self.revoked_at is not None else "active"


def normalize_secret(secret: str) -> str:
    """The secret as generated: group separators (spaces, dashes) dropped, NFKC, lower case
    (a client that shows it upper case, a user who typed the groups with spaces)."""
    text = unicodedata.normalize("NFKC", secret)
    return "".join(ch for ch in text if ch not in " -\t").lower()


def digest(secret: str) -> str:
    raw = hashlib.sha256(_PREFIX + normalize_secret(secret).encode("utf-8")).digest()
    return "$sha256$" + base64.b64encode(raw).decode("ascii").rstrip("=")


def new_secret() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(SECRET_LENGTH))
    return "-".join(raw[i:i + GROUP] for i in range(0, SECRET_LENGTH, GROUP))


def parse_scopes(scopes: str | Iterable[str]) -> tuple[str, ...]:
    """("imap", "smtp") in that order from "imap,smtp", "smtp" or an iterable; a StoreError
    for an unknown or empty set."""
    items = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    wanted = {item.strip().lower() for item in items if item.strip()}
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise StoreError(f"unknown app password scope {unknown[0]!r}: use imap, smtp or both")
    if not wanted:
        raise StoreError("an app password needs a scope: imap, smtp or both")
    return tuple(s for s in SCOPES if s in wanted)


def _label(label: str) -> str:
    text = unicodedata.normalize("NFC", label).strip()
    if not text:
        raise StoreError("an app password needs a label (the device it is for)")
    if len(text) > MAX_LABEL:
        raise StoreError(f"app password label longer than {MAX_LABEL} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in text):
        raise StoreError("app password label with a control character")
    return text


def _of(row: object) -> AppPassword:
    m = row._mapping  # type: ignore[attr-defined]
    return AppPassword(id=m["id"], mailbox_id=m["mailbox_id"], label=m["label"],
                       scopes=tuple(s for s in m["scopes"].split(",") if s),
                       created_at=m["created_at"], created_by=m["created_by"],
                       last_used_at=m["last_used_at"], last_used_from=m["last_used_from"],
                       revoked_at=m["revoked_at"])


def create(conn: Connection, mailbox_id: int, label: str, scopes: str | Iterable[str],
           created_by: str) -> tuple[AppPassword, str]:
    """A new app password of *mailbox_id* and its secret (shown once, never stored)."""
    if created_by not in CREATORS:
        raise ValueError(f"created_by {created_by!r}: one of {CREATORS}")
    label, scope_tuple = _label(label), parse_scopes(scopes)
    live = conn.execute(select(func.count()).select_from(db.app_passwords).where(and_(
        db.app_passwords.c.mailbox_id == mailbox_id,
        db.app_passwords.c.revoked_at.is_(None)))).scalar_one()
    if live >= MAX_ACTIVE:
        raise StoreError(f"the mailbox has {MAX_ACTIVE} active app passwords: revoke one first")
    secret, now = new_secret(), time.time()
    app_password_id = conn.execute(insert(db.app_passwords).values(
        mailbox_id=mailbox_id, label=label, scopes=",".join(scope_tuple), hash=digest(secret),
        created_at=now, created_by=created_by,
    )).inserted_primary_key[0]  # type: ignore[index]
    return AppPassword(app_password_id, mailbox_id, label, scope_tuple, now, created_by,
                       None, None, None), secret


def list_for(conn: Connection, mailbox_id: int) -> list[AppPassword]:
    """Every app password of the mailbox, revoked ones included, oldest first."""
    rows = conn.execute(select(db.app_passwords)
                        .where(db.app_passwords.c.mailbox_id == mailbox_id)
                        .order_by(db.app_passwords.c.id))
    return [_of(row) for row in rows]


def get(conn: Connection, mailbox_id: int, app_password_id: int) -> AppPassword | None:
    row = conn.execute(select(db.app_passwords).where(and_(
        db.app_passwords.c.id == app_password_id,
        db.app_passwords.c.mailbox_id == mailbox_id))).first()
    return _of(row) if row else None


def revoke(conn: Connection, mailbox_id: int, app_password_id: int) -> bool:
    """Revoke one app password of *mailbox_id*; False when it has none of that id or it was
    revoked already. Effective at the next login (a session already open stays)."""
    done = conn.execute(update(db.app_passwords).where(and_(
        db.app_passwords.c.id == app_password_id,
        db.app_passwords.c.mailbox_id == mailbox_id,
        db.app_passwords.c.revoked_at.is_(None))).values(revoked_at=time.time())).rowcount
    return bool(done)


def touch(conn: Connection, app_password_id: int, address: str, when: float) -> None:
    """Record a successful login with the app password: when, from which client address."""
    conn.execute(update(db.app_passwords).where(db.app_passwords.c.id == app_password_id)
                 .values(last_used_at=when, last_used_from=address[:64]))


def matching(conn: Connection, mailbox_id: int, secret: str, scope: str
             ) -> tuple[int | None, bool]:
    """(id of the live app password of *mailbox_id* whose secret is *secret*, None when
    none is; whether that one lacks *scope*). Every live row is compared (hmac.compare_digest),
    so the time does not depend on which one matched. ``mailbox_id`` 0 (no mailbox) costs the
    same query and digest."""
    wanted = digest(secret).encode("ascii")
    found: int | None = None
    wrong_scope = False
    for row in conn.execute(_LIVE_OF_MAILBOX, {"mailbox_id": mailbox_id}):
        if hmac.compare_digest(row.hash.encode("ascii"), wanted) and found is None:
            found = row.id
            wrong_scope = scope not in row.scopes.split(",")
    if found is not None and wrong_scope:
        return None, True
    return found, False
