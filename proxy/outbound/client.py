"""One SMTP transaction to one peer host with aiosmtplib, over mutual TLS.

RFC 3207: STARTTLS is required; a peer that does not offer it, or whose handshake fails, is
a temporary failure and nothing is ever sent in plaintext. The peer's certificate is
verified against our trust anchors (tls.ca_file) in the handshake, then by the caller's
certificate check (trustspace.chain with [pki] anchors and CRLs: a revoked peer gets
nothing) and, for a trust-space peer, its subject DN must be one the whitelist lists for
the recipient domain (docs/trust-space.md "Outbound delivery"). Our own certificate is
presented as client certificate (the peer MX requires it).

A session that ended its transaction cleanly is kept for the next message to the same host
(:class:`SessionPool`, RFC 5321 §4.1.4: a new MAIL FROM after the end of DATA), for
``delivery.session_idle`` seconds and ``delivery.session_reuse`` messages at most; the peer
checks run again, on the certificate it presented, for every message. A kept session the
peer has closed meanwhile is replaced by a new one before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiosmtplib
from cryptography import x509

from mss.config import TlsConfig
from mss.lifecycle import STOP_FLOOR, remaining
from proxy.outbound.result import Delivered, DeliveryFailure
from trustspace.dn import CanonicalDN, canonical_name
from trustspace.tlshook import presented_chain


def client_context(tls: TlsConfig) -> ssl.SSLContext:
    """TLS 1.2+, chain verified against the anchors, our certificate offered. Host names are
    not checked here: a trust-space peer is identified by its whitelisted DN instead."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return ctx


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    rcpts: tuple[str, ...]  # one message's recipients in one domain: one transaction
    data: bytes
    # RFC 3461 parameters, sent only to a peer whose EHLO offers DSN: MAIL FROM's (RET,
    # ENVID) and each recipient's (NOTIFY, ORCPT)
    mail_options: tuple[str, ...] = ()
    rcpt_options: dict[str, tuple[str, ...]] = field(default_factory=dict)


Results = dict[str, Delivered | DeliveryFailure]  # per recipient


DnCheck = Callable[[CanonicalDN, str], str | None]  # (dn, subject text) -> refusal or None
# the chain the peer presented (DER, leaf first) -> refusal or None
CertificateCheck = Callable[[list[bytes]], Awaitable[str | None]]


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {' '.join(exc.message.split())}"[:500]


def _failure(where: str, exc: aiosmtplib.SMTPResponseException, peer: str) -> DeliveryFailure:
    reply = _reply(exc)
    # RFC 5321 §4.2.1: 5yz permanent, 4yz transient
    return DeliveryFailure(f"{peer} answered {where} with {reply}",
                           permanent=500 <= exc.code < 600, reply=reply, host=peer)


@dataclass
class Session:
    """An open SMTP session to one host, after STARTTLS and the second EHLO."""

    smtp: aiosmtplib.SMTP
    peer: str  # "name[address]:port"
    chain: list[bytes]  # the certificates the peer presented, leaf first (DER)
    subject: x509.Name
    dn: CanonicalDN  # the subject parsed per RFC 4514, for the whitelist DN check
    sent: int = 0  # transactions done on it
    idle_since: float = field(default_factory=time.monotonic)
    subject_text: str = field(init=False)  # the subject as RFC 4514 text (reasons, audit)

    def __post_init__(self) -> None:
        self.subject_text = self.subject.rfc4514_string()  # once, not per message


QUIT_TIMEOUT = 5.0  # seconds a QUIT sent after the replies are in may take


