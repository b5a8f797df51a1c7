"""One SMTP transaction to one peer host with aiosmtplib, over mutual TLS.

RFC 3207: STARTTLS is required; a peer that does not offer it, or whose handshake fails, is
a temporary failure and nothing is ever sent in plaintext. The peer's certificate is
verified against our trust anchors (tls.ca_file) in the handshake, then by the caller's
certificate check (trustspace.chain with [pki] anchors and CRLs: a revoked peer gets
nothing) and, for a trust-space peer, its subject DN must be one the whitelist lists for
the recipient domain (DESIGN.md §2). Our own certificate is presented as client
certificate (the peer MX requires it).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiosmtplib
from cryptography import x509

from mss.config import TlsConfig
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


async def send(address: str, server_name: str, port: int, ctx: ssl.SSLContext,
               local_hostname: str, envelope: Envelope, dn_check: DnCheck | None, *,
               certificate_check: CertificateCheck | None = None,
               connect_timeout: float, command_timeout: float) -> Results:
    """Deliver *envelope* through one host in one transaction; returns each recipient's
    result (its RCPT refusal, or the reply to the end of DATA). A failure of the whole
    session (connection, TLS, DN, MAIL FROM) raises DeliveryFailure, permanent only on a
    5yz reply."""
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
        if certificate_check is not None:
            refusal = await certificate_check(chain)
            if refusal:
                raise DeliveryFailure(f"{peer}: {refusal}", permanent=False, host=peer)
        subject = x509.load_der_x509_certificate(chain[0]).subject
        if dn_check is not None:
            refusal = dn_check(canonical_name(subject), subject.rfc4514_string())
            if refusal:
                raise DeliveryFailure(f"{peer}: {refusal}", permanent=False, host=peer)
        await smtp.ehlo()  # RFC 3207 §4.2: discard what was learnt before TLS
        try:
            await smtp.mail(envelope.mail_from)
        except aiosmtplib.SMTPResponseException as exc:
            raise _failure("MAIL FROM", exc, peer) from None
        results: Results = {}
        accepted: list[str] = []
        for rcpt in envelope.rcpts:
            try:
                await smtp.rcpt(rcpt)
                accepted.append(rcpt)
            except aiosmtplib.SMTPResponseException as exc:
                results[rcpt] = _failure("RCPT TO", exc, peer)  # this recipient only
        if accepted:
            try:
                response = await smtp.data(envelope.data)
            except aiosmtplib.SMTPResponseException as exc:
                failure = _failure("DATA", exc, peer)
                results.update((rcpt, failure) for rcpt in accepted)
            else:
                reply = f"{response.code} {' '.join(response.message.split())}"[:500]
                results.update((rcpt, Delivered(peer, reply)) for rcpt in accepted)
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await smtp.quit()  # the replies are in: what follows does not change them
        return results
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
        smtp.close()
