"""IMAP authentication: scrypt password check (as SMTP submission); throttling of
repeated failures is :class:`mss.throttle.Throttle` (answered ``NO [UNAVAILABLE]``)."""

from __future__ import annotations

from sqlalchemy import Connection

from mss import store
from mss.passwords import verify_password


def check_login(conn: Connection, login: str, password: str) -> tuple[store.Mailbox | None, str]:
    """(mailbox, reason): the mailbox when the password is right and it is enabled."""
    try:
        address = store.normalize_address(login)
    except store.StoreError:
        address = None
    mailbox = store.get_mailbox(conn, address) if address else None
    ok = verify_password(password, mailbox.password_hash if mailbox else None)
    if mailbox is None:
        return None, "unknown user"
    if not ok:
        return None, "wrong password" if mailbox.password_hash else "mailbox has no password"
    if not mailbox.enabled:
        return None, "mailbox disabled"
    return mailbox, "authenticated"
