"""The mailboxes a person (a national identifier from the OIDC issuer) sees in the portal:
the same mapping as bearer-token logins (``mss.mailstore.identities``): their own PER
mailboxes (idNat "8" + RPPS) and the mailboxes granted to those."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from mss.mailstore import identities
from mss.mailstore.mailboxes import Mailbox


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


def person(conn: Connection, national_id: str) -> Person:
    rpps = identities.rpps_of(national_id)
    found = identities.mailboxes_of_national_id(conn, national_id)
    own = tuple(m for m in found if m.type == "PER" and m.rpps == rpps)
    return Person(national_id, own, tuple(m for m in found if m not in own))
