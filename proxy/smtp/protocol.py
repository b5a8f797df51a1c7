"""The SMTP protocol engine: aiosmtpd's state machine with mss's DATA reader and AUTH.

aiosmtpd parses commands, STARTTLS and the MAIL/RCPT grammar. We replace:
- DATA reading: one buffer scan for CRLF.CRLF instead of a Python loop per line (fast on
  large messages), the end of data only on CRLF.CRLF (RFC 5321 §4.1.1.4: LF.LF, CR.CR and
  other smuggling sequences do not end it), bare CR or LF refused (RFC 5321 §2.3.8), the size
  limit enforced while reading with nothing kept past it (RFC 1870 §6.3), line length checked
  (RFC 5321 §4.5.3.1.6);
- AUTH PLAIN/LOGIN: the password check runs off the event loop; LOGIN prompts with
  ``Username:`` / ``Password:`` (Outlook needs them); OAUTHBEARER, XOAUTH2 (RFC 7628) and
  EXTERNAL (RFC 4422 appendix A), the mechanisms offered per listener, the AUTH line and
  its responses bounded to 12288 octets (RFC 4954 §4);
- a session id, an idle timeout reset per command, a deadline for the pre-auth phase
  counted from the connection (``smtp.preauth_timeout``), ``421 4.4.2`` at either, audited
  ``smtp.timeout``, and a cap on bad commands;
- the listener's connection caps (mss/limits.py: ``421 4.7.0 Too many connections`` at
  connect) and the process's memory budget for DATA (``452 4.3.1``, RFC 5321 §4.2.5);
- replies: held and written together when the session would wait for input (RFC 2920
  §3.1: the replies to a pipelined group, in order, in one write, so one TLS record; the
  EHLO reply one write instead of one per line), at once before a close or STARTTLS.

The engine knows its handler only as :class:`SmtpHooks`: policy, audit and storage are
the handler's (proxy/smtp/handler.py), per-connection state is :mod:`proxy.smtp.session`.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import io
import re
import ssl
from base64 import b64decode, b64encode
from collections.abc import Callable, Coroutine
from types import MappingProxyType
from typing import Any, Protocol

import structlog
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword, syntax
from sqlalchemy.exc import DBAPIError

from mss import dsn, sasl
from mss.authenticator import AuthOutcome
from mss.db import unavailable
from mss.limits import Admission, ListenerGuard, MemoryBudget
from mss.message import has_bare_cr_or_lf, longest_line
from mss.sasl import BearerMessage
from proxy.smtp.session import MssEnvelope, MssSession

log = structlog.get_logger("mss.smtp")

END_OF_DATA = b"\r\n.\r\n"
COMMAND_LINE_LIMIT = 512  # octets with CRLF, RFC 5321 §4.5.3.1.4
AUTH_LINE_LIMIT = 12288  # octets with CRLF: the AUTH line and its responses, RFC 4954 §4
MECHANISMS = ("EXTERNAL", "LOGIN", "OAUTHBEARER", "PLAIN", "XOAUTH2")  # the auth_* below
_DATA_CHUNK = 256 * 1024
# replies held past this many bytes go out without waiting for the end of the group, and
# the session then waits for the client to read them (a client that pipelines without
# reading gets back-pressure, not an unbounded buffer)
_REPLY_HOLD = 16 * 1024
# replies after which the connection closes or changes (STARTTLS, RFC 3207 §4): written
# at once with what is held before them
_FLUSH_AT = frozenset({b"220", b"221", b"421", b"502"})
CLOSE_GRACE = 1.0  # seconds for a client to see a 421 and close before the abort
# RFC 2034 §3: once EHLO offered ENHANCEDSTATUSCODES, every reply but the greeting, the
# EHLO reply and the intermediate ones (334, 354) carries a code (RFC 3463); aiosmtpd's own
# replies have none: these are added (§3.5 system, §3.6 protocol)
_ENHANCED = MappingProxyType({500: "5.5.2", 501: "5.5.4", 502: "5.5.1", 503: "5.5.1",
                              504: "5.5.4", 552: "5.3.4", 553: "5.1.3", 555: "5.5.4",
                              421: "4.3.0"})
# a path alone, "<local@domain>" without parameters (RFC 5321 §4.1.2): no DSN parameter to
# take out, nothing to parse twice
_BARE_PATH = re.compile(r"\s*<[^<>\s\"\\]*>\s*$")
# a path of dot-atoms, "<local@domain>" then what follows (RFC 5321 §4.1.2, RFC 5322
# §3.2.3): the addresses of nearly every MAIL and RCPT, read without the email package's
# header parser (aiosmtpd's _getaddr: ~50 µs each); anything else goes to that parser
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*)>(?:[ \t]+|$)")
_HAS_ENHANCED = re.compile(r"\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")


def with_enhanced_code(reply: str) -> str:
    """*reply* with an RFC 3463 enhanced code after its SMTP code, if it has none."""
    if len(reply) < 3 or not reply[:3].isdigit() or reply[0] not in "245" \
            or reply[:3] in ("334", "354") or _HAS_ENHANCED.match(reply):
        return reply
    code = int(reply[:3])
    enhanced = _ENHANCED.get(code, f"{reply[0]}.0.0")
    sep, text = reply[3:4] or " ", reply[4:]
    return f"{reply[:3]}{sep}{enhanced} {text}".rstrip()


class SmtpHooks(Protocol):
    """What the protocol engine calls on its handler (proxy/smtp/handler.py), typed.

    The ``handle_*`` hooks are aiosmtpd's (it calls EHLO, MAIL and RCPT itself, once
    their grammar is checked; DATA is called from here); the ``on_*`` hooks, AUTH's
    ``login_blocked`` and ``authenticate`` are mss's. Replies are complete SMTP lines."""

    def on_connect(self, server: MssSMTP, session: MssSession) -> None:
        """A connection admitted (before the greeting)."""
        ...

    def on_tls(self, server: MssSMTP, session: MssSession,
               ssl_object: ssl.SSLObject | None) -> None:
        """TLS is up: after STARTTLS, or from the first byte (RFC 8314 §3)."""
        ...

    def on_timeout(self, server: MssSMTP, session: MssSession, reason: str) -> None:
        """The connection is closed on a deadline (its 421 already sent)."""
        ...

    def on_disconnect(self, server: MssSMTP, session: MssSession) -> None:
        """The connection is gone."""
        ...

    async def handle_EHLO(self, server: MssSMTP, session: MssSession, envelope: MssEnvelope,
                          hostname: str, responses: list[str]) -> list[str]:
        """EHLO: the capability lines to answer, from aiosmtpd's *responses*."""
        ...

    async def login_blocked(self, session: MssSession, mechanism: str, login: bytes) -> bool:
        """AUTH, before any password check: whether this login or address is locked."""
        ...

    async def authenticate(self, server: MssSMTP, session: MssSession, mechanism: str,
                           credentials: LoginPassword) -> bool:
        """AUTH: whether the credentials are good (the session then sends as them)."""
        ...

    def on_auth_failure(self, server: MssSMTP, session: MssSession, mechanism: str,
                        login: bytes, reason: str) -> None:
        """AUTH refused by the engine itself (a PLAIN authzid that is not the login, a
        malformed SASL message)."""
        ...

    async def authenticate_bearer(self, server: MssSMTP, session: MssSession, mechanism: str,
                                  message: BearerMessage) -> AuthOutcome:
        """AUTH OAUTHBEARER / XOAUTH2: the token's verdict (a success is committed with its
        audit record before it returns)."""
        ...

    async def authenticate_certificate(self, server: MssSMTP, session: MssSession,
                                       authzid: str | None) -> AuthOutcome:
        """AUTH EXTERNAL: the TLS client certificate's verdict (committed as above)."""
        ...

    def bearer_error(self, outcome: AuthOutcome) -> bytes:
        """The RFC 7628 §3.2.2 error challenge (JSON) of a refused token."""
        ...

    async def handle_QUIT(self, server: MssSMTP, session: MssSession,
                          envelope: MssEnvelope) -> str:
        """QUIT: the reply (the session is over: mss sessions forgets it now)."""
        ...

    async def handle_MAIL(self, server: MssSMTP, session: MssSession, envelope: MssEnvelope,
                          address: str, mail_options: list[str]) -> str:
        """MAIL FROM: the reply; on 250 the envelope's sender is set."""
        ...

    async def handle_RCPT(self, server: MssSMTP, session: MssSession, envelope: MssEnvelope,
                          address: str, rcpt_options: list[str]) -> str:
        """RCPT TO: the reply; on 250 the recipient is in the envelope."""
        ...

    def on_data_refused(self, server: MssSMTP, session: MssSession, envelope: MssEnvelope,
                        reply: str) -> None:
        """DATA refused while reading (size, line length, bare CR/LF, memory)."""
        ...

    async def handle_DATA(self, server: MssSMTP, session: MssSession,
                          envelope: MssEnvelope) -> str:
        """DATA read (``envelope.content``, unstuffed bytes): the reply, 250 only once
        the message and its audit records are committed."""
        ...


