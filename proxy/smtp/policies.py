"""What each SMTP listener kind checks: one small policy object per kind.

- **MX** (other operators): the peer's client certificate and the whitelist at MAIL FROM,
  only hosted mailboxes at RCPT, no AUTH, no author check;
- **submission** (professionals' clients): the authenticated login at AUTH, MAIL FROM and
  From:/Sender: addresses the login may send as, hosted or whitelisted recipients;
- **relay** (institutions' servers): the relay's name and password at AUTH, or its
  registered certificate DN at MAIL FROM, addresses of the relay's domains, recipients as
  on submission.

A policy answers each question with a value (a :class:`trustspace.policy.Decision`, an
:class:`AuthCheck`, a :class:`Refusal`); :mod:`proxy.smtp.handler` keeps what every
listener shares: replying, auditing, throttling, storing. ``docs/flow.md`` lists the
checks step by step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

from aiosmtpd.smtp import LoginPassword
from sqlalchemy import Engine

from audit.events import Event, Outcome
from mss import message as rfc5322
from mss.addresses import AddressError, normalize_address
from mss.login import LoginCheck, check_login, throttle_name
from mss.mailstore import grants
from mss.passwords import verify_password
from proxy.smtp.session import MssSession
from trustspace import policy
from trustspace.cache import LiveWhitelist
from trustspace.chain import ChainResult, PkiCheck
from trustspace.relays import Relay, get_relay, relay_by_dn
from trustspace.verifier import PeerVerifier
from trustspace.whitelist import Whitelist

Mode = Literal["mx", "submission", "relay"]


@dataclass(frozen=True)
class Identity:
    """Who an authenticated session sends as."""

    login: str  # the mailbox address, or relay:NAME
    may_send_as: frozenset[str] = frozenset()  # submission: the addresses it may use
    relay: Relay | None = None  # relay listener: the relay
    delegated: frozenset[str] = frozenset()  # shared mailboxes granted with the send right


@dataclass(frozen=True)
class AuthCheck:
    """The outcome of checking AUTH credentials: the audit record's actor, mailbox,
    private reason and detail, and the identity the session takes (None: refused)."""

    actor: str
    reason: str
    identity: Identity | None = None
    mailbox: str | None = None
    detail: dict[str, str] = field(default_factory=dict)  # besides the mechanism
    app_password_id: int | None = None  # its last use is recorded with the success
    mailbox_id: int | None = None  # a mailbox's login (mss sessions list); None: a relay


class Refusal(NamedTuple):
    """A refused message: the public reply and the private reason (audit)."""

    reply: str
    reason: str


class ListenerPolicy(Protocol):
    """The checks that differ between listener kinds (the handler calls these)."""

    kind: Mode
    checks_directory: bool  # RCPT: a remote recipient must be in the directory
    adds_message_id: bool  # DATA: a message without Message-ID gets one (RFC 6409 §8.3)

    def throttle_name(self, login: bytes) -> str:
        """The identity AUTH failures are counted under."""
        ...

    async def check_credentials(self, mechanism: str,
                                credentials: LoginPassword) -> AuthCheck:
        """AUTH: the credentials' check (off the event loop)."""
        ...

    async def sender(self, session: MssSession, sender: str,
                     whitelist: Whitelist) -> policy.Decision:
        """MAIL FROM (*sender* normalised, "" for the null reverse-path)."""
        ...

    def recipient(self, facts: policy.RecipientFacts, whitelist: Whitelist
                  ) -> policy.Decision:
        """RCPT TO, given the facts the handler looked up."""
        ...

    def data_refusal(self, session: MssSession, data: bytes) -> Refusal | None:
        """DATA, once read and before anything is stored: a refusal, or None."""
        ...

    def on_behalf(self, session: MssSession, mail_from: str, data: bytes) -> OnBehalf | None:
        """DATA accepted: the shared mailbox the message is sent on behalf of (a grant
        with the send right), or None."""
        ...


@dataclass(frozen=True)
class OnBehalf:
    """A message a grantee sends as a shared mailbox (RFC 5322 §3.6.2: the author is the
    mailbox, the transmitter the grantee)."""

    mailbox: str  # the shared ORG/APP mailbox: an author (From:) or the MAIL FROM
    grantee: str  # the login, named in Sender:
    add_sender: bool  # the From: names the mailbox and the message has no Sender: yet


