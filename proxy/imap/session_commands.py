"""Commands of any state and of the not-authenticated state (RFC 3501 §6.1, §6.2):
CAPABILITY, NOOP, LOGOUT, ID, ENABLE, STARTTLS, LOGIN, AUTHENTICATE."""

from __future__ import annotations

import base64
import binascii
import functools
import time
from collections.abc import Callable

from sqlalchemy import Connection

from audit.events import Event, Outcome
from audit.journal import append
from mss import sasl
from mss.authenticator import AuthOutcome
from mss.login import (
    LoginCheck,
    check_login,
    check_operator_login,
    login_address,
    operator_login,
    throttle_name,
)
from mss.mailstore import app_passwords, folders, operators
from mss.mailstore.mailboxes import Mailbox
from proxy.imap.args import NoArgs, Result
from proxy.imap.parser import Command
from proxy.imap.session_args import AuthenticateArgs, EnableArgs, LoginArgs
from proxy.imap.state import (
    AUTHENTICATED,
    LOGOUT,
    ImapSession,
    No,
    Responded,
)
from proxy.imap.tls_buffers import lean_tls
from proxy.imap.tokens import ImapParseError
from trustspace.tlshook import presented_chain


async def capability(s: ImapSession, cmd: Command, args: NoArgs) -> Result:
    s.untagged(f"CAPABILITY {s.capabilities()}".encode())
    return "CAPABILITY completed"


async def noop(s: ImapSession, cmd: Command, args: NoArgs) -> Result:
    return "NOOP completed"


async def logout(s: ImapSession, cmd: Command, args: NoArgs) -> Result:
    s.untagged(b"BYE mss IMAP4rev1 server logging out")
    s.tagged(cmd.tag, "OK", "LOGOUT completed")
    s.state = LOGOUT
    await s.flush()
    raise Responded


async def id_command(s: ImapSession, cmd: Command, args: NoArgs) -> Result:
    s.untagged(b'ID ("name" "mss" "vendor" "mss")')
    return "ID completed"


async def enable(s: ImapSession, cmd: Command, args: EnableArgs) -> Result:
    enabled = []
    for capability_name in args.capabilities:
        if capability_name == "CONDSTORE":  # RFC 5161; RFC 7162 §3.1
            s.enable_condstore()
            enabled.append("CONDSTORE")
    s.untagged(("ENABLED " + " ".join(enabled)).strip().encode())
    return "ENABLE completed"


# ------------------------------------------------------------------------------ not authenticated

async def starttls(s: ImapSession, cmd: Command, args: NoArgs) -> Result:
    if s.tls:
        raise ImapParseError("TLS already active")
    s.tagged(cmd.tag, "OK", "Begin TLS negotiation now")
    await s.flush()
    # RFC 3501 §6.2.1: nothing the client sent in clear behind STARTTLS is kept (ours and
    # the stream reader's buffers; the latter has no public API for it)
    s.input.buffer.clear()
    pending = getattr(s.reader, "_buffer", None)
    if isinstance(pending, bytearray):
        pending.clear()
    await s.writer.start_tls(s.ctx.tls)
    lean_tls(s.writer)
    s.tls = True
    raise Responded