class ReplyFlushingReader(asyncio.StreamReader):
    """The session's stream reader: before it waits for more input it writes the replies
    the session holds (RFC 2920 §3.1: a server may hold the replies of a pipelined group
    but must send them before it blocks on reading, or client and server wait on each
    other). Every read of the session (commands, AUTH responses, DATA) goes through
    :meth:`_wait_for_data` when its buffer has too little."""

    flush: Callable[[], None] | None = None

    async def _wait_for_data(self, func_name: str) -> None:
        if self.flush is not None:
            self.flush()
        await super()._wait_for_data(func_name)  # type: ignore[misc]


@functools.cache  # one entry per protocol class
def _method_names(cls: type) -> list[str]:
    return sorted(name for name in dir(cls) if name.startswith(("auth_", "smtp_")))


class MssSMTP(SMTP):
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"

    def __dir__(self) -> list[str]:
        """The SASL (``auth_*``) and command (``smtp_*``) methods only: aiosmtpd's
        ``__init__`` finds them, on every connection, by ``dir()`` and
        ``inspect.getmembers`` (a getattr of each of ~300 attributes, properties run)."""
        return _method_names(type(self))  # type: ignore[arg-type]  # typeshed: a class is Hashable

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's, with the common case (a path of dot-atoms, RFC 5321 §4.1.2) read by
        one regular expression; the same (address, rest) as its parser
        (tests/test_smtp_pipelining.py checks both agree)."""
        match = _SIMPLE_PATH.match(arg)
        if match is None or arg.startswith("(", match.end()):  # a comment: the parser's
            return super()._getaddr(arg)
        address = match.group(1)
        if self.local_part_limit and address.rindex("@") > self.local_part_limit:
            return None, None
        return address, arg[match.end():]

    def __init__(self, handler: SmtpHooks, *, listener: str, line_length_limit: int,
                 data_timeout: float, max_errors: int, implicit_tls: bool,
                 preauth_timeout: float = 60.0,
                 offer_auth: bool, guard: ListenerGuard | None = None,
                 budget: MemoryBudget | None = None,
                 mechanisms: tuple[str, ...] = ("LOGIN", "PLAIN"), **kwargs: Any) -> None:
        # RFC 5321 §4.5.3.1.6: a text line is at most line_length_limit octets with its
        # CRLF, the transparency dot (§4.5.2) not counted (DATA: _unstuff). aiosmtpd sizes
        # its command StreamReader from this attribute, whose readuntil(b"\n") takes a line
        # whose LF is at index <= limit: the longest command line, AUTH's (RFC 4954 §4),
        # minus one; each command's own limit is checked once it is read.
        self.line_length_limit = max(line_length_limit, AUTH_LINE_LIMIT) - 1
        self.text_line_limit = line_length_limit
        # RFC 5321 §4.5.3.1.4: a command line is at most 512 octets with its CRLF
        # (aiosmtpd measures it without); per session, not aiosmtpd's dict shared by every
        # connection, reset at each EHLO (which adds the SIZE / SMTPUTF8 allowances)
        self.command_size_limit = COMMAND_LINE_LIMIT - 2
        self.command_size_limits = collections.defaultdict(lambda: COMMAND_LINE_LIMIT - 2)
        self.command_size_limits["AUTH"] = AUTH_LINE_LIMIT - 2
        # the SASL mechanisms this listener offers (mss.authenticator.offered), the others
        # neither advertised nor accepted (504 5.5.4)
        kwargs["auth_exclude_mechanism"] = [m for m in MECHANISMS if m not in mechanisms]
        self.listener = listener
        self.data_timeout = data_timeout
        self.preauth_timeout = preauth_timeout
        self._preauth_deadline: asyncio.TimerHandle | None = None
        self.max_errors = max_errors
        self.implicit_tls = implicit_tls
        self.offer_auth = offer_auth
        self.guard = guard
        self.budget = budget
        self.admission: Admission | None = None
        self.refused = False  # over a connection cap: closed at connect, no session
        self.held = 0  # bytes of DATA taken from the budget
        self.hooks = handler  # aiosmtpd's event_handler, typed
        self._in_ehlo = False
        self._deadline = 0.0  # of the idle (or DATA) timeout: _reset_timeout
        self._timer_at = float("inf")  # when the timer armed for it fires
        self._replies: list[bytes] = []  # held until the session waits (flush_replies)
        self._held_bytes = 0
        super().__init__(handler, **kwargs)
        # aiosmtpd's reader, made at __init__: it flushes the held replies before it waits
        reader = self._stream_reader  # type: ignore[attr-defined]
        assert reader is not None
        reader.__class__ = ReplyFlushingReader
        assert isinstance(reader, ReplyFlushingReader)
        reader.flush = self.flush_replies
        self.busy = False  # inside DATA: shutdown waits for it
        self.ending = False  # ended by mss sessions end during DATA: closed after its reply

    # ------------------------------------------------------------------ session
    def _create_session(self) -> MssSession:
        session = MssSession(self.loop)
        session.listener = self.listener
        return session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        upgrading = self.transport is not None and self._original_transport is not None
        peer = transport.get_extra_info("peername")
        if not upgrading and not self._admit(peer[0] if peer else "", transport):
            return
        before = self.session if upgrading else None
        super().connection_made(transport)  # at STARTTLS: a new session (RFC 3207 §4.2)
        session = self.mss_session()
        session.remote_addr = peer[0] if peer else ""
        if isinstance(before, MssSession):  # one id per connection, its records kept
            session.id = before.id
            session.pending_audit = before.pending_audit
        if not upgrading:
            self.hooks.on_connect(self, session)
            self._preauth_deadline = self.loop.call_later(self.preauth_timeout,
                                                          self._preauth_expired)
        if upgrading or self.implicit_tls:  # RFC 8314 §3: TLS from the first byte
            ssl_object = transport.get_extra_info("ssl_object")
            self.hooks.on_tls(self, session, ssl_object if isinstance(
                ssl_object, ssl.SSLObject) else None)

    def _admit(self, address: str, transport: asyncio.BaseTransport) -> bool:
        """The listener's caps (mss/limits.py): over one, 421 and close (RFC 5321 §3.1
        lets a server refuse a connection with 421 at the greeting)."""
        if self.guard is None or self.admission is not None:  # none, or admitted before TLS
            return True
        self.admission = self.guard.admit(address)
        if self.admission is not None:
            return True
        self.refused = True
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(b"421 4.7.0 Too many connections, try again later\r\n")
        transport.close()
        return False

    def _authenticated(self) -> bool:
        """SMTP AUTH succeeded, or (MX, relay) a client certificate passed verification
        at MAIL FROM: the notion of mss/limits.py."""
        session = self.session
        return isinstance(session, MssSession) and bool(
            session.authenticated or session.certificate_ok or session.relay)

    def _promote(self) -> None:
        """Once authenticated the connection leaves the pre-auth caps and deadline."""
        if not self._authenticated():
            return
        if self._preauth_deadline is not None:
            self._preauth_deadline.cancel()
            self._preauth_deadline = None
        if self.admission is not None and self.admission.preauth:
            self.admission.authenticated()

    def _preauth_expired(self) -> None:
        self._preauth_deadline = None
        if not self._authenticated():
            self._close_on_timeout("preauth_timeout", "Pre-authentication timeout")

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's, without a cancelled timer and a new one at every command: the
        deadline moves, and the one timer, when it fires before it, waits again for the
        rest (a timer is re-armed only when the deadline comes sooner than it)."""
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._deadline = deadline
        handle = self._timeout_handle
        if handle is not None and not handle.cancelled() and self._timer_at <= deadline:
            return
        if handle is not None:
            handle.cancel()
        self._timer_at = deadline
        self._timeout_handle = self.loop.call_at(deadline, self._timer_fired)

    def _timer_fired(self) -> None:
        now = self.loop.time()
        if now < self._deadline:  # moved since: wait for the rest
            self._timer_at = self._deadline
            self._timeout_handle = self.loop.call_at(self._deadline, self._timer_fired)
            return
        self._timer_at = float("inf")  # fired: the next reset arms a new one
        self._timeout_cb()

    def _timeout_cb(self) -> None:
        """aiosmtpd's idle (or DATA) timer: 421 and close instead of a silent close."""
        self._close_on_timeout("data_timeout" if self.busy else "session_timeout",
                               "Timeout")

    def _close_on_timeout(self, reason: str, text: str) -> None:
        """RFC 5321 §3.8: a server closing on a timeout should send 421 first
        (4.4.2 bad connection, RFC 3463 §3.5); audited smtp.timeout."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.flush_replies()
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(f"421 4.4.2 {self.hostname} {text}, closing connection\r\n"
                            .encode())
        if isinstance(self.session, MssSession):
            self.hooks.on_timeout(self, self.session, reason)
        transport.close()

    def data_received(self, data: bytes) -> None:
        if not self.refused:  # a refused client's bytes are dropped
            super().data_received(data)

    def eof_received(self) -> bool | None:
        return False if self.refused or self.session is None else super().eof_received()

    def mss_session(self) -> MssSession:
        assert isinstance(self.session, MssSession)
        return self.session

    def shut_down(self) -> None:
        """Server shutdown: 421 4.3.2 (RFC 5321 §3.8, RFC 3463 §3.5: system not
        accepting messages) and close, unless the connection is closing already."""
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            self.flush_replies()
            transport.write(b"421 4.3.2 Service shutting down\r\n")
            transport.close()

    @property
    def tls_active(self) -> bool:
        # implicit TLS (RFC 8314 §3) or STARTTLS done (RFC 3207)
        return self.implicit_tls or self._tls_protocol is not None

    async def push(self, status: Any) -> None:
        text = status if isinstance(status, str) else status.decode("ascii", "replace")
        if isinstance(status, str) and not self._in_ehlo:
            session = self.session
            if isinstance(session, MssSession) and session.extended_smtp:
                status = text = with_enhanced_code(text)
        if text[:1] == "5" and text[:3] not in ("554", "552", "550", "553", "535"):
            # syntax and sequence errors: close sessions that keep sending garbage
            session = self.session
            if isinstance(session, MssSession):
                session.errors += 1
                if session.errors > self.max_errors:
                    await self._reply("421 4.7.0 Too many errors, closing connection")
                    if self.transport is not None:
                        self.transport.close()
                    return
        await self._reply(status)

    async def _reply(self, status: str | bytes) -> None:
        """aiosmtpd's push without its write and drain per line: the reply is held (with
        the others of its group) until the session waits for input, a close or STARTTLS
        follows it, or the held replies pass _REPLY_HOLD; then, as aiosmtpd did after every
        line, it waits while the transport is over its high-water mark (a client that does
        not read its replies is not read either)."""
        line = (status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
                if isinstance(status, str) else status) + b"\r\n"
        self._replies.append(line)
        self._held_bytes += len(line)
        if line[:3] in _FLUSH_AT \
                or self._held_bytes > _REPLY_HOLD \
                or self._paused:  # type: ignore[attr-defined]  # FlowControlMixin's
            self.flush_replies()
            await self._writer.drain()

    def flush_replies(self) -> None:
        """Write the held replies, in order, in one write (one TLS record)."""
        if not self._replies:
            return
        data = b"".join(self._replies)
        self._replies.clear()
        self._held_bytes = 0
        writer = getattr(self, "_writer", None)
        if writer is not None and not writer.transport.is_closing():
            writer.write(data)

    async def handle_exception(self, error: Exception) -> str:
        """A bug in a command handler: log it with the session id, close this connection
        (never the server), reveal nothing on the wire."""
        session = self.session
        if self.transport is not None:
            self.loop.call_soon(self.transport.close)
        if unavailable(error):  # the database is away (RCPT and DATA answer 451 alone)
            log.warning("session closed: database unavailable",
                        session=getattr(session, "id", None))
            return "421 4.3.0 Database unavailable, try again later"
        log.error("session error", session=getattr(session, "id", None),
                  error=repr(error), exc_info=error)
        return "421 4.3.0 Internal error, closing connection"

    # ------------------------------------------------------------------ EHLO / AUTH
    async def smtp_EHLO(self, hostname: str) -> None:
        if not hostname:
            await self.push("501 5.5.4 Syntax: EHLO hostname")
            return
        self.command_size_limits.clear()
        self.command_size_limits["AUTH"] = AUTH_LINE_LIMIT - 2
        self._in_ehlo = True  # RFC 2034 §3: the EHLO reply carries no enhanced code
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_ehlo = False

    async def smtp_AUTH(self, arg: str) -> None:
        if not self.offer_auth:
            await self.push("502 5.5.1 AUTH not available on this port")
            return
        await super().smtp_AUTH(arg)
        self._promote()

    async def smtp_MAIL(self, arg: str | None) -> None:
        envelope = self.envelope
        taken = await self._dsn_params(arg, "FROM:", dsn.parse_mail_params)
        if taken is None:
            return
        arg, params = taken
        if isinstance(params, dsn.MailParams) and isinstance(envelope, MssEnvelope) \
                and not envelope.mail_from:  # not a nested MAIL (503)
            envelope.dsn_mail = params
        await super().smtp_MAIL(arg)
        self._promote()  # the client certificate is verified at MAIL FROM (MX, relay)

    async def smtp_RCPT(self, arg: str | None) -> None:
        envelope = self.envelope
        taken = await self._dsn_params(arg, "TO:", dsn.parse_rcpt_params)
        if taken is None:
            return
        arg, params = taken
        if isinstance(envelope, MssEnvelope):  # the handler keeps it at 250
            envelope.pending_rcpt = params if isinstance(params, dsn.RcptParams) \
                else dsn.RcptParams()
        await super().smtp_RCPT(arg)

    async def _dsn_params(self, arg: str | None, keyword: str,
                          parse: Callable[[list[str]], tuple[Any, list[str]]]
                          ) -> tuple[str | None, Any] | None:
        """RFC 3461 §4: take the DSN parameters (RET, ENVID on MAIL; NOTIFY, ORCPT on
        RCPT) out of the command's argument, as given (aiosmtpd upper-cases parameters,
        which would change an ENVID or ORCPT), before aiosmtpd reads the rest. (the
        argument left, the parsed parameters or None) or None when refused (``501
        5.5.4``, replied here)."""
        session = self.session
        if arg is None or not isinstance(session, MssSession) or not session.extended_smtp \
                or (self._auth_required and not session.authenticated):
            return arg, None  # aiosmtpd answers (no EHLO: 501; no AUTH: 530)
        stripped = self._strip_command_keyword(keyword, arg)
        if stripped is None or _BARE_PATH.match(stripped):  # no parameters: aiosmtpd's
            return arg, None
        address, params = self._getaddr(stripped)
        if address is None or not params or not stripped.endswith(params):
            return arg, None
        try:
            parsed, rest = parse(params.split())
        except dsn.DsnError as exc:
            await self.push(f"501 5.5.4 Invalid DSN parameter: {exc}")
            return None
        head = stripped[:len(stripped) - len(params)].rstrip()
        return " ".join([keyword + head, *rest]), parsed

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        # RFC 4616 §2: [authzid] NUL authcid NUL passwd
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = b64decode(args[1].encode(), validate=True)
            except ValueError:
                await self.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await self.push("501 5.5.2 Cannot split PLAIN credentials")
            return AuthResult(success=False, handled=True)
        authzid, login, password = parts
        if authzid and authzid != login:
            await self.push("535 5.7.8 Authentication credentials invalid")
            self.hooks.on_auth_failure(self, self.mss_session(), "PLAIN", login,
                                               "authorization identity differs from login")
            return AuthResult(success=False, handled=True)
        return await self._verify("PLAIN", login, password)

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await self.challenge_auth(self.AuthLoginUsernameChallenge)
            if not isinstance(login, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                login = b64decode(args[1].encode(), validate=True)
            except ValueError:
                await self.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)
        return await self._verify("LOGIN", login, password)

    # ------------------------------------------------------------------ SASL: tokens, cert
    async def challenge_auth(self, challenge: str | bytes, encode_to_b64: bool = True,
                             log_client_response: bool = False) -> bytes | Any:
        """aiosmtpd's, with the response line bounded (RFC 4954 §4: 12288 octets; longer:
        ``500 5.5.6``); the client's response is never logged."""
        raw = challenge.encode() if isinstance(challenge, str) else challenge
        await self.push(b"334 " + (b64encode(raw) if encode_to_b64 else raw))
        line = await self._auth_line()
        if line is None:
            return MISSING
        blob = line.strip()
        if blob == b"*":  # RFC 4954 §4: the client cancelled
            await self.push("501 5.7.0 Authentication cancelled")
            return MISSING
        try:
            return b64decode(blob, validate=True)
        except ValueError:
            await self.push("501 5.5.2 Cannot decode base64")
            return MISSING

    async def _auth_line(self) -> bytes | None:
        """One response line of an AUTH exchange; None when the connection is gone or the
        line was too long (then answered ``500 5.5.6``, its bytes dropped)."""
        reader = self._reader
        try:
            line: bytes = await reader.readuntil(b"\n")
            return line
        except asyncio.LimitOverrunError as error:
            try:
                await reader.read(error.consumed)
                while True:
                    try:
                        await reader.readuntil(b"\n")
                        break
                    except asyncio.LimitOverrunError as more:
                        await reader.read(more.consumed)
            except (asyncio.IncompleteReadError, ConnectionError):
                return None
            await self.push("500 5.5.6 Authentication Exchange line is too long")
            return None
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def _initial_response(self, args: list[str]) -> bytes | None:
        """RFC 4954 §4: the initial response ("=": empty), else the client's answer to an
        empty challenge; None when refused (replied) or cancelled."""
        if len(args) == 1:
            blob = await self.challenge_auth("")
            return blob if isinstance(blob, bytes) else None
        if args[1] == "=":
            return b""
        try:
            return b64decode(args[1].encode(), validate=True)
        except ValueError:
            await self.push("501 5.5.2 Cannot decode base64")
            return None

    async def auth_OAUTHBEARER(self, _: Any, args: list[str]) -> AuthResult:
        return await self._bearer("OAUTHBEARER", args, sasl.parse_oauthbearer)

    async def auth_XOAUTH2(self, _: Any, args: list[str]) -> AuthResult:
        return await self._bearer("XOAUTH2", args, sasl.parse_xoauth2)

    async def _bearer(self, mechanism: str, args: list[str],
                      parse: Callable[[bytes], BearerMessage]) -> AuthResult:
        blob = await self._initial_response(args)
        if blob is None:
            return AuthResult(success=False, handled=True)
        try:
            message = parse(blob)
        except sasl.SaslError as exc:
            await self.push(f"501 5.5.2 Invalid {mechanism} message")
            self.hooks.on_auth_failure(self, self.mss_session(), mechanism, b"",
                                       f"malformed {mechanism} message: {exc}")
            return AuthResult(success=False, handled=True)
        return await self._sasl_result(mechanism, self.hooks.authenticate_bearer(
            self, self.mss_session(), mechanism, message))

    async def auth_EXTERNAL(self, _: Any, args: list[str]) -> AuthResult:
        # RFC 4422 appendix A: the message is the authorization identity (may be empty)
        blob = await self._initial_response(args)
        if blob is None:
            return AuthResult(success=False, handled=True)
        try:
            authzid = sasl.parse_external(blob)
        except sasl.SaslError as exc:
            await self.push("501 5.5.2 Invalid EXTERNAL message")
            self.hooks.on_auth_failure(self, self.mss_session(), "EXTERNAL", b"",
                                       f"malformed EXTERNAL message: {exc}")
            return AuthResult(success=False, handled=True)
        return await self._sasl_result("EXTERNAL", self.hooks.authenticate_certificate(
            self, self.mss_session(), authzid))

    async def _sasl_result(self, mechanism: str,
                           verdict: Coroutine[Any, Any, AuthOutcome]) -> AuthResult:
        """The reply to a token or certificate login: 235 (committed), 454 4.7.0 when
        temporary or throttled (RFC 4954 §6), else 535 5.7.8, a refused token first
        getting its error challenge (RFC 7628 §3.2.2) which the client answers %x01."""
        try:
            outcome = await verdict
        except DBAPIError as exc:
            return await self._database_away(exc)
        if outcome.mailbox is not None:
            return AuthResult(success=True,
                              auth_data=LoginPassword(outcome.mailbox.address.encode(), b""))
        if outcome.throttled:
            await self.push("454 4.7.0 Too many failed authentications, try again later")
            return AuthResult(success=False, handled=True)
        if outcome.temporary:
            await self.push("454 4.7.0 Temporary authentication failure, try again later")
            return AuthResult(success=False, handled=True)
        if mechanism in ("OAUTHBEARER", "XOAUTH2"):
            await self.push(b"334 " + b64encode(self.hooks.bearer_error(outcome)))
            if await self._auth_line() is None:  # any answer ends it (%x01 expected)
                return AuthResult(success=False, handled=True)
        await self.push("535 5.7.8 Authentication credentials invalid")
        return AuthResult(success=False, handled=True)

    async def _database_away(self, exc: DBAPIError) -> AuthResult:
        """AUTH while the database is away: RFC 4954 §6 454 4.7.0, a temporary failure (not
        counted against the throttle); any other database error propagates."""
        if not unavailable(exc):
            raise exc
        log.warning("auth deferred: database unavailable", session=self.mss_session().id)
        await self.push("454 4.7.0 Temporary authentication failure, try again later")
        return AuthResult(success=False, handled=True)

    async def _verify(self, mechanism: str, login: bytes, password: bytes) -> AuthResult:
        try:
            if await self.hooks.login_blocked(self.mss_session(), mechanism, login):
                # RFC 4954 §6: 454 4.7.0 temporary authentication failure (no password
                # check)
                await self.push("454 4.7.0 Too many failed authentications, try again later")
                return AuthResult(success=False, handled=True)
            ok: bool = await self.hooks.authenticate(
                self, self.mss_session(), mechanism, LoginPassword(login, password))
        except DBAPIError as exc:
            return await self._database_away(exc)
        if ok:
            return AuthResult(success=True, auth_data=LoginPassword(login, b""))
        return AuthResult(success=False, handled=False)

    # ------------------------------------------------------------------ DATA
    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert isinstance(envelope, MssEnvelope)
        if self.require_starttls and not self.tls_active:
            await self.push("530 5.7.0 Must issue a STARTTLS command first")
            return
        if not envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self.busy = True
        try:
            await self._data_transaction(envelope)
        finally:
            self.busy = False
            if self.ending:
                self._close_ended()

    def operator_ended(self) -> None:
        """``mss sessions end`` named this session (on its loop): ``421 4.7.0`` and close
        (RFC 5321 §3.8), at once, or after the reply of a DATA in progress (a message
        being committed is acknowledged first)."""
        if self.busy:
            self.ending = True
            return
        self._close_ended()

    def _close_ended(self) -> None:
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            self.flush_replies()
            transport.write(b"421 4.7.0 Session ended by the administrator\r\n")
            transport.close()
            # a TLS close waits for the client's close_notify, which it may never send
            self.loop.call_later(CLOSE_GRACE, transport.abort)

    async def _data_transaction(self, envelope: MssEnvelope) -> None:
        try:
            result = await self._read_data()
            if result is None:  # connection lost: nothing stored, nothing acknowledged
                return
            if isinstance(result, str):
                self.hooks.on_data_refused(self, self.mss_session(), envelope, result)
                self.envelope = self._create_envelope()
                await self.push(result)
                return
            envelope.original_content = result
            envelope.content = result
            status = await self.hooks.handle_DATA(self, self.mss_session(), envelope)
        finally:
            self._release()  # the message is stored (or refused): its bytes go back
        self.envelope = self._create_envelope()
        await self.push(status)

    def _hold(self, size: int) -> bool:
        if self.budget is not None and not self.budget.take(size):
            return False
        self.held += size
        return True

    def _release(self) -> None:
        if self.budget is not None and self.held:
            self.budget.give(self.held)
        self.held = 0

    async def _read_data(self) -> bytes | str | None:
        """Read up to CRLF.CRLF; returns the unstuffed message, a refusal reply, or None.

        Chunks are appended to one buffer that becomes the message itself (no copy at the
        end), each taken from the process's memory budget first; past it (or past the size
        limit) the rest is read and dropped."""
        reader = self._reader
        limit = self.data_size_limit or 0
        out = io.BytesIO()
        # the last bytes seen, where an end marker may start; the CRLF that ended the DATA
        # line starts the end marker of an empty message
        tail = b"\r\n"
        saved_limit = reader._limit  # type: ignore[attr-defined]
        reader._limit = _DATA_CHUNK  # type: ignore[attr-defined]  # no pause per line
        self._reset_timeout(self.data_timeout)
        try:
            while True:
                chunk = await reader.read(_DATA_CHUNK)
                if not chunk:
                    return None
                refusal = self._refusal(out.tell() + len(chunk), limit)
                if refusal is not None:  # keep a window that may hold the end marker
                    reader._buffer[0:0] = tail + chunk  # type: ignore[attr-defined]
                    out = io.BytesIO()
                    await self._discard_until_end()
                    return refusal
                window = tail + chunk
                pos = window.find(END_OF_DATA)
                if pos >= 0:
                    end = pos + len(END_OF_DATA) - len(tail)  # in chunk
                    reader._buffer[0:0] = chunk[end:]  # type: ignore[attr-defined]
                    out.write(chunk[:end])
                    out.truncate(out.tell() - 3)  # drop ".CRLF", keep the final CRLF
                    break
                out.write(chunk)
                tail = window[-4:]
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        finally:
            reader._limit = saved_limit  # type: ignore[attr-defined]
            self._reset_timeout()
        return self._unstuff(out.getvalue())  # the BytesIO's own bytes (no copy)

    def _refusal(self, size: int, limit: int) -> str | None:
        """The reply refusing DATA of *size* bytes so far, or None (its bytes are held)."""
        if limit and size > limit + 8:  # + the end marker
            return f"552 5.3.4 Message size exceeds fixed limit of {limit} bytes"
        if not self._hold(size - self.held):
            log.warning("memory budget exceeded", session=getattr(self.session, "id", None),
                        held=self.held, budget=self.budget.limit if self.budget else 0)
            return "452 4.3.1 Insufficient system storage, try again later"
        return None

    def _unstuff(self, body: bytes) -> bytes | str:
        limit = self.data_size_limit or 0
        if limit and len(body) > limit:
            return f"552 5.3.4 Message size exceeds fixed limit of {limit} bytes"
        # RFC 5321 §4.5.2: remove the first dot of every line that starts with one
        if body.startswith(b"."):
            body = body[1:]
        if b"\r\n." in body:
            body = body.replace(b"\r\n.", b"\r\n")
        # RFC 5321 §4.5.3.1.6: measured unstuffed (the transparency dot does not count)
        if longest_line(body) > self.text_line_limit:
            return "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)"
        if has_bare_cr_or_lf(body):
            return "554 5.6.0 Message refused: bare CR or LF (RFC 5321 2.3.8)"
        return body

    async def _discard_until_end(self) -> None:
        """Past the size limit: read and drop chunks until CRLF.CRLF, keep what follows
        (within the DATA phase's one smtp.data_timeout, not one per chunk)."""
        reader = self._reader
        tail = b""
        while True:
            chunk = await reader.read(_DATA_CHUNK)
            if not chunk:
                raise asyncio.IncompleteReadError(b"", None)
            window = tail + chunk
            pos = window.find(END_OF_DATA)
            if pos >= 0:
                rest = window[pos + len(END_OF_DATA):]
                reader._buffer[0:0] = rest  # type: ignore[attr-defined]
                return
            tail = window[-4:]

    def _create_envelope(self) -> MssEnvelope:
        return MssEnvelope()

    def connection_lost(self, error: Exception | None) -> None:
        if self.refused or self.session is None:
            # session None: implicit TLS lost during the handshake; asyncio's start_tls
            # reports it to this protocol though connection_made never ran (RFC 8314 §3.3)
            return
        if self._preauth_deadline is not None:
            self._preauth_deadline.cancel()
            self._preauth_deadline = None
        self._release()
        if self.admission is not None:
            self.admission.release()
        session = self.mss_session()
        super().connection_lost(error)
        self.hooks.on_disconnect(self, session)