def delegation(login: str, delegated: frozenset[str], mail_from: str,
               data: bytes) -> OnBehalf | None:
    """The shared mailbox a message from *login* is sent on behalf of: the first From:
    address among *delegated*, else the MAIL FROM when it is one; None when neither."""
    if not delegated:
        return None
    found = rfc5322.authors(data)
    for address in found.from_:
        try:
            author = normalize_address(address)
        except AddressError:
            continue
        if author in delegated:
            return OnBehalf(author, login, add_sender=found.sender is None)
    return OnBehalf(mail_from, login, add_sender=False) if mail_from in delegated else None


def sender_refusal(login: str, delegated: frozenset[str], data: bytes) -> Refusal | None:
    """A From: naming a shared mailbox granted to *login*: the Sender:, when present, must
    be the login itself (RFC 5322 §3.6.2: the agent responsible for the transmission); it
    is added when absent (:func:`delegation`)."""
    found = rfc5322.authors(data)
    if found.sender is None or found.problem is not None:
        return None
    authors = set()
    for address in found.from_:
        try:
            authors.add(normalize_address(address))
        except AddressError:
            continue
    shared = sorted(authors & delegated)
    try:
        sender = normalize_address(found.sender)
    except AddressError:
        sender = found.sender
    if shared and sender != login:
        return Refusal("550 5.7.1 Sender address not allowed for this login",
                       f"header_sender_not_allowed: Sender: {sender} is not {login}, who "
                       f"sends on behalf of {shared[0]}")
    return None


def pki_detail(result: ChainResult) -> dict[str, Any]:
    """The audit detail of a certificate verification."""
    detail: dict[str, Any] = {"pki": result.check.value}
    if result.subject:
        detail["peer_dn"] = result.subject
    if result.fingerprint:
        detail["sha256"] = result.fingerprint
    return detail


class CertificateCheck:
    """The client certificate of an MX or relay session (trustspace/chain.py)."""

    def __init__(self, verifier: PeerVerifier, whitelist: LiveWhitelist) -> None:
        self.verifier = verifier
        self.whitelist = whitelist

    async def verify(self, session: MssSession
                     ) -> tuple[ChainResult | None, policy.Decision | None]:
        """Verify the presented client certificate (cached per chain); the result, and
        the refusal when it may not be used. Checked once per session when it passes."""
        if session.certificate_ok:
            return session.certificate_result, None
        result = await self.verifier.verify(session.peer_chain)
        session.certificate_result = result
        refusal = policy.certificate_check(result, self.whitelist.current,
                                           self.verifier.fail_open)
        if refusal is None:
            session.certificate_ok = True
            if result.check is PkiCheck.CRL_UNAVAILABLE:  # fail-open: accepted, on record
                session.pending_audit.append(session.record(
                    Event.SMTP_CERTIFICATE_FAIL_OPEN, Outcome.MINOR_FAILURE,
                    reason=result.reason, detail=pki_detail(result)))
        return result, refusal


def authors_refusal(data: bytes, may_send_as: Callable[[str], policy.Decision]
                    ) -> Refusal | None:
    """Submission and relay: From: and Sender: must name addresses the login may send
    as (RFC 6409 §8: the submission server enforces submission rights; the MAIL FROM
    rule, *may_send_as*, reused). The refusal, or None."""
    found = rfc5322.authors(data)
    if found.problem is not None:  # RFC 5322 §3.6: one From, at most one Sender
        return Refusal("550 5.6.0 Message refused: invalid From or Sender header",
                       f"header_invalid: {found.problem}")
    fields = [("From", a) for a in found.from_]
    if found.sender is not None:
        fields.append(("Sender", found.sender))
    for name, address in fields:
        try:
            author = normalize_address(address)
        except AddressError:
            return Refusal("550 5.6.0 Message refused: invalid From or Sender header",
                           f"header_invalid: {name}: {address[:320]!r} is not an address")
        decision = may_send_as(author)
        if not decision.accepted:
            return Refusal(f"550 5.7.1 {name} address not allowed for this login",
                           f"header_sender_not_allowed: {name}: {decision.reason}")
    return None


