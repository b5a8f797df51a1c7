"""Institutions' mail servers on the relay listener: who they are, what they may send as.

A relay authenticates either by a client certificate whose subject DN is registered
(compared parsed, RFC 4514, like the whitelist's) or by SMTP AUTH with its name and a
password (scrypt). It may send as any address of its domains. Who may relay is trust
policy, so the registry lives with the trust space; its ``mss relay`` commands are
:mod:`trustspace.relay_cli`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select

from mss import db
from mss.addresses import normalize_domain
from trustspace.dn import CanonicalDN, DNError, parse_dn

NAME_MAX = 64


class RelayError(ValueError):
    """A relay registration refused: one line for the CLI (exit 2)."""


@dataclass(frozen=True)
class Relay:
    name: str
    cert_dn: str | None
    password_hash: str | None
    domains: frozenset[str]

    @property
    def method(self) -> str:
        return "certificate" if self.cert_dn else "password"


def _relay(row: object) -> Relay:
    return Relay(name=row.name, cert_dn=row.cert_dn,  # type: ignore[attr-defined]
                 password_hash=row.password_hash,  # type: ignore[attr-defined]
                 domains=frozenset(d for d in row.domains.split(",") if d))  # type: ignore[attr-defined]


def parse_domains(text: str) -> list[str]:
    names = [d.strip() for d in text.split(",") if d.strip()]
    if not names:
        raise RelayError("--domains: at least one domain")
    out = []
    for name in names:
        try:
            out.append(normalize_domain(name))
        except ValueError as exc:
            raise RelayError(f"--domains: {exc}") from None
    return sorted(set(out))


def check_name(name: str) -> None:
    if not name or len(name) > NAME_MAX or not all(c.isalnum() or c in "-_." for c in name):
        raise RelayError(f"relay name {name[:80]!r}: 1 to {NAME_MAX} letters, digits, - _ .")


def check_identity(cert_dn: str | None, password: bool) -> None:
    """A relay authenticates by exactly one of a certificate DN or a password."""
    if (cert_dn is None) == (not password):
        raise RelayError("give exactly one of --cert-dn DN or --password-stdin")


def add_relay(conn: Connection, name: str, domains: list[str], cert_dn: str | None,
              password_hash: str | None) -> Relay:
    check_name(name)
    check_identity(cert_dn, password_hash is not None)
    if cert_dn is not None:
        try:
            parse_dn(cert_dn)
        except DNError as exc:
            raise RelayError(f"--cert-dn: {exc}") from None
    if get_relay(conn, name) is not None:
        raise RelayError(f"relay {name} already exists")
    conn.execute(insert(db.relays).values(name=name, cert_dn=cert_dn,
                                          password_hash=password_hash,
                                          domains=",".join(domains), created_at=time.time()))
    return Relay(name=name, cert_dn=cert_dn, password_hash=password_hash,
                 domains=frozenset(domains))


def get_relay(conn: Connection, name: str) -> Relay | None:
    row = conn.execute(select(db.relays).where(db.relays.c.name == name)).first()
    return _relay(row) if row else None


def list_relays(conn: Connection) -> list[Relay]:
    return [_relay(r) for r in conn.execute(select(db.relays).order_by(db.relays.c.name))]


def remove_relay(conn: Connection, name: str) -> Relay:
    relay = get_relay(conn, name)
    if relay is None:
        raise RelayError(f"no relay {name}")
    conn.execute(delete(db.relays).where(db.relays.c.name == name))
    return relay


def relay_by_dn(conn: Connection, dn: CanonicalDN) -> Relay | None:
    """The relay whose registered certificate DN equals *dn* (parsed comparison)."""
    rows = conn.execute(select(db.relays).where(db.relays.c.cert_dn.is_not(None)))
    for row in rows:
        try:
            if parse_dn(row.cert_dn) == dn:
                return _relay(row)
        except DNError:
            continue
    return None
