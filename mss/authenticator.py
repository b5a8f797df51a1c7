"""Who a login is: one :class:`Authenticator` per serving process, for SMTP AUTH and IMAP.

Three kinds of credential, each giving an :class:`AuthOutcome` (the mailbox or None, the
method, the audit actor, the private reason and detail, temporary or not):

- **passwords** and app passwords stay with the protocols (``mss.login.check_login``, called
  by proxy/smtp/policies.py and proxy/imap/session_commands.py with the listener's methods),
  which share this object's throttles;
- **bearer tokens** (OAUTHBEARER, XOAUTH2; RFC 7628): the process's ``TokenVerifier``
  (``[[auth.oidc]]``), then the mailboxes of the token's national id
  (``mss.mailstore.identities``): the SASL authzid picks one, absent it must be the only one;
- **client certificates** (EXTERNAL; RFC 4422 appendix A): the chain presented in the TLS
  handshake verified by the runtime's :class:`~trustspace.verifier.PeerVerifier` (anchors,
  validity, CRL: as peers are), then the APP mailbox bound to its subject DN.

Every kind is throttled by the protocol's :class:`~mss.throttle.Throttle` (``smtp.auth_*``,
``imap.login_*``) under the identity it names: the login, the token's subject, the DN, and
the client address. The audit detail names the method, the issuer, the subject, the ``jti``
or the token's last characters, the certificate's DN and fingerprint: never a token or a
password. Layer: runtime (it joins the mail store, the trust space and the identity
service); the protocols call it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import structlog
from cryptography import x509
from sqlalchemy import Engine

from mss.config import ListenerConfig
from mss.identity.tokens import TokenRejected, TokenUnavailable, TokenVerifier
from mss.login import login_address
from mss.mailstore import identities
from mss.mailstore.identities import rpps_of
from mss.mailstore.mailboxes import Mailbox
from mss.sasl import BearerMessage, oauthbearer_error
from mss.throttle import Throttle
from trustspace.chain import PkiCheck
from trustspace.dn import DNError, canonical_name, dn_key
from trustspace.verifier import PeerVerifier

log = structlog.get_logger("mss.auth")

Service = Literal["smtp", "imap"]
PASSWORD_METHODS = frozenset({"password", "app-password"})
TAIL = 32  # characters of an opaque token the audit may keep
TOKEN_MECHANISMS = MappingProxyType({"OAUTHBEARER": "oauthbearer",  # SASL -> auth method
                                     "XOAUTH2": "xoauth2"})


@dataclass(frozen=True)
class AuthOutcome:
    """The verdict on one login. ``mailbox`` set: authenticated as it."""

    method: str  # password | app-password | oauthbearer | xoauth2 | external
    actor: str  # the audit actor: the mailbox, else the login / token subject / DN
    reason: str  # private, for the audit record
    mailbox: Mailbox | None = None
    detail: dict[str, str] = field(default_factory=dict)  # audit detail (never a secret)
    temporary: bool = False  # issuer or CRL unavailable, database away: 454 / NO [UNAVAILABLE]
    throttled: bool = False  # refused without a check: locked after failures
    status: str = "invalid_token"  # OAUTHBEARER error status (RFC 6750 §3.1) on failure
    # a token login that reached a shared mailbox through a grant: the person's own PER
    # mailbox holding it (the transmitter of what the session sends: Sender:)
    via: Mailbox | None = None

    @property
    def ok(self) -> bool:
        return self.mailbox is not None


def offered(listener: ListenerConfig, tokens: bool, kind: str) -> tuple[str, ...]:
    """The SASL mechanisms a listener offers (after TLS): PLAIN and LOGIN (SMTP) for
    passwords or app passwords, OAUTHBEARER and XOAUTH2 when an issuer is configured,
    EXTERNAL. *kind*: "submission", "imap" or "relay" (relay: PLAIN and LOGIN only, the
    relay's own password)."""
    if kind == "relay":
        return ("LOGIN", "PLAIN")
    methods = set(listener.auth)
    out: list[str] = []
    if methods & PASSWORD_METHODS:
        out += ["PLAIN"] if kind == "imap" else ["LOGIN", "PLAIN"]
    if tokens:
        out += [m for m, method in TOKEN_MECHANISMS.items() if method in methods]
    if "external" in methods:
        out.append("EXTERNAL")
    return tuple(out)


def certificate_dn(chain: list[bytes]) -> tuple[str, str] | None:
    """(RFC 4514 text, canonical key) of a presented chain's leaf subject; None when it has
    none or cannot be parsed."""
    if not chain:
        return None
    try:
        subject = x509.load_der_x509_certificate(chain[0]).subject
        return subject.rfc4514_string(), dn_key(canonical_name(subject))
    except (ValueError, DNError):
        return None


class Authenticator:
    """The process's login checks (built by :class:`mss.runtime.Runtime`)."""

    def __init__(self, reader: Engine, verifier: PeerVerifier,
                 throttles: dict[str, Throttle], tokens: TokenVerifier | None = None) -> None:
        self.reader = reader
        self.verifier = verifier
        self.throttles = throttles  # "smtp" (submission and relay), "imap"
        self.tokens = tokens

    @property
    def has_tokens(self) -> bool:
        return self.tokens is not None

    def throttle(self, service: Service) -> Throttle:
        return self.throttles[service]

    async def _thread(self, work: Callable[[], Mailbox | None]) -> Mailbox | None:
        return await asyncio.get_running_loop().run_in_executor(None, work)

    # ------------------------------------------------------------------ client certificates
    async def certificate(self, service: Service, chain: list[bytes], authzid: str | None,
                          remote: str) -> AuthOutcome:
        """SASL EXTERNAL: the TLS client certificate, verified as peers' are, bound to an
        APP mailbox; *authzid*, when given, must be that mailbox."""
        detail = {"mechanism": "EXTERNAL", "method": "external"}
        subject = certificate_dn(chain)
        text, key = subject or (remote, "")
        name = "cert:" + hashlib.sha256(key.encode()).hexdigest()[:32] if subject \
            else "cert:none"
        throttle = self.throttle(service)
        if await throttle.check(name, remote):
            return AuthOutcome("external", text, "throttled", detail=detail, throttled=True)
        if subject is None:
            return self._count(service, name, remote, AuthOutcome(
                "external", remote, "no_certificate: no client certificate presented"
                if not chain else "untrusted_chain: unparsable certificate", detail=detail))
        detail["cert_dn"] = text
        result = await self.verifier.verify(chain)
        if result.fingerprint:
            detail["sha256"] = result.fingerprint
        detail["pki"] = result.check.value
        if result.check is PkiCheck.CRL_UNAVAILABLE and not self.verifier.fail_open:
            return AuthOutcome("external", text, result.reason, detail=detail, temporary=True)
        if not result.ok and result.check is not PkiCheck.CRL_UNAVAILABLE:
            return self._count(service, name, remote, AuthOutcome(
                "external", text, result.reason, detail=detail))

        def lookup() -> Mailbox | None:
            with self.reader.connect() as conn:
                return identities.mailbox_of_certificate(conn, key)

        mailbox = await self._thread(lookup)
        reason = None
        if mailbox is None:
            reason = f"dn_not_bound: certificate DN {text} is bound to no mailbox"
        elif not mailbox.usable:
            reason = f"mailbox {mailbox.state}: {mailbox.address}"
        elif authzid and _address(authzid) != mailbox.address:
            reason = (f"authzid {authzid[:320]!r} is not {mailbox.address}, the mailbox "
                      "bound to the certificate")
        if reason is not None or mailbox is None:
            return self._count(service, name, remote, AuthOutcome(
                "external", text, reason or "", detail=detail))
        throttle.succeeded(name, remote)
        if result.check is PkiCheck.CRL_UNAVAILABLE:  # fail-open: accepted, on record
            detail["fail_open"] = "crl_unavailable"
        return AuthOutcome("external", mailbox.address, "client certificate bound to the "
                           "mailbox", mailbox, detail=detail)

    def _count(self, service: Service, name: str, remote: str,
               outcome: AuthOutcome) -> AuthOutcome:
        """A failed login: counted against the throttle (the reason says when it locked)."""
        if self.throttle(service).failed(name, remote):
            return AuthOutcome(outcome.method, outcome.actor, outcome.reason + "; now throttled",
                               detail=outcome.detail, status=outcome.status)
        return outcome

    # ------------------------------------------------------------------ bearer tokens
    async def bearer(self, service: Service, mechanism: str, message: BearerMessage,
                     remote: str) -> AuthOutcome:
        """OAUTHBEARER / XOAUTH2: the token verified (signature, iss, aud, exp/nbf, acr, or
        introspection), then the mailbox of its national id the authzid names (absent:
        the person's only one)."""
        method = TOKEN_MECHANISMS[mechanism]
        detail = {"mechanism": mechanism, "method": method}
        tail = message.token[-TAIL:]
        name = _token_name(message.token)
        throttle = self.throttle(service)
        if await throttle.check(name, remote):
            return AuthOutcome(method, name, "throttled", detail=detail, throttled=True)
        if self.tokens is None:  # not offered without issuers: a client sending it anyway
            return self._count(service, name, remote, AuthOutcome(
                method, remote, "no [[auth.oidc]] issuer configured", detail=detail))
        try:
            identity = await self.tokens.verify(message.token)
        except TokenUnavailable as exc:  # the issuer unreachable, nothing usable cached
            if exc.issuer:
                detail["issuer"] = exc.issuer
            return AuthOutcome(method, name, f"token_unavailable: {exc.reason}",
                               detail=detail, temporary=True)
        except TokenRejected as exc:
            if exc.issuer:
                detail["issuer"] = exc.issuer
            if "." not in message.token:  # opaque: its tail identifies it in the audit
                detail["token_tail"] = tail
            return self._count(service, name, remote, AuthOutcome(
                method, name, f"token_rejected: {exc.reason}", detail=detail))
        detail.update(identity.audit_detail())
        actor = f"{identity.issuer_name}:{identity.subject}"[:320]
        if identity.national_id is None:
            return self._count(service, name, remote, AuthOutcome(
                method, actor, "token_no_national_id: the token carries no national id "
                "claim", detail=detail))
        detail["national_id"] = identity.national_id
        national_id = identity.national_id

        def mailboxes() -> tuple[Mailbox | None, str, Mailbox | None]:
            with self.reader.connect() as conn:
                found = identities.mailboxes_of_national_id(conn, national_id)
                mailbox, reason = _pick(found, message.authzid, national_id)
                via = None
                if mailbox is not None and not (mailbox.type == "PER"
                                                and mailbox.rpps == rpps_of(national_id)):
                    via = identities.grantee_of(conn, national_id, mailbox.id)
                return mailbox, reason, via

        mailbox, reason, via = await asyncio.get_running_loop().run_in_executor(None,
                                                                                 mailboxes)
        if mailbox is None:
            return self._count(service, name, remote, AuthOutcome(
                method, actor, reason, detail=detail))
        throttle.succeeded(name, remote)
        if via is not None:  # both identities on record: the shared mailbox and the person's
            detail["grantee"] = via.address
        return AuthOutcome(method, mailbox.address, reason, mailbox, detail=detail, via=via)

    def bearer_error(self, outcome: AuthOutcome) -> bytes:
        """RFC 7628 §3.2.2: the error challenge of a refused token (JSON): the discovery
        URL of the token's issuer (else the first configured) for the client to get a
        new one."""
        url = None
        if self.tokens is not None:
            issuer = outcome.detail.get("issuer")
            try:
                url = self.tokens.discovery_url(issuer)
            except TokenRejected:
                url = self.tokens.discovery_url(None) if self.tokens.config.oidc else None
        return oauthbearer_error(outcome.status, url, "openid")



def _token_name(token: str) -> str:
    """The throttle key of a token, the same before and after it is verified (one check
    per login): a JWT's issuer and subject as it claims them (unverified: a key, never a
    decision; a verified token's are its own), an opaque token's digest."""
    parts = token.split(".")
    if len(parts) == 3:
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
            if isinstance(claims, dict) and isinstance(claims.get("sub"), str):
                return f"sub:?{str(claims.get('iss'))[:100]}:{claims['sub'][:100]}"
        except (ValueError, UnicodeDecodeError):
            pass
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def _pick(found: list[Mailbox], authzid: str | None, national_id: str
          ) -> tuple[Mailbox | None, str]:
    """The mailbox a token login takes among the person's: the authzid's, or the only one."""
    if not found:
        return None, f"no_mailbox: national id {national_id} owns no mailbox here"
    if authzid:
        wanted = _address(authzid)
        for mailbox in found:
            if mailbox.address == wanted:
                return mailbox, "token of the mailbox's owner or grantee"
        return None, (f"authzid_not_allowed: {authzid[:320]!r} is not a mailbox of national "
                      f"id {national_id}")
    if len(found) > 1:
        return None, (f"authzid_required: national id {national_id} has {len(found)} "
                      "mailboxes and the client named none")
    return found[0], "token of the mailbox's owner"


def _address(text: str) -> str:
    """An authzid as a mailbox address (mss.login's normalisation), or the text itself."""
    return login_address(text) or text
