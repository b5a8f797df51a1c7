"""Where the professional directory is read from: one interface, three sources.

A source yields directory rows (the fields of :data:`mss.config.DIRECTORY_FIELDS`, keyed by
a stable ``dn``) or rejected lines; :class:`directory.sync.DirectorySync` stages them,
validates them, counts what changed and swaps them in, whatever the source:
- ``ldap``: an LDAP tree in the project's schema (attribute names mapped by config);
- ``extraction``: the national bulk extraction "Extraction des BAL MSSanté" (a ZIP of a
  pipe-delimited UTF-8 text file), full loads only;
- ``fhir``: the Annuaire Santé FHIR API (paged searchsets, incremental by ``_lastUpdated``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

# "dn" + DIRECTORY_FIELDS (strings or None; liste_rouge a bool); optionally "where" (a line
# number, a resource id), naming the row in a rejection instead of its dn
Row = dict[str, Any]


class SyncError(Exception):
    """The run failed; the previous directory stays in force. One-line message."""


@dataclass(frozen=True)
class Rejected:
    """A line or resource the source could not turn into a row: where (a line number, a
    resource id) and why, reported with the run, never fatal unless reject_invalid."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class Source(Protocol):
    """One directory source. ``open`` connects (or opens the file) and names what was read
    (directory_runs.server); ``rows(since)`` streams the entries, all of them when *since*
    is None, else those changed after that mark (only when ``incremental`` is true);
    ``high_water`` then gives the mark the next incremental run starts from (the source's
    own format, stored opaque); ``close`` releases the connection. Errors that end the run
    are :class:`SyncError` (one line), raised from any of them."""

    name: str  # "ldap" | "extraction" | "fhir"
    incremental: bool  # rows(since) can give only what changed

    def open(self) -> str: ...

    def rows(self, since: str | None) -> Iterator[Row | Rejected]: ...

    def high_water(self, started: float) -> str | None: ...

    def close(self) -> None: ...
