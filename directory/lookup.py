"""Is an address in the synchronised directory? (SMTP-time recipient check)."""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, select

from mss import db

_BY_MAIL = select(db.directory_entries.c.dn).where(
    db.directory_entries.c.mail == bindparam("mail"))
_ANY_GOOD_RUN = select(db.directory_runs.c.id).where(db.directory_runs.c.status == "ok").limit(1)


def directory_has(conn: Connection, address: str) -> bool | None:
    """True or False; None while no sync ever succeeded (an empty directory proves nothing)."""
    if conn.execute(_BY_MAIL, {"mail": address.lower()}).first() is not None:
        return True
    if conn.execute(_ANY_GOOD_RUN).first() is None:
        return None
    return False
