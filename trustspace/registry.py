"""Whitelist versions in the database: import with a shrink guard, and the version in force.

An import is one transaction: the version row, its entries, the switch of the active
version and the audit record. A refused or failed import writes only its audit record; the
previous version stays in force.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from audit.events import Outcome
from audit.journal import AuditRecord, append
from mss import db
from trustspace.whitelist import (
    ParsedWhitelist,
    Whitelist,
    WhitelistEntry,
    WhitelistFormatError,
    parse_whitelist,
)

_INSERT_CHUNK = 2000


class WhitelistImportError(Exception):
    """An import was refused or failed; the message is one line."""


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
    return conn.execute(select(v.c.id).where(v.c.active.is_(True))).scalar()


def active_version_info(conn: Connection) -> dict[str, Any] | None:
    v = db.whitelist_versions
    row = conn.execute(select(v).where(v.c.active.is_(True))).first()
    return dict(row._mapping) if row else None


def list_versions(conn: Connection) -> list[dict[str, Any]]:
    v = db.whitelist_versions
    return [dict(r._mapping) for r in conn.execute(select(v).order_by(v.c.id.desc()))]


def _domains_of(conn: Connection, version_id: int) -> set[str]:
    e = db.whitelist_entries
    return set(conn.execute(select(e.c.domain).where(e.c.version_id == version_id)
                            .distinct()).scalars())


def load_active(conn: Connection) -> Whitelist:
    version = active_version_id(conn)
    if version is None:
        return Whitelist.empty()
    e = db.whitelist_entries
    rows = conn.execute(select(e.c.domain, e.c.dn).where(e.c.version_id == version))
    return Whitelist(version, (WhitelistEntry(d, dn, "", "", "", "") for d, dn in rows))


def import_whitelist(engine: Engine, data: bytes, source: str, *, force: bool = False,
                     max_shrink_ratio: float = 0.10, actor: str | None = None
                     ) -> ImportResult:
    who = actor or "cli"

    def refuse(outcome: Outcome, reason: str, detail: dict[str, Any]) -> WhitelistImportError:
        with engine.begin() as conn:
            append(conn, [AuditRecord("whitelist.import", outcome, actor=who, reason=reason,
                                      whitelist_version=active_version_id(conn),
                                      detail={"source": source, **detail})])
        return WhitelistImportError(reason)

    try:
        parsed: ParsedWhitelist = parse_whitelist(data)
    except WhitelistFormatError as exc:
        raise refuse(Outcome.SERIOUS_FAILURE, f"{source}: {exc}", {}) from None

    new_domains = parsed.domains
    detail = {"source": source, "sha256": parsed.sha256, "entries": len(parsed.entries),
              "domains": len(new_domains), "truncated": parsed.truncated,
              "warnings": len(parsed.warnings)}
    with engine.begin() as conn:
        current = active_version_info(conn)
        current_domains = _domains_of(conn, current["id"]) if current else set()
        if current and current["sha256"] == parsed.sha256:
            append(conn, [AuditRecord("whitelist.import", actor=who,
                                      whitelist_version=current["id"],
                                      detail={**detail, "unchanged": True})])
            return ImportResult(current["id"], parsed.sha256, parsed.generated_at,
                                len(parsed.entries), len(new_domains), len(current_domains),
                                parsed.warnings, unchanged=True)
        dropped = len(current_domains - new_domains)
        too_many = current_domains and dropped > max_shrink_ratio * len(current_domains)
        if too_many and not force:
            reason = (f"refused: the new list drops {dropped} of {len(current_domains)} "
                      f"domains ({100 * dropped / len(current_domains):.1f}% > "
                      f"{100 * max_shrink_ratio:.0f}%); use --force to import it anyway")
        else:
            reason = ""
            v = db.whitelist_versions
            version_id = conn.execute(insert(v).values(
                sha256=parsed.sha256, generated_at=parsed.generated_at,
                imported_at=time.time(), source=source, entries=len(parsed.entries),
                domains=len(new_domains), warnings="\n".join(parsed.warnings), active=False,
            )).inserted_primary_key[0]  # type: ignore[index]
            rows = [{"version_id": version_id, "domain": e.domain, "dn": e.dn,
                     "description": e.description, "responsable_contact": e.responsable_contact,
                     "support_contact": e.support_contact, "updated_at": e.updated_at}
                    for e in parsed.entries]
            for start in range(0, len(rows), _INSERT_CHUNK):
                conn.execute(insert(db.whitelist_entries), rows[start:start + _INSERT_CHUNK])
            conn.execute(update(v).where(v.c.active.is_(True)).values(active=False))
            conn.execute(update(v).where(v.c.id == version_id).values(active=True))
            append(conn, [AuditRecord("whitelist.import", actor=who,
                                      whitelist_version=version_id,
                                      detail={**detail, "forced": bool(too_many and force),
                                              "dropped": dropped})])
            return ImportResult(version_id, parsed.sha256, parsed.generated_at,
                                len(parsed.entries), len(new_domains), len(current_domains),
                                parsed.warnings, unchanged=False)
    raise refuse(Outcome.MINOR_FAILURE, reason, {**detail, "dropped": dropped})
