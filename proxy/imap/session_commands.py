"""Commands of any state and of the not-authenticated state (RFC 3501 §6.1, §6.2):
CAPABILITY, NOOP, LOGOUT, ID, ENABLE, STARTTLS, LOGIN, AUTHENTICATE."""

from __future__ import annotations

import base64
import binascii
import functools
import time

from sqlalchemy import Connection

from audit.events import Event, Outcome
from audit.journal import append
from mss.login import check_login, throttle_name
from mss.mailstore import app_passwords, folders
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
from proxy.imap.tokens import ImapParseError


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
    s.tls = True
    raise Responded


async def _login(s: ImapSession, cmd: Command, login: str, password: str, mechanism: str) -> None:
    throttle = s.ctx.throttle
    name = throttle_name(login)  # the identity the password check uses (mss.login)
    if await throttle.check(name, s.remote_addr):
        await s.audit(s.record(Event.IMAP_LOGIN, Outcome.MINOR_FAILURE, actor=name,
                               reason="throttled", detail={"mechanism": mechanism}))
        raise No("Too many failed logins, try again later", "UNAVAILABLE")
    # the listener's listeners.<name>.auth: mailbox password and/or IMAP app passwords
    listener = s.ctx.app.config.listeners.get(s.ctx.listener)
    methods = frozenset(listener.auth if listener else ("password",))
    checked = await s.thread(functools.partial(check_login, service="imap", methods=methods),
                             s.ctx.app.reader, login, password)
    mailbox, reason = checked.mailbox, checked.reason
    if mailbox is None:
        locked = throttle.failed(name, s.remote_addr)
        await s.audit(s.record(Event.IMAP_LOGIN, Outcome.SERIOUS_FAILURE, actor=name,
                               reason=reason + ("; now throttled" if locked else ""),
                               detail={"mechanism": mechanism, **checked.audit_detail()}))
        raise No("Authentication failed", "AUTHENTICATIONFAILED")
    throttle.succeeded(name, s.remote_addr)
    when = time.time()

    def setup(conn: Connection) -> None:
        folders.ensure_default_folders(conn, s.ctx.keyring, mailbox.id)
        if checked.app_password_id is not None:  # its last use, in the login's transaction
            app_passwords.touch(conn, checked.app_password_id, s.remote_addr, when)
        append(conn, [s.record(Event.IMAP_LOGIN, actor=mailbox.address, mailbox=mailbox.address,
                               detail={"mechanism": mechanism, **checked.audit_detail()})])
    await s.write(setup)
    s.user = mailbox
    s.state = AUTHENTICATED
    s.commands.max_literal = s.ctx.config.max_literal_size
    s.commands.max_command = s.ctx.config.max_literal_size + 1024 * 1024
    s.tagged(cmd.tag, "OK", "Logged in", f"CAPABILITY {s.capabilities()}")
    raise Responded


async def login(s: ImapSession, cmd: Command, args: LoginArgs) -> Result:
    if not s.tls:  # RFC 3501 §6.2.3 LOGINDISABLED
        raise No("Use STARTTLS first", "PRIVACYREQUIRED")
    await _login(s, cmd, args.user, args.password, "LOGIN")
    return None


async def authenticate(s: ImapSession, cmd: Command, args: AuthenticateArgs) -> Result:
    if args.mechanism != "PLAIN":
        raise No("Unsupported mechanism", "CANNOT")
    if not s.tls:
        raise No("Use STARTTLS first", "PRIVACYREQUIRED")
    if args.initial is not None:  # RFC 4959 SASL-IR
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
        decoded = base64.b64decode(response, validate=True)
        _authzid, authcid, password = decoded.split(b"\0")  # RFC 4616
    except (binascii.Error, ValueError):
        s.bad(cmd.tag, "Invalid SASL PLAIN response")
        raise Responded from None
    if _authzid and _authzid != authcid:
        raise No("Authorization identity must be empty or the same", "AUTHORIZATIONFAILED")
    await _login(s, cmd, authcid.decode("utf-8", "replace"),
                 password.decode("utf-8", "replace"), "PLAIN")
    return None