async def _login(s: ImapSession, cmd: Command, login: str, password: str, mechanism: str,
                 authzid: str | None = None) -> None:
    operator = None
    if authzid:  # RFC 4616 §2: authzid = the mailbox, authcid = the operator acting as it
        operator, login = login, authzid
    elif (split := operator_login(login)) is not None:  # MAILBOX*OPERATOR (no authzid)
        login, operator = split
    throttle = s.ctx.throttle
    # the identity the password check uses (mss.login): the operator's own when one logs in
    name = f"operator:{throttle_name(operator)[:64]}" if operator else throttle_name(login)
    if await throttle.check(name, s.remote_addr):
        await s.audit(s.record(Event.IMAP_LOGIN, Outcome.MINOR_FAILURE, actor=name,
                               reason="throttled", detail={"mechanism": mechanism}))
        raise No("Too many failed logins, try again later", "UNAVAILABLE")
    if operator is not None and "password" not in s.ctx.methods:  # app passwords only here
        checked = LoginCheck(login_address(login), None, "operator: this listener takes no "
                             "password login", "operator", operator=operator[:64])
    elif operator is not None:
        checked = await s.thread(check_operator_login, s.ctx.app.reader, operator, login,
                                 password)
    else:  # the listener's listeners.<name>.auth: mailbox password and/or IMAP app passwords
        checked = await s.thread(functools.partial(check_login, service="imap",
                                                   methods=s.ctx.methods),
                                 s.ctx.app.reader, login, password)
    mailbox, reason = checked.mailbox, checked.reason
    if mailbox is None:
        locked = throttle.failed(name, s.remote_addr)
        await s.audit(s.record(Event.IMAP_LOGIN, Outcome.SERIOUS_FAILURE, actor=name,
                               mailbox=checked.address if operator else None,
                               reason=reason + ("; now throttled" if locked else ""),
                               detail={"mechanism": mechanism, **checked.audit_detail()}))
        raise No("Authentication failed", "AUTHENTICATIONFAILED")
    throttle.succeeded(name, s.remote_addr)
    when, used, operator_id = time.time(), checked.app_password_id, checked.operator_id

    def touch(conn: Connection) -> None:
        if used is not None:  # its last use, in the login's transaction
            app_passwords.touch(conn, used, s.remote_addr, when)
        if operator_id is not None:
            operators.touch(conn, operator_id, when)
    s.operator = checked.operator  # every record of the session names the operator
    await _logged_in(s, cmd, mailbox, {"mechanism": mechanism, **checked.audit_detail()},
                     touch)


async def _logged_in(s: ImapSession, cmd: Command, mailbox: Mailbox, detail: dict[str, str],
                     touch: Callable[[Connection], None] | None) -> None:
    """The login's audit record (and the default folders, an app password's last use, the
    session's row in the registry: mss sessions) committed, then the tagged OK."""
    registry = s.ctx.registry
    method = detail.get("method") or detail.get("mechanism", "").lower()

    def setup(conn: Connection) -> None:
        folders.ensure_default_folders(conn, s.ctx.keyring, mailbox.id)
        records = [s.record(Event.IMAP_LOGIN, mailbox=mailbox.address, detail=detail,
                            actor=f"operator:{s.operator}" if s.operator else mailbox.address)]
        if s.operator:  # delegated access: who, which mailbox (issue 16)
            records.append(s.record(Event.IMAP_DELEGATED, mailbox=mailbox.address, detail={
                "command": "LOGIN", "operator": s.operator, "mechanism": detail["mechanism"]}))
        append(conn, records)
        if touch is not None:
            touch(conn)
        if registry is not None:
            registry.row(conn, s.id, "imap", s.ctx.listener, mailbox.id, s.remote_addr,
                         method)
    if registry is not None:
        registry.expect(s.id, s.operator_ended)
    try:
        await s.write(setup)
    except BaseException:
        if registry is not None:
            registry.forget(s.id)
        raise
    s.logged_in_at = time.time()
    s.user = mailbox
    s.state = AUTHENTICATED
    s.commands.max_literal = s.ctx.config.max_literal_size
    s.commands.max_command = s.ctx.config.max_literal_size + 1024 * 1024
    s.tagged(cmd.tag, "OK", "Logged in", f"CAPABILITY {s.capabilities()}")
    raise Responded


async def login(s: ImapSession, cmd: Command, args: LoginArgs) -> Result:
    if not s.tls:  # RFC 3501 §6.2.3 LOGINDISABLED
        raise No("Use STARTTLS first", "PRIVACYREQUIRED")
    if "PLAIN" not in s.ctx.mechanisms:  # LOGINDISABLED: this front takes no password
        raise No("LOGIN is disabled on this port", "CANNOT")
    await _login(s, cmd, args.user, args.password, "LOGIN")
    return None


