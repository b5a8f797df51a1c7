"""The password check of a mailbox login, shared by SMTP AUTH (submission) and IMAP.

The mailbox is read on a short reader connection, released before scrypt runs (tens of
milliseconds of CPU: callers on the event loop run this in an executor). An unknown login
costs the same work as a known one (``verify_password`` with no hash).

One normalisation (:func:`login_address`) names the identity a login means, for the password
check and for the throttles alike: otherwise ``alice@domain.``, `` alice@domain`` or a
full-width spelling would log in as alice while counting failures, and finding locks, under
another name (issue 20 #2). Odd spellings are not refused: they name the same identity, share
its failure budget and its lockout.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from mss.addresses import AddressError, normalize_address
from mss.db import unavailable
from mss.mailstore import mailboxes
from mss.passwords import verify_password

log = structlog.get_logger("mss.login")


@dataclass(frozen=True)
class LoginCheck:
    address: str | None  # the login normalised, None when it is no address at all
    mailbox: mailboxes.Mailbox | None  # set when the login succeeded
    reason: str  # for the audit record


def login_address(login: str) -> str | None:
    """The mailbox address a login names, or None when it names none: NFKC (full-width
    letters and dots), surrounding spaces dropped, then addresses.normalize_address (IDNA
    domain, trailing dot dropped, lower case)."""
    try:
        return normalize_address(unicodedata.normalize("NFKC", login).strip())
    except AddressError:
        return None


def throttle_name(login: str) -> str:
    """The key a login's failures count under: its address when it names one, else its
    NFKC, space-stripped, case-folded text (bounded)."""
    address = login_address(login)
    if address is not None:
        return address
    return unicodedata.normalize("NFKC", login).strip().casefold()[:320]


def check_login(reader: Engine, login: str, password: str) -> LoginCheck:
    address = login_address(login)
    mailbox = None
    if address is not None:
        try:
            with reader.connect() as conn:
                mailbox = mailboxes.get_mailbox(conn, address)
        except DBAPIError as exc:
            if unavailable(exc):  # the database is away: a temporary failure, not a login's
                raise
            # a corrupt row: the driver's message quotes the column's text (the password
            # hash), so only the error class is logged, and the login fails
            log.error("mailbox record unreadable", mailbox=address,
                      error=type(exc.orig).__name__)
            verify_password(password, None)  # same work as any other failed login
            return LoginCheck(address, None, "mailbox record unreadable")
    hashed = mailbox.password_hash if mailbox else None
    ok = verify_password(password, hashed)  # constant work even when unknown
    if mailbox is None:
        return LoginCheck(address, None, "unknown user")
    if not ok:
        return LoginCheck(address, None,
                          "wrong password" if hashed else "mailbox has no password")
    if not mailbox.enabled:
        return LoginCheck(address, None, "mailbox disabled")
    return LoginCheck(address, mailbox, "authenticated")
