"""Local blocks of peer operators: a local override on top of the national whitelist.

``mss peer block DOMAIN | --cert-dn DN [--until WHEN] [--reason TEXT]`` refuses a peer
domain or an operator certificate DN whatever the national list says, for a while or until
``mss peer unblock``. A block is checked:

- on the MX at MAIL FROM, after the certificate chain and before the whitelist: the
  client certificate's subject DN, then the sender's domain (``policy.mx_sender``);
- on submission and relay at RCPT TO: a recipient of a blocked domain
  (``policy.submission_recipient``);
- by the delivery worker before it connects (a blocked recipient domain) and on the
  certificate a peer's MX presents (a blocked DN), ``proxy/outbound/worker.py``.

A block with an end (``--until``) is temporary: the MX answers ``450 4.7.1`` so the peer
retries after it, submission accepts and queues, and the worker keeps the rows until it
ends. A block without an end refuses for good: ``550 5.7.1`` on the MX and at RCPT;
queued rows stay deferred (no attempt counted) until unblocked or ``delivery.max_age``.
docs/trust-space.md "Local blocks" has the whole table.

Rows are never deleted (an unblock sets ``ended_at``): the table is the history, and its
version, ``(max id, ended rows)``, moves with every change, so a running node reloads the
in-memory :class:`PeerBlocks` only when it changed (``trustspace.cache.LiveWhitelist``),
never per RCPT. DNs are compared parsed (``trustspace.dn``), domains normalised (IDNA).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass
from types import MappingProxyType

from sqlalchemy import Connection, Select, and_, func, insert, or_, select, update

from mss import db
from mss.addresses import normalize_domain
from trustspace.dn import CanonicalDN, DNError, dn_key, parse_dn

B = db.peer_blocks
REASON_MAX = 500  # characters of an operator's reason kept
Version = tuple[int, int]  # (max id, rows ended): moves with every block and unblock


class BlockError(ValueError):
    """A block or unblock refused: one line for the CLI (exit 2)."""


@dataclass(frozen=True)
class PeerBlock:
    id: int
    domain: str | None
    cert_dn: str | None
    until: float | None
    reason: str | None
    created_at: float
    created_by: str
    ended_at: float | None = None
    ended_by: str | None = None

    @property
    def target(self) -> str:
        """What is blocked, for messages: ``domain D`` or ``certificate DN X``."""
        return f"domain {self.domain}" if self.domain else f"certificate DN {self.cert_dn}"

    @property
    def temporary(self) -> bool:
        return self.until is not None

    def in_force(self, now: float) -> bool:
        return self.ended_at is None and (self.until is None or now < self.until)

    def state(self, now: float) -> str:
        """active | expired (its --until passed) | ended (unblocked)."""
        if self.ended_at is not None:
            return "ended"
        return "active" if self.in_force(now) else "expired"

    def describe(self) -> str:
        """The private reason's words: block id, target, end and the operator's reason."""
        end = f"until {_iso(self.until)}" if self.until is not None else "without end"
        why = f": {self.reason}" if self.reason else ""
        return f"local block #{self.id} of {self.target} ({end}){why}"


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def _block(row: object) -> PeerBlock:
    m = row._mapping  # type: ignore[attr-defined]
    return PeerBlock(id=m["id"], domain=m["domain"], cert_dn=m["cert_dn"], until=m["until"],
                     reason=m["reason"], created_at=m["created_at"],
                     created_by=m["created_by"], ended_at=m["ended_at"],
                     ended_by=m["ended_by"])


def parse_domain(text: str) -> str:
    try:
        return normalize_domain(text)
    except ValueError as exc:
        raise BlockError(f"invalid domain {text!r}: {exc}") from None


def parse_cert_dn(text: str) -> tuple[str, str]:
    """(the DN as given, its canonical key); BlockError when it does not parse."""
    try:
        canonical = parse_dn(text)
    except DNError as exc:
        raise BlockError(f"--cert-dn: {exc}") from None
    if not canonical:
        raise BlockError("--cert-dn: empty DN")
    return text.strip(), dn_key(canonical)


class PeerBlocks:
    """The blocks of one version in memory: O(1) lookups by domain and by parsed DN. The
    end of a temporary block is compared with the clock at each lookup (no reload)."""

    def __init__(self, version: Version, blocks: Iterable[PeerBlock]) -> None:
        self._version = version
        domains: dict[str, PeerBlock] = {}
        dns: dict[CanonicalDN, PeerBlock] = {}
        for block in blocks:
            if block.domain:
                domains[block.domain] = block
            elif block.cert_dn:
                try:
                    dns[parse_dn(block.cert_dn)] = block
                except DNError:  # refused at block time; a hand-edited row matches nothing
                    continue
        self._domains = MappingProxyType(domains)
        self._dns = MappingProxyType(dns)

    @classmethod
    def empty(cls) -> PeerBlocks:
        return cls((0, 0), ())

    @property
    def version(self) -> Version:
        return self._version

    def __len__(self) -> int:
        return len(self._domains) + len(self._dns)

    def domain_block(self, domain: str, now: float | None = None) -> PeerBlock | None:
        """The block in force on *domain* (any spelling), or None. Never raises."""
        if not self._domains:
            return None
        try:
            key = normalize_domain(domain)
        except ValueError:
            return None
        block = self._domains.get(key)
        return block if block and block.in_force(time.time() if now is None else now) \
            else None

    def dn_block(self, dn: CanonicalDN | None, now: float | None = None) -> PeerBlock | None:
        """The block in force on certificate DN *dn* (parsed), or None."""
        if not dn or not self._dns:
            return None
        block = self._dns.get(dn)
        return block if block and block.in_force(time.time() if now is None else now) \
            else None


# --------------------------------------------------------------------------- the table

def version(conn: Connection) -> Version:
    """The table's version: (max id, rows ended); one indexed aggregate, polled."""
    row = conn.execute(select(func.max(B.c.id), func.count(B.c.ended_at))).one()
    return int(row[0] or 0), int(row[1] or 0)


