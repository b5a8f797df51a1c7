"""Verify the audit hash chain and name the first break.

Each row carries ``prev_hash`` and ``hash = sha256(prev_hash || canonical JSON)``. Walking
the rows in id order, the first row whose recomputed hash differs was **modified**; the
first row whose ``prev_hash`` is not the hash of the row before it shows where rows were
**deleted** (its ``prev_hash`` belongs to no row), **inserted** (the row after it chains to
the row before it) or **reordered** (its ``prev_hash`` is the hash of another row).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from audit.journal import GENESIS, chain_hash
from mss import db


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    problem: str | None = None  # "modified" | "deleted" | "inserted" | "reordered"
    record_id: int | None = None
    message: str = ""


def _rows(conn: Connection) -> Iterator[dict[str, Any]]:
    for row in db.in_pages(conn, select(db.audit_log), db.audit_log.c.id):
        yield dict(row._mapping)


def verify_chain(conn: Connection, start_hash: str = GENESIS) -> VerifyResult:
    """One streaming pass in O(1) memory; a second pass only to classify a break."""
    prev_hash, prev_id = start_hash, None
    before_prev: str | None = None
    count = 0
    rows = _rows(conn)
    for row in rows:
        count += 1
        if chain_hash(row["prev_hash"], row) != row["hash"]:
            return VerifyResult(False, count, "modified", row["id"],
                                f"record {row['id']} was modified")
        if row["prev_hash"] != prev_hash:
            following = next(rows, None)
            return _classify(conn, row, following, prev_hash, prev_id, before_prev, count)
        before_prev, prev_hash, prev_id = prev_hash, row["hash"], row["id"]
    return VerifyResult(True, count, message=f"chain intact: {count} records")


def _classify(conn: Connection, row: dict[str, Any], following: dict[str, Any] | None,
              prev_hash: str, prev_id: int | None, before_prev: str | None,
              count: int) -> VerifyResult:
    if prev_id is not None and row["prev_hash"] == before_prev:
        # the row chains over its predecessor: the predecessor was slipped in
        return VerifyResult(False, count, "inserted", prev_id,
                            f"record {prev_id} was inserted")
    owners = {h: i for i, h in conn.execute(select(db.audit_log.c.id, db.audit_log.c.hash))}
    if row["prev_hash"] in owners:
        return VerifyResult(False, count, "reordered", row["id"],
                            f"record {row['id']} is out of order (it follows record "
                            f"{owners[row['prev_hash']]}, not {prev_id})")
    if following is not None and following["prev_hash"] == prev_hash:
        return VerifyResult(False, count, "inserted", row["id"],
                            f"record {row['id']} was inserted")
    after = f"after record {prev_id}" if prev_id is not None else "at the start"
    return VerifyResult(False, count, "deleted", row["id"],
                        f"records deleted before record {row['id']} ({after})")
