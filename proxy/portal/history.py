"""A person's access history: the audit records of their mailboxes, reduced to what the
portal shows (time, what, who, from which address, result). Never content, subject or
folder name: the journal holds none, and only the fields below leave this module."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sqlalchemy import Connection

from audit.events import Event, Outcome
from audit.journal import access_history

# the events shown, with their label
LABELS: Mapping[Event, str] = MappingProxyType({
    Event.IMAP_LOGIN: "IMAP login",
    Event.SMTP_AUTH: "SMTP login (sending)",
    Event.IMAP_SELECT: "Folder opened",
    Event.IMAP_FETCH: "Messages read",
    Event.IMAP_APPEND: "Message stored",
    Event.IMAP_COPY: "Messages copied",
    Event.IMAP_MOVE: "Messages moved",
    Event.IMAP_STORE_DELETED: "Messages marked deleted",
    Event.IMAP_EXPUNGE: "Messages deleted",
    Event.IMAP_FOLDER_CREATE: "Folder created",
    Event.IMAP_FOLDER_DELETE: "Folder deleted",
    Event.IMAP_FOLDER_RENAME: "Folder renamed",
    Event.IMAP_DELEGATED: "Delegated access",
    Event.SMTP_MESSAGE_ACCEPTED: "Message sent",
    Event.ADMIN_APP_PASSWORD_ADD: "App password created by the operator",
    Event.ADMIN_APP_PASSWORD_REVOKE: "App password revoked by the operator",
    Event.PORTAL_LOGIN: "Portal login",
    Event.PORTAL_LOGOUT: "Portal logout",
    Event.PORTAL_APP_PASSWORD_CREATE: "App password created",
    Event.PORTAL_APP_PASSWORD_REVOKE: "App password revoked",
})
OUTCOMES = MappingProxyType({Outcome.SUCCESS: "ok", Outcome.MINOR_FAILURE: "refused",
                             Outcome.SERIOUS_FAILURE: "failed",
                             Outcome.MAJOR_FAILURE: "error"})
PAGE = 100


@dataclass(frozen=True)
class Access:
    id: int
    ts: str  # ISO 8601 UTC
    what: str
    mailbox: str | None
    who: str | None  # the actor: the owner, a delegate, or a failed login's name
    address: str | None  # the client's IP address
    method: str | None  # the login mechanism / method, when a login
    result: str
    delegated: bool  # done by someone else than the mailbox's owner


def _access(row: dict[str, Any], labels: dict[str, str], own: set[str]) -> Access:
    detail = row["detail"]
    method = detail.get("method") or detail.get("mechanism")
    mailbox, actor = row["mailbox"], row["actor"]
    return Access(row["id"], row["ts"], labels[row["event"]], mailbox, actor,
                  row["remote_addr"], str(method) if method else None,
                  OUTCOMES.get(Outcome(row["outcome"]), str(row["outcome"])),
                  bool(mailbox and actor and actor != mailbox and mailbox in own))


def history(conn: Connection, addresses: list[str], labels: dict[str, str], *,
            before_id: int | None = None, limit: int = PAGE) -> list[Access]:
    """The newest accesses to *addresses* (*labels*: event -> label, the events shown)."""
    own = {a.lower() for a in addresses}
    rows = access_history(conn, own, list(labels), limit=limit, before_id=before_id)
    return [_access(row, labels, own) for row in rows]


def default_labels() -> dict[str, str]:
    return {str(event): label for event, label in LABELS.items()}