async def _client_response(s: ImapSession, cmd: Command, args: AuthenticateArgs) -> bytes:
    """The client's SASL message (RFC 4959 SASL-IR, else after an empty ``+``), decoded."""
    if args.initial is not None:
        response = args.initial
    else:
        s.send(b"+ \r\n")
        await s.flush()
        line = await s.input.readline(s.ctx.config.max_line_length)
        if line is None:
            s.state = LOGOUT
            raise Responded
        response = line.strip()
    if response == b"*":  # RFC 3501 §6.2.2: the client cancelled
        s.bad(cmd.tag, "Authentication cancelled")
        raise Responded
    try:
        return base64.b64decode(response, validate=True)
    except binascii.Error:
        s.bad(cmd.tag, f"Invalid SASL {args.mechanism} response")
        raise Responded from None


async def authenticate(s: ImapSession, cmd: Command, args: AuthenticateArgs) -> Result:
    if args.mechanism not in s.ctx.mechanisms:
        raise No("Unsupported mechanism", "CANNOT")
    if not s.tls:
        raise No("Use STARTTLS first", "PRIVACYREQUIRED")
    decoded = await _client_response(s, cmd, args)
    if args.mechanism == "PLAIN":
        try:
            _authzid, authcid, password = decoded.split(b"\0")  # RFC 4616
        except ValueError:
            s.bad(cmd.tag, "Invalid SASL PLAIN response")
            raise Responded from None
        await _login(s, cmd, authcid.decode("utf-8", "replace"),
                     password.decode("utf-8", "replace"), "PLAIN",
                     _authzid.decode("utf-8", "replace") if _authzid and _authzid != authcid
                     else None)
        return None
    authenticator = s.ctx.authenticator
    assert authenticator is not None  # offered only with one (listeners.py)
    try:
        if args.mechanism == "EXTERNAL":  # RFC 4422 appendix A
            authzid = sasl.parse_external(decoded)
            ssl_object = s.writer.get_extra_info("ssl_object")
            outcome = await authenticator.certificate(
                "imap", presented_chain(ssl_object) if ssl_object is not None else [],
                authzid, s.remote_addr)
        else:  # OAUTHBEARER (RFC 7628), XOAUTH2
            parse = sasl.parse_oauthbearer if args.mechanism == "OAUTHBEARER" \
                else sasl.parse_xoauth2
            outcome = await authenticator.bearer("imap", args.mechanism, parse(decoded),
                                                 s.remote_addr)
    except sasl.SaslError as exc:
        await s.audit(s.record(Event.IMAP_LOGIN, Outcome.SERIOUS_FAILURE,
                               reason=f"malformed {args.mechanism} message: {exc}",
                               detail={"mechanism": args.mechanism}))
        s.bad(cmd.tag, f"Invalid SASL {args.mechanism} response")
        raise Responded from None
    await _sasl_verdict(s, cmd, args.mechanism, outcome)
    return None


async def _sasl_verdict(s: ImapSession, cmd: Command, mechanism: str,
                        outcome: AuthOutcome) -> None:
    """A token or certificate login: logged in, or ``NO [UNAVAILABLE]`` (throttled, issuer
    or CRL unavailable), or ``NO [AUTHENTICATIONFAILED]``, a refused token first getting
    its RFC 7628 §3.2.2 error challenge, which the client answers (%x01)."""
    mailbox = outcome.mailbox
    if mailbox is not None:
        await _logged_in(s, cmd, mailbox, outcome.detail, None)
        return
    await s.audit(s.record(
        Event.IMAP_LOGIN, Outcome.MINOR_FAILURE if outcome.throttled or outcome.temporary
        else Outcome.SERIOUS_FAILURE, actor=outcome.actor[:320], reason=outcome.reason,
        detail=outcome.detail))
    if outcome.throttled:
        raise No("Too many failed logins, try again later", "UNAVAILABLE")
    if outcome.temporary:
        raise No("Temporary authentication failure, try again later", "UNAVAILABLE")
    if mechanism in ("OAUTHBEARER", "XOAUTH2"):
        assert s.ctx.authenticator is not None
        s.send(b"+ " + base64.b64encode(s.ctx.authenticator.bearer_error(outcome)) + b"\r\n")
        await s.flush()
        if await s.input.readline(s.ctx.config.max_line_length) is None:
            s.state = LOGOUT
            raise Responded
    raise No("Authentication failed", "AUTHENTICATIONFAILED")
