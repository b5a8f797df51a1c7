"""Whitelist versions in the database: import with a shrink guard, and the version in force.

An import is one transaction: the version row, its entries, the switch of the active
version and the audit record. A refused or failed import writes only its audit record; the
previous version stays in force. With several nodes on one database (PostgreSQL, READ
COMMITTED) the transaction takes the cluster lock ``whitelist`` before it reads the version
in force: two nodes importing at once are applied one after the other, each compared with
the version the other committed, and exactly one version is active afterwards.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from audit.events import Event, Outcome
from audit.journal import AuditRecord, append
from mss import db
from mss.locks import xact_lock
from trustspace.whitelist import (
    Whitelist,
    WhitelistEntry,
    WhitelistFormatError,
    parse_whitelist,
)

_INSERT_CHUNK = 2000
_EVENT = Event.WHITELIST_IMPORT
WHITELIST_LOCK = "whitelist"  # mss.locks name: imports and activation, one at a time


class WhitelistImportError(Exception):
    """An import was refused or failed; the message is one line."""


@dataclass(frozen=True)
class RollbackResult:
    version_id: int  # now in force
    withdrawn_id: int | None  # the version it replaced
    entries: int
    domains: int
    previous_domains: int
    dropped: int  # domains of the withdrawn version not in this one
    forced: bool


@dataclass(frozen=True)
class ImportResult:
    version_id: int
    sha256: str
    generated_at: str | None
    entries: int
    domains: int
    previous_domains: int
    warnings: list[str]
    unchanged: bool


def active_version_id(conn: Connection) -> int | None:
    v = db.whitelist_versions
    return conn.execute(select(v.c.id).where(v.c.active.is_(True))
                        .order_by(v.c.id.desc()).limit(1)).scalar()


def active_version_info(conn: Connection) -> dict[str, Any] | None:
    """The version row in force, or None when no list was ever imported."""
    v = db.whitelist_versions
    row = conn.execute(select(v).where(v.c.active.is_(True))
                       .order_by(v.c.id.desc()).limit(1)).first()
    return dict(row._mapping) if row else None


def list_versions(conn: Connection) -> list[dict[str, Any]]:
    """Every version row, newest first."""
    v = db.whitelist_versions
    return [dict(r._mapping) for r in conn.execute(select(v).order_by(v.c.id.desc()))]


def _domains_of(conn: Connection, version_id: int) -> set[str]:
    e = db.whitelist_entries
    return set(conn.execute(select(e.c.domain).where(e.c.version_id == version_id)
                            .distinct()).scalars())


def load_active(conn: Connection) -> Whitelist:
    """The version in force as an in-memory index; :meth:`Whitelist.empty` (deny all) if none."""
    version = active_version_id(conn)
    if version is None:
        return Whitelist.empty()
    e = db.whitelist_entries
    rows = conn.execute(select(e.c.domain, e.c.dn).where(e.c.version_id == version))
    return Whitelist(version, (WhitelistEntry(d, dn, "", "", "", "") for d, dn in rows))


def import_whitelist(engine: Engine, data: bytes, source: str, *, force: bool = False,
                     max_shrink_ratio: float = 0.10, actor: str | None = None
                     ) -> ImportResult:
    """Parse *data* and make it the version in force, or raise :class:`WhitelistImportError`.

    Refused (nothing of the list written, the audit record only) when the document is not a
    usable whitelist, or when it drops more than *max_shrink_ratio* of the domains in force
    and *force* is false. Re-importing the list in force changes nothing (``unchanged``).
    """
    if not 0.0 <= max_shrink_ratio <= 1.0:
        raise ValueError(f"max_shrink_ratio must be within [0, 1], not {max_shrink_ratio}")
    who = actor or "cli"

    try:
        parsed = parse_whitelist(data)
    except WhitelistFormatError as exc:
        reason = f"cannot import {source}: {exc}"
        with engine.begin() as conn:
            append(conn, [AuditRecord(
                _EVENT, Outcome.SERIOUS_FAILURE, actor=who, reason=reason,
                whitelist_version=active_version_id(conn),
                detail={"source": source, "sha256": hashlib.sha256(data).hexdigest(),
                        "bytes": len(data)})])
        raise WhitelistImportError(reason) from None

    new_domains = parsed.domains
    entries = len(parsed.entries)
    detail: dict[str, Any] = {
        "sha256": parsed.sha256, "entries": entries, "domains": len(new_domains),
        "source": source, "truncated": parsed.truncated, "warnings": len(parsed.warnings)}
    # The comparison with the version in force and the switch are atomic: BEGIN IMMEDIATE
    # on SQLite, the cluster lock on PostgreSQL (taken before the first read).
    with engine.begin() as conn:
        xact_lock(conn, WHITELIST_LOCK)
        current = active_version_info(conn)
        current_domains = _domains_of(conn, current["id"]) if current else set()
        if current is not None and current["sha256"] == parsed.sha256:
            append(conn, [AuditRecord(_EVENT, Outcome.SUCCESS, actor=who,
                                      whitelist_version=current["id"],
                                      detail={**detail, "unchanged": True})])
            return ImportResult(current["id"], parsed.sha256, parsed.generated_at, entries,
                                len(new_domains), len(current_domains), parsed.warnings,
                                unchanged=True)
        dropped = len(current_domains - new_domains)
        shrinks = bool(current_domains) and dropped > max_shrink_ratio * len(current_domains)
        withdrawn = None if force else _withdrawn(conn, parsed.sha256)
        if withdrawn is None and not (shrinks and not force):
            version_id = _store(conn, parsed.sha256, parsed.generated_at, source, entries,
                                len(new_domains), parsed.warnings, parsed.entries)
            append(conn, [AuditRecord(
                _EVENT, Outcome.SUCCESS, actor=who, whitelist_version=version_id,
                detail={**detail, "dropped": dropped, "forced": shrinks and force})])
            return ImportResult(version_id, parsed.sha256, parsed.generated_at, entries,
                                len(new_domains), len(current_domains), parsed.warnings,
                                unchanged=False)
        if withdrawn is not None:
            refusal = (f"refused: this list (sha256 {parsed.sha256[:16]}) is version "
                       f"{withdrawn}, withdrawn by mss whitelist rollback; use --force to "
                       f"import it anyway")
            why: dict[str, Any] = {"withdrawn_version": withdrawn}
        else:
            refusal = (f"refused: the new list drops {dropped} of {len(current_domains)} "
                       f"domains ({100 * dropped / len(current_domains):.1f}% > "
                       f"{100 * max_shrink_ratio:g}%); use --force to import it anyway")
            why = {"dropped": dropped, "previous_domains": len(current_domains)}
        # Only the audit record is written (in this otherwise empty transaction).
        append(conn, [AuditRecord(
            _EVENT, Outcome.MINOR_FAILURE, actor=who, reason=refusal,
            whitelist_version=current["id"] if current else None, detail={**detail, **why})])
    raise WhitelistImportError(refusal)


def _withdrawn(conn: Connection, sha256: str) -> int | None:
    """The newest version of the document *sha256* withdrawn by a rollback, if any."""
    v = db.whitelist_versions
    return conn.execute(select(v.c.id).where((v.c.sha256 == sha256)
                                             & v.c.withdrawn_at.is_not(None))
                        .order_by(v.c.id.desc()).limit(1)).scalar()


def rollback_whitelist(engine: Engine, version_id: int, *, force: bool = False,
                       max_shrink_ratio: float = 0.10, actor: str | None = None
                       ) -> RollbackResult:
    """Put version *version_id* back in force, or raise :class:`WhitelistImportError`.

    Refused (only the audit record written) when there is no such version, when it is the
    one in force, or when it drops more than *max_shrink_ratio* of the domains in force and
    *force* is false. The version it replaces is marked withdrawn (``withdrawn_at``); the
    target's own mark, if any, is cleared. One transaction under the cluster lock
    ``whitelist``, as an import: nodes see the active version change and reload."""
    if not 0.0 <= max_shrink_ratio <= 1.0:
        raise ValueError(f"max_shrink_ratio must be within [0, 1], not {max_shrink_ratio}")
    who = actor or "cli"
    v = db.whitelist_versions
    with engine.begin() as conn:
        xact_lock(conn, WHITELIST_LOCK)
        current = active_version_info(conn)
        target = conn.execute(select(v).where(v.c.id == version_id)).first()
        detail: dict[str, Any] = {"version": version_id,
                                  "from": current["id"] if current else None}
        refusal: str | None = None
        dropped = 0
        current_domains: set[str] = set()
        if target is None:
            refusal = (f"no whitelist version {version_id} (mss whitelist versions lists "
                       f"them)")
        elif current is not None and current["id"] == version_id:
            refusal = f"whitelist version {version_id} is already in force"
        else:
            current_domains = _domains_of(conn, current["id"]) if current else set()
            dropped = len(current_domains - _domains_of(conn, version_id))
            shrinks = bool(current_domains) and \
                dropped > max_shrink_ratio * len(current_domains)
            detail.update(dropped=dropped, previous_domains=len(current_domains),
                          domains=target.domains, forced=shrinks and force)
            if shrinks and not force:
                refusal = (f"refused: version {version_id} drops {dropped} of "
                           f"{len(current_domains)} domains in force "
                           f"({100 * dropped / len(current_domains):.1f}% > "
                           f"{100 * max_shrink_ratio:g}%); use --force to roll back anyway")
        if refusal is not None:
            append(conn, [AuditRecord(Event.WHITELIST_ROLLBACK, Outcome.MINOR_FAILURE,
                                      actor=who, reason=refusal, detail=detail,
                                      whitelist_version=current["id"] if current else None)])
        else:
            assert target is not None
            now = time.time()
            if current is not None:
                conn.execute(update(v).where(v.c.id == current["id"])
                             .values(withdrawn_at=now))
            conn.execute(update(v).where(v.c.active.is_(True)).values(active=False))
            conn.execute(update(v).where(v.c.id == version_id)
                         .values(active=True, withdrawn_at=None))
            append(conn, [AuditRecord(Event.WHITELIST_ROLLBACK, Outcome.SUCCESS, actor=who,
                                      whitelist_version=version_id, detail=detail)])
            return RollbackResult(version_id, current["id"] if current else None,
                                  target.entries, target.domains, len(current_domains),
                                  dropped, bool(detail["forced"]))
    raise WhitelistImportError(refusal)


def _store(conn: Connection, sha256: str, generated_at: str | None, source: str, entries: int,
           domains: int, warnings: list[str], rows: list[WhitelistEntry]) -> int:
    """Insert a version and its entries, then make it the only active one; its id."""
    v = db.whitelist_versions
    version_id = int(conn.execute(insert(v).values(
        sha256=sha256, generated_at=generated_at, imported_at=time.time(), source=source,
        entries=entries, domains=domains, warnings="\n".join(warnings), active=False,
    ).returning(v.c.id)).scalar_one())
    for start in range(0, len(rows), _INSERT_CHUNK):
        conn.execute(insert(db.whitelist_entries), [
            {"version_id": version_id, "domain": e.domain, "dn": e.dn,
             "description": e.description, "responsable_contact": e.responsable_contact,
             "support_contact": e.support_contact, "updated_at": e.updated_at}
            for e in rows[start:start + _INSERT_CHUNK]])
    conn.execute(update(v).where(v.c.active.is_(True)).values(active=False))
    conn.execute(update(v).where(v.c.id == version_id).values(active=True))
    return version_id
