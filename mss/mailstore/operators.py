"""Operator accounts (issue 16, reversibility): a migration login that acts as a mailbox.

An operator logs in over IMAP with SASL PLAIN (RFC 4616) giving the mailbox as the
authorization identity and itself as the authentication identity (``authzid = mailbox``,
``authcid = operator``), or, for clients that cannot send an authzid (mbsync), with the login
``MAILBOX*OPERATOR`` (Dovecot's master-user convention). Its password is its own (scrypt);
every use is audited as delegated access (who, which mailbox). A name is a short token, never
an address, so that an operator cannot be mistaken for a mailbox.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from sqlalchemy import Connection, delete, insert, select, update

from mss import db
from mss.mailstore.errors import StoreError
from mss.passwords import verify_password

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
SEPARATOR = "*"  # MAILBOX*OPERATOR as a LOGIN / PLAIN authcid (no address holds it)


@dataclass(frozen=True)
class Operator:
    id: int
    name: str
    created_at: float
    last_used_at: float | None
    password_hash: str = field(default="", repr=False)


def _operator(row: object) -> Operator:
    m = row._mapping  # type: ignore[attr-defined]
    return Operator(m["id"], m["name"], m["created_at"], m["last_used_at"], m["password_hash"])


def normalise_name(name: str) -> str:
    """The name lower-cased; StoreError unless it is 1-64 of a-z 0-9 . _ - (no @, no *)."""
    folded = name.strip().lower()
    if not NAME.fullmatch(folded):
        raise StoreError(f"invalid operator name {name[:64]!r}: 1 to 64 of a-z 0-9 . _ - "
                         "starting with a letter or digit")
    return folded


def get(conn: Connection, name: str) -> Operator | None:
    row = conn.execute(select(db.operators).where(db.operators.c.name == name)).first()
    return _operator(row) if row is not None else None


def add(conn: Connection, name: str, password_hash: str, now: float | None = None) -> Operator:
    name = normalise_name(name)
    if get(conn, name) is not None:
        raise StoreError(f"operator {name} already exists")
    when = time.time() if now is None else now
    new_id = conn.execute(insert(db.operators).values(
        name=name, password_hash=password_hash, created_at=when)).inserted_primary_key
    assert new_id is not None
    return Operator(int(new_id[0]), name, when, None, password_hash)


def list_all(conn: Connection) -> list[Operator]:
    return [_operator(r) for r in conn.execute(select(db.operators).order_by(db.operators.c.name))]


def remove(conn: Connection, name: str) -> Operator:
    found = get(conn, normalise_name(name))
    if found is None:
        raise StoreError(f"no operator {name[:64]}")
    conn.execute(delete(db.operators).where(db.operators.c.id == found.id))
    return found


def touch(conn: Connection, operator_id: int, when: float) -> None:
    conn.execute(update(db.operators).where(db.operators.c.id == operator_id)
                 .values(last_used_at=when))


def check(conn: Connection, name: str, password: str) -> Operator | None:
    """The operator when *password* is its own; constant work (one scrypt) whatever the name."""
    try:
        found = get(conn, normalise_name(name))
    except StoreError:
        found = None
    ok = verify_password(password, found.password_hash if found else None)
    return found if ok and found is not None else None