class SessionPool:
    """Idle sessions by (address, port, server name); bounded per host and in time. It
    also owns the sessions being quit in the background (their replies are in: the QUIT
    does not hold the delivery up), awaited or cancelled at :meth:`close`."""

    def __init__(self, idle: float, reuse: int, per_host: int) -> None:
        self.idle = idle
        self.reuse = reuse  # transactions per session; 1: no reuse
        self.per_host = per_host
        self._idle: dict[tuple[str, int, str], list[Session]] = {}
        self.closing: set[asyncio.Task[None]] = set()  # QUITs in flight

    def take(self, key: tuple[str, int, str]) -> Session | None:
        sessions = self._idle.get(key, [])
        while sessions:
            session = sessions.pop()
            if time.monotonic() - session.idle_since < self.idle \
                    and session.smtp.is_connected:
                return session
            session.smtp.close()
        return None

    def give(self, key: tuple[str, int, str], session: Session) -> None:
        sessions = self._idle.setdefault(key, [])
        if session.sent >= self.reuse or self.idle <= 0 or len(sessions) >= self.per_host:
            self.quit_later(session)
            return
        session.idle_since = time.monotonic()
        sessions.append(session)

    def reap(self) -> None:
        """Close the sessions idle for longer than allowed (RFC 5321 §4.5.3.2.7: the
        server may close an idle session after 5 minutes; we do it well before)."""
        now = time.monotonic()
        for key, sessions in list(self._idle.items()):
            keep = [s for s in sessions if now - s.idle_since < self.idle]
            for session in sessions:
                if session not in keep:
                    self.quit_later(session)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    def quit_later(self, session: Session) -> None:
        """QUIT *session* in a task of the pool's (RFC 5321 §4.1.1.10), then close it."""
        async def quit_() -> None:
            try:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                    await asyncio.wait_for(session.smtp.quit(), QUIT_TIMEOUT)
            finally:  # cancelled at close too: the socket does not outlive the pool
                session.smtp.close()
        task = asyncio.get_running_loop().create_task(quit_())
        self.closing.add(task)  # keep a reference until done
        task.add_done_callback(self.closing.discard)

    async def close(self, deadline: float) -> None:
        """QUIT the idle sessions and wait for every QUIT in flight, until *deadline*
        (a time.monotonic() instant); those left are cancelled, their sockets closed."""
        sessions = [s for group in self._idle.values() for s in group]
        self._idle.clear()
        for session in sessions:
            self.quit_later(session)
        if self.closing:
            await asyncio.wait(set(self.closing), timeout=remaining(deadline))
        for task in list(self.closing):
            task.cancel()
        if self.closing:
            await asyncio.wait(set(self.closing), timeout=remaining(deadline, STOP_FLOOR))


async def _open(address: str, server_name: str, port: int, ctx: ssl.SSLContext,
                local_hostname: str, connect_timeout: float,
                command_timeout: float) -> Session:
    """Connect, EHLO, STARTTLS (required), EHLO again; the certificate the peer presented."""
    peer = f"{server_name}[{address}]:{port}"
    smtp = aiosmtplib.SMTP(hostname=address, port=port, local_hostname=local_hostname,
                           timeout=command_timeout, start_tls=False, use_tls=False,
                           tls_context=ctx)
    try:
        try:
            await smtp.connect(timeout=connect_timeout)
        except aiosmtplib.SMTPConnectResponseError as exc:
            raise DeliveryFailure(f"{peer} greeting {_reply(exc)}", permanent=False,
                                  reply=_reply(exc), host=peer) from None
        await smtp.ehlo()
        if not smtp.supports_extension("starttls"):
            raise DeliveryFailure(f"{peer} does not offer STARTTLS (RFC 3207); not sent "
                                  "in plaintext", permanent=False, host=peer)
        try:
            await smtp.starttls(server_hostname=server_name, tls_context=ctx)
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryFailure(f"{peer} refused STARTTLS: {_reply(exc)}", permanent=False,
                                  reply=_reply(exc), host=peer) from None
        ssl_object = smtp.get_transport_info("ssl_object")
        chain = presented_chain(ssl_object) if ssl_object else []
        if not chain:
            raise DeliveryFailure(f"{peer} presented no certificate", permanent=False,
                                  host=peer)
        subject = x509.load_der_x509_certificate(chain[0]).subject
        await smtp.ehlo()  # RFC 3207 §4.2: discard what was learnt before TLS
        return Session(smtp, peer, chain, subject, canonical_name(subject))
    except BaseException:
        smtp.close()
        raise


async def _check(session: Session, dn_check: DnCheck | None,
                 certificate_check: CertificateCheck | None) -> None:
    """The peer checks, before MAIL FROM, for every message (cached verdicts)."""
    if certificate_check is not None:
        refusal = await certificate_check(session.chain)
        if refusal:
            raise DeliveryFailure(f"{session.peer}: {refusal}", permanent=False,
                                  host=session.peer)
    if dn_check is not None:
        refusal = dn_check(session.dn, session.subject_text)
        if refusal:
            raise DeliveryFailure(f"{session.peer}: {refusal}", permanent=False,
                                  host=session.peer)


