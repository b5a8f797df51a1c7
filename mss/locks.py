"""Locks every node honours, held in the database.

On PostgreSQL a named lock is an advisory lock (``pg_advisory_xact_lock``: held until the
transaction ends, whichever node or process took it); its 64-bit key is derived from the
name, so every node computes the same one. On SQLite there is one writer at a time already
(every writer transaction is ``BEGIN IMMEDIATE``, mss/db.py), so a named lock is nothing more.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, text


def lock_key(name: str) -> int:
    """The signed 64-bit advisory-lock key of *name* (stable across nodes and versions)."""
    return int.from_bytes(hashlib.sha256(b"mss:lock:" + name.encode()).digest()[:8], "big",
                          signed=True)


def xact_lock(conn: Connection, name: str) -> None:
    """Hold the cluster-wide lock *name* until *conn*'s transaction commits or rolls back."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})