class MxPolicy:
    """MX: the client certificate, then the whitelist (docs/trust-space.md "Inbound")."""

    kind: Mode = "mx"
    checks_directory = False
    adds_message_id = False

    def __init__(self, certificates: CertificateCheck) -> None:
        self.certificates = certificates

    def throttle_name(self, login: bytes) -> str:
        return throttle_name(login.decode("utf-8", "replace"))

    async def check_credentials(self, mechanism: str,
                                credentials: LoginPassword) -> AuthCheck:
        # never reached: the MX neither offers nor accepts AUTH (502 5.5.1)
        return AuthCheck(actor=credentials.login.decode("utf-8", "replace")[:320],
                         reason="no AUTH on the MX listener")

    async def sender(self, session: MssSession, sender: str,
                     whitelist: Whitelist) -> policy.Decision:
        # the certificate first: no_certificate, untrusted_chain...
        _, refusal = await self.certificates.verify(session)
        if refusal is not None:
            return refusal
        return policy.mx_sender(sender, whitelist, session.peer_certificate,
                                self.certificates.whitelist.blocks)

    def recipient(self, facts: policy.RecipientFacts, whitelist: Whitelist
                  ) -> policy.Decision:
        return policy.mx_recipient(facts, whitelist)

    def data_refusal(self, session: MssSession, data: bytes) -> Refusal | None:
        return None  # other operators answer for their authors

    def on_behalf(self, session: MssSession, mail_from: str, data: bytes) -> OnBehalf | None:
        return None


class SubmissionPolicy:
    """Submission: a mailbox login (RFC 4954), sending as the addresses it owns."""

    kind: Mode = "submission"
    checks_directory = True
    adds_message_id = True

    def __init__(self, reader: Engine, methods: frozenset[str] = frozenset({"password"}),
                 live: LiveWhitelist | None = None) -> None:
        self.reader = reader
        self.methods = methods  # the listener's auth (listeners.<name>.auth)
        self.live = live  # its peer blocks (mss peer block) at RCPT

    def throttle_name(self, login: bytes) -> str:
        """The normalised login (mss.login), the one the password check uses."""
        return throttle_name(login.decode("utf-8", "replace"))

    async def check_credentials(self, mechanism: str,
                                credentials: LoginPassword) -> AuthCheck:
        login_text = credentials.login.decode("utf-8", "replace")
        password = credentials.password.decode("utf-8", "replace")
        def check() -> tuple[LoginCheck, frozenset[str]]:
            checked = check_login(self.reader, login_text, password, service="smtp",
                                  methods=self.methods)
            if checked.mailbox is None:
                return checked, frozenset()
            return checked, delegated_to(self.reader, checked.mailbox.id)

        checked, delegated = await asyncio.get_running_loop().run_in_executor(None, check)
        address = checked.address
        identity = None
        if checked.mailbox is not None:
            assert address is not None
            identity = Identity(login=address, may_send_as=frozenset({address}) | delegated,
                                delegated=delegated)
        return AuthCheck(actor=address or login_text[:320], reason=checked.reason,
                         identity=identity, mailbox=address, detail=checked.audit_detail(),
                         app_password_id=checked.app_password_id if identity else None,
                         mailbox_id=checked.mailbox.id if checked.mailbox else None)

    async def sender(self, session: MssSession, sender: str,
                     whitelist: Whitelist) -> policy.Decision:
        return self.may_send_as(session, sender)

    def may_send_as(self, session: MssSession, sender: str) -> policy.Decision:
        """Whether the login may send as *sender* (normalised): MAIL FROM and the
        message's From:/Sender: answer to this one rule."""
        return policy.submission_sender(sender, session.login or "", session.may_send_as)

    def recipient(self, facts: policy.RecipientFacts, whitelist: Whitelist
                  ) -> policy.Decision:
        return policy.submission_recipient(facts, whitelist,
                                           self.live.blocks if self.live else None)

    def data_refusal(self, session: MssSession, data: bytes) -> Refusal | None:
        return authors_refusal(data, lambda author: self.may_send_as(session, author)) \
            or sender_refusal(session.login or "", session.delegated, data)

    def on_behalf(self, session: MssSession, mail_from: str, data: bytes) -> OnBehalf | None:
        return delegation(session.login or "", session.delegated, mail_from, data)