class _Stale(Exception):
    """A kept session was closed by the peer before MAIL FROM was answered."""


async def _transact(session: Session, envelope: Envelope, reused: bool) -> tuple[Results, bool]:
    """MAIL FROM, RCPT TO each, DATA; the results and whether the session is clean for the
    next transaction (RFC 5321 §4.1.4)."""
    smtp, peer = session.smtp, session.peer
    # RFC 3461 §5.2: the parameters go on only to a peer that offers DSN; to one that does
    # not, the delivery is "relayed" (the caller reports it when NOTIFY asks for SUCCESS)
    dsn = smtp.supports_extension("dsn")
    try:
        await smtp.mail(envelope.mail_from,
                        options=list(envelope.mail_options) if dsn else None)
    except aiosmtplib.SMTPResponseException as exc:
        if reused and exc.code == 421:  # RFC 5321 §3.8: the peer is closing the session
            raise _Stale() from None
        raise _failure("MAIL FROM", exc, peer) from None
    except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
        if reused:
            raise _Stale() from None
        raise
    session.sent += 1
    results: Results = {}
    accepted: list[str] = []
    for rcpt in envelope.rcpts:
        try:
            options = envelope.rcpt_options.get(rcpt, ()) if dsn else ()
            await smtp.rcpt(rcpt, options=list(options) or None)
            accepted.append(rcpt)
        except aiosmtplib.SMTPResponseException as exc:
            results[rcpt] = _failure("RCPT TO", exc, peer)  # this recipient only
    if not accepted:
        return results, False  # a MAIL FROM without DATA: not kept (no RSET dance)
    try:
        response = await smtp.data(envelope.data)
    except aiosmtplib.SMTPResponseException as exc:
        failure = _failure("DATA", exc, peer)
        results.update((rcpt, failure) for rcpt in accepted)
        return results, False
    reply = f"{response.code} {' '.join(response.message.split())}"[:500]
    dn = session.subject_text
    results.update((rcpt, Delivered(peer, reply, dn, dsn)) for rcpt in accepted)
    return results, True


async def send(address: str, server_name: str, port: int, ctx: ssl.SSLContext,
               local_hostname: str, envelope: Envelope, dn_check: DnCheck | None, *,
               certificate_check: CertificateCheck | None = None,
               pool: SessionPool,
               connect_timeout: float, command_timeout: float) -> Results:
    """Deliver *envelope* through one host in one transaction; returns each recipient's
    result (its RCPT refusal, or the reply to the end of DATA). A failure of the whole
    session (connection, TLS, certificate, DN, MAIL FROM) raises DeliveryFailure,
    permanent only on a 5yz reply."""
    key = (address, port, server_name)
    peer = f"{server_name}[{address}]:{port}"
    session = pool.take(key)
    clean = False
    try:
        for _ in range(2):  # a stale kept session: once more on a new one
            reused = session is not None
            if session is None:
                session = await _open(address, server_name, port, ctx, local_hostname,
                                      connect_timeout, command_timeout)
            await _check(session, dn_check, certificate_check)
            try:
                results, clean = await _transact(session, envelope, reused)
                return results
            except _Stale:
                session.smtp.close()
                session = None
        raise DeliveryFailure(f"{peer}: session closed before MAIL FROM", permanent=False,
                              host=peer)
    except DeliveryFailure:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryFailure(f"{peer}: certificate not trusted: {exc.verify_message}",
                              permanent=False, host=peer) from None
    except (aiosmtplib.SMTPException, ssl.SSLError, OSError, TimeoutError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else ""
        raise DeliveryFailure(f"{peer}: {type(exc).__name__} {text}".strip(),
                              permanent=False, host=peer) from None
    finally:
        if session is not None:
            if clean:
                pool.give(key, session)
            elif session.smtp.is_connected:
                pool.quit_later(session)  # the replies are in: what follows does not change them
            else:
                session.smtp.close()
