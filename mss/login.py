"""The password check of a mailbox login, shared by SMTP AUTH (submission) and IMAP: the
mailbox password and the app passwords (mss.mailstore.app_passwords), as the listener's
``listeners.<name>.auth`` offers them.

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
from mss.mailstore import app_passwords, mailboxes, operators
from mss.passwords import verify_password

log = structlog.get_logger("mss.login")


SERVICES = ("imap", "smtp")  # the app password scopes (mss.mailstore.app_passwords.SCOPES)


@dataclass(frozen=True)
class LoginCheck:
    address: str | None  # the login normalised, None when it is no address at all
    mailbox: mailboxes.Mailbox | None  # set when the login succeeded
    reason: str  # for the audit record
    method: str = "password"  # "password" | "app-password": the one that matched (or failed)
    app_password_id: int | None = None  # the app password that matched (touch it on success)
    operator: str | None = None  # "operator": the operator acting as the mailbox
    operator_id: int | None = None

    def audit_detail(self) -> dict[str, str]:
        """What the login's audit record adds: the method, the app password's id, the
        operator."""
        detail = {"method": self.method}
        if self.app_password_id is not None:
            detail["app_password"] = str(self.app_password_id)
        if self.operator is not None:
            detail["operator"] = self.operator
        return detail


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


def check_login(reader: Engine, login: str, password: str, *, service: str = "imap",
                methods: frozenset[str] = frozenset({"password"})) -> LoginCheck:
    """Check *password* for *login* on *service* ("imap" | "smtp"): the mailbox password
    when "password" is in *methods*, an app password of that scope when "app-password" is.

    Constant work whatever the login names: the same reads (the mailbox, then its live app
    passwords, mailbox id 0 when unknown) and, when "password" is offered, one scrypt. Only a
    matching app password skips the scrypt, and its success is no secret."""
    if service not in SERVICES:
        raise ValueError(f"service {service!r}: one of {SERVICES}")
    address = login_address(login)
    mailbox = None
    app_password_id, wrong_scope = None, False
    with_app = "app-password" in methods
    with_password = "password" in methods
    if address is not None:
        try:
            with reader.connect() as conn:
                mailbox = mailboxes.get_mailbox(conn, address)
                if with_app:
                    app_password_id, wrong_scope = app_passwords.matching(
                        conn, mailbox.id if mailbox else 0, password, service)
        except DBAPIError as exc:
            if unavailable(exc):  # the database is away: a temporary failure, not a login's
                raise
            # a corrupt row: the driver's message quotes the column's text (the password
            # hash), so only the error class is logged, and the login fails
            log.error("mailbox record unreadable", mailbox=address,
                      error=type(exc.orig).__name__)
            verify_password(password, None)  # same work as any other failed login
            return LoginCheck(address, None, "mailbox record unreadable")
    if mailbox is not None and app_password_id is not None:
        if not mailbox.usable:
            return LoginCheck(address, None, f"mailbox {mailbox.state}", "app-password",
                              app_password_id)
        return LoginCheck(address, mailbox, "authenticated", "app-password", app_password_id)
    hashed = mailbox.password_hash if mailbox else None
    # constant work even when unknown
    ok = verify_password(password, hashed) if with_password else False
    method = "app-password" if wrong_scope or not with_password else "password"
    if mailbox is None:
        return LoginCheck(address, None, "unknown user", method)
    if not ok:
        return LoginCheck(address, None, _failure(hashed, with_password, with_app, wrong_scope,
                                                  service), method)
    if not mailbox.usable:
        return LoginCheck(address, None, f"mailbox {mailbox.state}")
    return LoginCheck(address, mailbox, "authenticated")


def _failure(hashed: str | None, with_password: bool, with_app: bool, wrong_scope: bool,
             service: str) -> str:
    """The private reason of a failed login of a known mailbox (audit): "wrong password"
    when the mailbox password was offered (whether app passwords were too: method)."""
    if wrong_scope:
        return f"app password not valid for {service}"
    if not with_password:
        return "wrong app password" if with_app else "no login method offered"
    return "wrong password" if hashed else "mailbox has no password"


def operator_login(login: str) -> tuple[str, str] | None:
    """(mailbox login, operator name) of a ``MAILBOX*OPERATOR`` login (Dovecot's master-user
    convention, for clients that send no SASL authzid), else None: the operator is what
    follows the last ``*``, a valid operator name (so never an address's domain)."""
    mailbox, sep, name = login.rpartition(operators.SEPARATOR)
    if not sep or not mailbox or not operators.NAME.fullmatch(name.strip().lower()):
        return None
    return mailbox, name


def check_operator_login(reader: Engine, operator: str, login: str, password: str
                         ) -> LoginCheck:
    """An operator (mss operator add) logging in as the mailbox *login*: RFC 4616 PLAIN
    with authzid = the mailbox and authcid = the operator. The operator's password (one
    scrypt whatever the names), then the mailbox: it must exist and be usable."""
    address = login_address(login)
    try:
        with reader.connect() as conn:
            found = operators.check(conn, operator, password)
            mailbox = mailboxes.get_mailbox(conn, address) if address else None
    except DBAPIError as exc:
        if unavailable(exc):
            raise
        log.error("operator record unreadable", error=type(exc.orig).__name__)
        return LoginCheck(address, None, "operator record unreadable", "operator")
    if found is None:
        return LoginCheck(address, None, "operator: unknown operator or wrong password",
                          "operator", operator=operator[:64])
    if mailbox is None:
        return LoginCheck(address, None, "operator: unknown mailbox", "operator",
                          operator=found.name, operator_id=found.id)
    if not mailbox.usable:
        return LoginCheck(address, None, f"operator: mailbox {mailbox.state}", "operator",
                          operator=found.name, operator_id=found.id)
    return LoginCheck(address, mailbox, "operator acting as the mailbox", "operator",
                      operator=found.name, operator_id=found.id)