def load(conn: Connection) -> PeerBlocks:
    """The blocks not ended (those whose --until passed included: the clock decides)."""
    current = version(conn)
    rows = conn.execute(select(B).where(B.c.ended_at.is_(None)).order_by(B.c.id))
    return PeerBlocks(current, (_block(r) for r in rows))


def _open_query(domain: str | None, key: str | None, now: float) -> Select[tuple[object, ...]]:
    target = B.c.domain == domain if domain else B.c.dn_key == key
    return select(B).where(and_(target, B.c.ended_at.is_(None),
                                or_(B.c.until.is_(None), B.c.until > now)))


def find_active(conn: Connection, domain: str | None = None, dn: str | None = None,
                now: float | None = None) -> PeerBlock | None:
    """The block in force on *domain* or on certificate DN *dn* (text), or None."""
    key = parse_cert_dn(dn)[1] if dn else None
    row = conn.execute(_open_query(domain, key, time.time() if now is None else now)).first()
    return _block(row) if row else None


def block(conn: Connection, *, actor: str, domain: str | None = None,
          cert_dn: str | None = None, until: float | None = None,
          reason: str | None = None, now: float | None = None) -> PeerBlock:
    """Block *domain* (normalised by the caller: :func:`parse_domain`) or *cert_dn*.
    Refused: neither or both, an end in the past, a target already blocked."""
    now = time.time() if now is None else now
    if (domain is None) == (cert_dn is None):
        raise BlockError("name a DOMAIN or a --cert-dn, not both")
    if until is not None and until <= now:
        raise BlockError(f"--until {_iso(until)} is not in the future")
    reason = (reason or "").strip() or None
    if reason is not None and (len(reason) > REASON_MAX or "\n" in reason):
        raise BlockError(f"--reason: one line of at most {REASON_MAX} characters")
    key = None
    if cert_dn is not None:
        cert_dn, key = parse_cert_dn(cert_dn)
    existing = find_active(conn, domain, cert_dn, now)
    if existing is not None:
        raise BlockError(f"{existing.target} is already blocked (block #{existing.id}"
                         + (f", until {_iso(existing.until)}" if existing.until else "")
                         + "): mss peer unblock it first")
    new_id = conn.execute(insert(B).values(
        domain=domain, cert_dn=cert_dn, dn_key=key, until=until, reason=reason,
        created_at=now, created_by=actor[:320])).inserted_primary_key[0]  # type: ignore[index]
    return PeerBlock(int(new_id), domain, cert_dn, until, reason, now, actor[:320])


def unblock(conn: Connection, *, actor: str, domain: str | None = None,
            cert_dn: str | None = None, now: float | None = None) -> PeerBlock:
    """End the block in force on *domain* or *cert_dn*; BlockError when there is none."""
    now = time.time() if now is None else now
    if (domain is None) == (cert_dn is None):
        raise BlockError("name a DOMAIN or a --cert-dn, not both")
    found = find_active(conn, domain, cert_dn, now)
    if found is None:
        what = f"domain {domain}" if domain else f"certificate DN {cert_dn}"
        raise BlockError(f"{what} is not blocked")
    conn.execute(update(B).where(and_(B.c.id == found.id, B.c.ended_at.is_(None))).values(
        ended_at=now, ended_by=actor[:320]))
    return PeerBlock(found.id, found.domain, found.cert_dn, found.until, found.reason,
                     found.created_at, found.created_by, now, actor[:320])


def list_blocks(conn: Connection, *, include_ended: bool = False,
                now: float | None = None) -> list[PeerBlock]:
    """The blocks in force (with *include_ended*: every row, the history), oldest first."""
    now = time.time() if now is None else now
    query = select(B).order_by(B.c.id)
    if not include_ended:
        query = query.where(and_(B.c.ended_at.is_(None),
                                 or_(B.c.until.is_(None), B.c.until > now)))
    return [_block(r) for r in conn.execute(query)]