class RelayPolicy:
    """Relay: a registered relay (AUTH, or its certificate DN), sending for its domains."""

    kind: Mode = "relay"
    checks_directory = True
    adds_message_id = True

    def __init__(self, reader: Engine, certificates: CertificateCheck) -> None:
        self.reader = reader
        self.certificates = certificates

    def throttle_name(self, login: bytes) -> str:
        name = throttle_name(login.decode("utf-8", "replace"))
        return f"relay:{name[:64]}"

    async def check_credentials(self, mechanism: str,
                                credentials: LoginPassword) -> AuthCheck:
        """The login is the relay's name (mss relay add NAME)."""
        name = credentials.login.decode("utf-8", "replace")[:64]
        password = credentials.password.decode("utf-8", "replace")

        def check() -> tuple[Relay | None, str]:
            with self.reader.connect() as conn:
                relay = get_relay(conn, name)
            hashed = relay.password_hash if relay else None
            ok = verify_password(password, hashed)  # constant work even when unknown
            if relay is None:
                return None, "unknown relay"
            if not ok:
                return None, "wrong password" if hashed else "relay has no password"
            return relay, "authenticated"

        relay, reason = await asyncio.get_running_loop().run_in_executor(None, check)
        identity = None if relay is None else Identity(login=f"relay:{relay.name}",
                                                       relay=relay)
        return AuthCheck(actor=f"relay:{name}", reason=reason, identity=identity,
                         detail={"relay": name})

    async def sender(self, session: MssSession, sender: str,
                     whitelist: Whitelist) -> policy.Decision:
        refusal = await self._identity(session)
        if refusal is not None:
            return refusal
        return self.may_send_as(session, sender)

    async def _identity(self, session: MssSession) -> policy.Decision | None:
        """AUTH done, or a verified client certificate whose DN is registered. None
        when the session has a relay."""
        if session.relay is not None:
            return None
        if not session.peer_chain:
            return policy.refuse(policy.Verdict.AUTHENTICATION_REQUIRED,
                                 "no_certificate: neither SMTP AUTH nor a client certificate",
                                 None)
        result, refusal = await self.certificates.verify(session)
        if refusal is not None:
            return refusal
        peer = session.peer_certificate
        assert peer is not None and result is not None

        def find() -> Relay | None:
            with self.reader.connect() as conn:
                return relay_by_dn(conn, peer.dn)

        relay = await asyncio.get_running_loop().run_in_executor(None, find)
        if relay is None:
            return policy.refuse(policy.Verdict.AUTHENTICATION_REQUIRED,
                                 f"dn_not_registered: certificate DN {peer.subject} is not "
                                 "registered for any relay", None)
        session.relay = relay
        session.login = f"relay:{relay.name}"
        session.pending_audit.append(session.record(
            Event.SMTP_AUTH, detail={"mechanism": "certificate", "relay": relay.name,
                                 **pki_detail(result)},
            reason="client certificate registered for the relay"))
        return None

    def may_send_as(self, session: MssSession, sender: str) -> policy.Decision:
        """Any address of the institution's domains (MAIL FROM, From:, Sender:)."""
        relay = session.relay
        if relay is None:  # not reached: MAIL FROM identified the relay
            return policy.refuse(policy.Verdict.AUTHENTICATION_REQUIRED,
                                 "no relay identified for the session", None)
        return policy.relay_sender(sender, relay.name, relay.domains)

    def recipient(self, facts: policy.RecipientFacts, whitelist: Whitelist
                  ) -> policy.Decision:
        # as on submission
        return policy.submission_recipient(facts, whitelist,
                                           self.certificates.whitelist.blocks)

    def data_refusal(self, session: MssSession, data: bytes) -> Refusal | None:
        return authors_refusal(data, lambda author: self.may_send_as(session, author))

    def on_behalf(self, session: MssSession, mail_from: str, data: bytes) -> OnBehalf | None:
        return None  # an institution sends as its domains: no grant


def delegated_to(reader: Engine, mailbox_id: int) -> frozenset[str]:
    """The shared mailboxes *mailbox_id* may send as (grants with the send right)."""
    with reader.connect() as conn:
        return frozenset(m.address for m in grants.send_as(conn, mailbox_id))


def listener_policy(mode: Mode, reader: Engine, verifier: PeerVerifier | None,
                    whitelist: LiveWhitelist,
                    methods: frozenset[str] = frozenset({"password"})) -> ListenerPolicy:
    """The policy of a listener kind. MX and relay verify client certificates: they
    need a verifier (never an unverified certificate). *methods*: a submission
    listener's auth."""
    if mode == "submission":
        return SubmissionPolicy(reader, methods, whitelist)
    if verifier is None:
        raise ValueError(f"the {mode} listener needs an PeerVerifier")
    certificates = CertificateCheck(verifier, whitelist)
    if mode == "mx":
        return MxPolicy(certificates)
    return RelayPolicy(reader, certificates)
