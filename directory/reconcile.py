"""Which mailboxes one source lists and another does not (``mss directory reconcile``).

Full loads come from the national extraction, incremental updates from the FHIR API (or
LDAP): users report mailboxes present in one and missing from the other. Each source's
list is kept by :class:`directory.sync.DirectorySync` in ``directory_seen`` (as of its
last full run plus later incremental ones); :func:`stored` compares two of them in SQL,
:func:`differences` any two row sets (a live source: :func:`mails_of`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select, func, select

from directory.sources import Rejected, Row, Source
from mss import db


@dataclass
class Differences:
    left: str
    right: str
    only_left: int = 0  # counts (the lists below may be cut at a limit)
    only_right: int = 0
    common: int = 0
    in_left_only: list[str] = field(default_factory=list)
    in_right_only: list[str] = field(default_factory=list)


def differences(left: Iterable[str], right: Iterable[str], *, names: tuple[str, str] =
                ("left", "right"), limit: int | None = None) -> Differences:
    """Compare two sets of addresses (compared lower-case), sorted lists in the result."""
    a = {m.lower() for m in left}
    b = {m.lower() for m in right}
    only_a, only_b = sorted(a - b), sorted(b - a)
    return Differences(names[0], names[1], len(only_a), len(only_b), len(a & b),
                       only_a[:limit] if limit is not None else only_a,
                       only_b[:limit] if limit is not None else only_b)


def mails_of(source: Source) -> Iterator[str]:
    """The addresses a live source lists now (rejected lines left out): opens, reads in
    full, closes."""
    source.open()
    try:
        for item in source.rows(None):
            if not isinstance(item, Rejected):
                row: Row = item
                if row.get("mail"):
                    yield str(row["mail"])
    finally:
        source.close()


def sources(conn: Connection) -> list[str]:
    """The sources with a list stored."""
    s = db.directory_seen
    return list(conn.execute(select(s.c.source).group_by(s.c.source)
                             .order_by(s.c.source)).scalars())


def _only(here: str, there: str) -> Select[tuple[str]]:
    """Addresses source *here* lists and source *there* does not."""
    x, y = db.directory_seen.alias("x"), db.directory_seen.alias("y")
    return select(x.c.mail).where(x.c.source == here, ~select(y.c.mail).where(
        y.c.source == there, y.c.mail == x.c.mail).exists())


def stored(conn: Connection, left: str, right: str, limit: int | None = 100) -> Differences:
    """Compare the stored lists of sources *left* and *right* (in the database: a million
    mailboxes never held in memory)."""
    s = db.directory_seen

    def count(query: Select[Any]) -> int:
        return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar()
                   or 0)

    result = Differences(left, right, count(_only(left, right)), count(_only(right, left)))
    result.common = count(select(s.c.mail).where(s.c.source == left)) - result.only_left
    for query, into in ((_only(left, right), result.in_left_only),
                        (_only(right, left), result.in_right_only)):
        query = query.order_by(query.selected_columns[0])
        if limit is not None:
            query = query.limit(limit)
        into.extend(str(m) for m in conn.execute(query).scalars())
    return result
