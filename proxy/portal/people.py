"""The mailboxes a person (a national identifier from the OIDC issuer) may manage in the
portal: their own PER mailboxes (idNat "8" + RPPS) and the mailboxes granted to those.

Interim: the same mapping as the bearer-token logins (``mss.mailstore.identities``, sasl
branch) replaces this module once merged."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from mss.mailstore import grants, mailboxes
from mss.mailstore.mailboxes import Mailbox

RPPS_PREFIX = "8"  # idNat of an RPPS professional: "8" + the 11-digit RPPS


@dataclass(frozen=True)
class Person:
    national_id: str
    own: tuple[Mailbox, ...]  # theirs: app passwords are made for these only
    granted: tuple[Mailbox, ...]  # shared with them (mss mailbox grant): history only

    @property
    def mailboxes(self) -> tuple[Mailbox, ...]:
        return self.own + self.granted

    def owned(self, address: str) -> Mailbox | None:
        return next((m for m in self.own if m.address == address), None)

    def sees(self, address: str) -> Mailbox | None:
        return next((m for m in self.mailboxes if m.address == address), None)


def mailboxes_of_national_id(conn: Connection, national_id: str) -> list[Mailbox]:
    """The enabled PER mailboxes of *national_id* (an RPPS idNat)."""
    if not national_id.startswith(RPPS_PREFIX) or len(national_id) < 2:
        return []
    rpps = national_id[len(RPPS_PREFIX):]
    return sorted((m for m in mailboxes.list_mailboxes(conn) if m.rpps == rpps and m.enabled),
                  key=lambda m: m.address)


def person(conn: Connection, national_id: str) -> Person:
    own = mailboxes_of_national_id(conn, national_id)
    granted: dict[int, Mailbox] = {}
    for m in own:
        for g in grants.granted_mailboxes(conn, m.id):
            granted.setdefault(g.id, g)
    return Person(national_id, tuple(own),
                  tuple(sorted((g for g in granted.values() if g not in own),
                               key=lambda m: m.address)))
