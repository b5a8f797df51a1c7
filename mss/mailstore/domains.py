"""Hosted domains: which mail this node stores, and where it relays the others'."""

from __future__ import annotations

import time

from sqlalchemy import Connection, bindparam, insert, select, update

from mss import db
from mss.addresses import normalize_domain
from mss.mailstore.errors import StoreError

_DOMAIN_BY_NAME = select(db.domains.c.id).where(db.domains.c.name == bindparam("name"))
_RELAY_BY_NAME = select(db.domains.c.relay_to).where(db.domains.c.name == bindparam("name"))


def add_domain(conn: Connection, name: str) -> str:
    try:
        domain = normalize_domain(name)
    except ValueError as exc:
        raise StoreError(f"invalid domain {name!r}: {exc}") from None
    if conn.execute(select(db.domains.c.id).where(db.domains.c.name == domain)).first():
        raise StoreError(f"domain {domain} is already hosted")
    conn.execute(insert(db.domains).values(name=domain, created_at=time.time()))
    return domain


def list_domains(conn: Connection) -> list[str]:
    return list(conn.execute(select(db.domains.c.name).order_by(db.domains.c.name)).scalars())


def set_relay(conn: Connection, domain: str, relay_to: str | None) -> None:
    """Send inbound mail for hosted *domain* to ``host:port`` (None: store it here)."""
    done = conn.execute(update(db.domains).where(db.domains.c.name == domain)
                        .values(relay_to=relay_to)).rowcount
    if not done:
        raise StoreError(f"domain {domain} is not hosted here")


def relay_of(conn: Connection, domain: str) -> str | None:
    """The next hop of a hosted domain, None when its mail is stored here."""
    value = conn.execute(_RELAY_BY_NAME, {"name": domain}).scalar()
    return str(value) if value else None


def list_relays(conn: Connection) -> dict[str, str]:
    rows = conn.execute(select(db.domains.c.name, db.domains.c.relay_to)
                        .where(db.domains.c.relay_to.is_not(None)))
    return {r.name: r.relay_to for r in rows}


def is_hosted_domain(conn: Connection, domain: str) -> bool:
    return conn.execute(_DOMAIN_BY_NAME, {"name": domain}).first() is not None


def domain_hosting(conn: Connection, domain: str) -> tuple[bool, str | None]:
    """(hosted, next hop) of *domain* in one query; the next hop is None when its mail is
    stored here (or the domain is not hosted)."""
    row = conn.execute(_RELAY_BY_NAME, {"name": domain}).first()
    if row is None:
        return False, None
    return True, (str(row.relay_to) if row.relay_to else None)
