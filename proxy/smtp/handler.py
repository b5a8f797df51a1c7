"""SMTP delivery for every listener; what differs per listener kind is its policy.

Each SMTP verb asks the listener's :mod:`proxy.smtp.policies` object (MX, submission,
relay), which asks :mod:`trustspace.policy`, for a decision, answers with the decision's
public reply and records its private reason. An accepted message is encrypted per
recipient and committed with its audit records by the group committer before ``250``.
The order of checks is described, step by step, in ``docs/flow.md``.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiosmtpd.smtp import LoginPassword
from cryptography import x509
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from audit.events import Event, Outcome
from audit.journal import AuditRecord, append
from audit.patient import pseudonym, pseudonym_key
from audit.ttp import TtpError, load_public_key, seal
from directory.lookup import directory_has
from mss import message as rfc5322
from mss.addresses import AddressError, normalize_address, normalize_domain
from mss.app import App
from mss.authenticator import Authenticator, AuthOutcome
from mss.committer import GroupCommitter
from mss.config import ConfigError, ListenerConfig
from mss.db import unavailable
from mss.mailstore import (
    Mailstore,
    app_passwords,
    deliveries,
    domains,
    lifecycle,
    mailboxes,
    messages,
)
from mss.mailstore.reports import ReportCopy, report_copy, report_delivery
from mss.metrics import Metrics, NoMetrics
from mss.sasl import BearerMessage
from mss.sending import (
    MAIL_REPLY,
    RCPT_REPLY,
    Count,
    Limit,
    SendingLimits,
    Usage,
    bump,
    mailbox_key,
    relay_key,
)
from mss.session_registry import SessionRegistry
from mss.throttle import Throttle
from mss.xmss import Examination, examine
from proxy.smtp.citizen import citizen_refusal, is_citizen
from proxy.smtp.dsn import delivered_report
from proxy.smtp.policies import Mode, delegated_to, listener_policy, pki_detail
from proxy.smtp.protocol import MssSMTP
from proxy.smtp.session import MssEnvelope, MssSession
from trustspace import policy
from trustspace.cache import LiveWhitelist
from trustspace.dn import canonical_name
from trustspace.tlshook import presented_chain
from trustspace.verifier import PeerVerifier

log = structlog.get_logger("mss.smtp")

NULL_PATH = "<>"  # the null reverse-path in the envelope (stored and queued as "")
_SEAL_INLINE_MAX = 1024 * 1024  # larger messages are encrypted in a worker thread


@functools.cache  # one entry per handler class
def _hook_names(cls: type) -> list[str]:
    return sorted(n for n in dir(cls) if n.startswith("handle_"))


@functools.lru_cache(maxsize=256)
def _peer_subject(der: bytes) -> policy.PeerCertificate | None:
    """The subject of a presented certificate (DER), parsed once per certificate: a peer
    operator presents the same one on each of its connections. None: unparsable."""
    try:
        subject = x509.load_der_x509_certificate(der).subject
        return policy.PeerCertificate(subject.rfc4514_string(), canonical_name(subject))
    except ValueError:
        return None


class SmtpHandler:
    """The hooks of one SMTP listener (:class:`proxy.smtp.protocol.SmtpHooks`): what
    every listener does, and its :class:`~proxy.smtp.policies.ListenerPolicy` for what
    differs between MX, submission and relay."""

    def __init__(self, app: App, committer: GroupCommitter, whitelist: LiveWhitelist,
                 mode: Mode, verifier: PeerVerifier | None = None,
                 throttle: Throttle | None = None, *, mailstore: Mailstore,
                 authenticator: Authenticator | None = None,
                 listener: ListenerConfig | None = None,
                 sending: SendingLimits | None = None, metrics: Metrics | None = None,
                 registry: SessionRegistry | None = None) -> None:
        self.app = app
        self.registry = registry  # logged-in sessions (mss sessions list/end; issue 16)
        self.sending = sending  # [limits.sending] (submission and relay listeners)
        self.metrics = metrics or NoMetrics()  # the process's (mss/metrics.py)
        self.committer = committer
        self.whitelist = whitelist
        self.authenticator = authenticator  # tokens and certificates (mss serve's runtime)
        methods = frozenset(listener.auth if listener is not None else ("password",))
        self.policy = listener_policy(mode, app.reader, verifier, whitelist, methods)
        self.mailstore = mailstore  # wakes IMAP sessions and the queue worker after a commit
        self.hostname = app.config.smtp.hostname
        self.max_recipients = app.config.smtp.max_recipients
        self.defer_suspended = app.config.lifecycle.suspended_inbound == "defer"
        self.pseudonym_key = pseudonym_key(app.config.audit.pseudonym_key_file)
        # issue 18: the XDM and X-MSS checks (docs/mssante-messages.md)
        self.xdm = (listener.xdm if listener is not None and listener.xdm
                    else app.config.messages.xdm)
        self.require_nil = app.config.messages.require_nil and mode != "mx"
        ttp = app.config.audit.ttp_public_key_file
        try:
            self.ttp_key = load_public_key(ttp) if ttp is not None else None
        except TtpError as exc:
            raise ConfigError(f"config: audit.ttp_public_key_file: {exc}") from None
        cfg = app.config.smtp
        # one per process, shared by the AUTH listeners (SmtpListeners passes it)
        self.throttle = throttle or Throttle(cfg.auth_failures, cfg.auth_window,
                                             cfg.auth_lockout)

    def __dir__(self) -> list[str]:
        """The ``handle_*`` hooks only: aiosmtpd's ``__init__`` reads them, and looks for
        ``auth_*`` mechanisms, by ``dir()`` and ``inspect.getmembers`` on every
        connection (a getattr of every attribute)."""
        return _hook_names(type(self))  # type: ignore[arg-type]  # typeshed: a class is Hashable

    # ------------------------------------------------------------------ audit
    def _emit(self, session: MssSession, *records: AuditRecord) -> None:
        """Audit without waiting (refusals: the reply does not wait for the fsync)."""
        batch = session.take_pending(*records)
        if batch:
            self.committer.submit(lambda conn: append(conn, batch))

    def _emit_record(self, session: MssSession, event: Event, outcome: Outcome = Outcome.SUCCESS,
                     **fields: Any) -> None:
        self._emit(session, session.record(event, outcome, **fields))

    # ------------------------------------------------------------------ session
    def on_connect(self, server: MssSMTP, session: MssSession) -> None:
        log.info("connect", session=session.id, listener=session.listener,
                 remote=session.remote_addr)
        self.metrics.session("smtp", session.listener)
        session.pending_audit.append(session.record(Event.SMTP_CONNECT, actor=session.remote_addr))

    def on_disconnect(self, server: MssSMTP, session: MssSession) -> None:
        self._emit(session)
        if self.registry is not None:
            self.registry.gone(session.id)  # its row (mss sessions list) deleted

    async def handle_QUIT(self, server: MssSMTP, session: MssSession,
                          envelope: MssEnvelope) -> str:
        """RFC 5321 §4.1.1.10: the session is over at QUIT: its registry row goes now,
        not once the TLS close completes (the client's close_notify may be long)."""
        if self.registry is not None:
            self.registry.gone(session.id)
        return "221 Bye"

    def on_timeout(self, server: MssSMTP, session: MssSession, reason: str) -> None:
        log.info("timeout", session=session.id, listener=session.listener,
                 remote=session.remote_addr, reason=reason)
        self._emit_record(session, Event.SMTP_TIMEOUT, Outcome.MINOR_FAILURE, reason=reason)

    def on_tls(self, server: MssSMTP, session: MssSession,
               ssl_object: ssl.SSLObject | None) -> None:
        detail = {}
        if ssl_object is not None:
            cipher = ssl_object.cipher()
            detail = {"version": ssl_object.version(), "cipher": cipher[0] if cipher else None}
            session.peer_chain = presented_chain(ssl_object)
            if session.peer_chain:  # not verified yet: see policies.CertificateCheck
                session.peer_certificate = _peer_subject(session.peer_chain[0])
                detail["peer_dn"] = session.peer_certificate.subject \
                    if session.peer_certificate is not None else "unparsable certificate"
        session.pending_audit.append(session.record(Event.SMTP_TLS, detail=detail))

    async def handle_EHLO(self, server: MssSMTP, session: MssSession, envelope: MssEnvelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        lines = [r for r in responses if server.offer_auth or not r.startswith("250-AUTH")]
        # RFC 2034 (every reply then carries an RFC 3463 code: MssSMTP.push adds one to
        # aiosmtpd's own replies), RFC 3461 (NOTIFY, ORCPT, RET, ENVID: proxy/smtp/dsn.py),
        # RFC 2920: commands are read from one buffer in order, so pipelining is safe.
        lines[-1:-1] = ["250-ENHANCEDSTATUSCODES", "250-DSN", "250-PIPELINING"]
        return lines

    # ------------------------------------------------------------------ AUTH
    # (no method of this class may be named auth_*: aiosmtpd takes those for SASL
    # mechanisms and advertises them in EHLO)
    async def login_blocked(self, session: MssSession, mechanism: str, login: bytes) -> bool:
        """True (audited) when this login or this address is locked after failures."""
        name = self.policy.throttle_name(login)
        if not await self.throttle.check(name, session.remote_addr):
            return False
        self._emit(session, session.record(
            Event.SMTP_AUTH, Outcome.MINOR_FAILURE, actor=name[:320], reason="throttled",
            detail={"mechanism": mechanism}))
        return True

    async def authenticate(self, server: MssSMTP, session: MssSession, mechanism: str,
                           credentials: LoginPassword) -> bool:
        """The policy checks the credentials; success is committed with the session's
        records before 235, a failure counts against the throttle (smtp.auth_*)."""
        checked = await self.policy.check_credentials(mechanism, credentials)
        identity = checked.identity
        record = session.record(
            Event.SMTP_AUTH, Outcome.SUCCESS if identity else Outcome.SERIOUS_FAILURE,
            actor=checked.actor, mailbox=checked.mailbox, reason=checked.reason,
            detail={"mechanism": mechanism, **checked.detail})
        name = self.policy.throttle_name(credentials.login)
        if identity is None:
            self._emit(session, record)
            if self.throttle.failed(name, session.remote_addr):
                log.warning("auth locked", session=session.id, remote=session.remote_addr)
            log.info("auth failed", session=session.id, remote=session.remote_addr)
            return False
        self.throttle.succeeded(name, session.remote_addr)
        session.login = identity.login
        session.may_send_as = identity.may_send_as
        session.delegated = identity.delegated
        session.relay = identity.relay
        batch = session.take_pending(record)
        app_password_id, when = checked.app_password_id, time.time()
        register = self._register(server, session, checked.mailbox_id,
                                  checked.detail.get("method", mechanism.lower()))

        def commit(conn: Connection) -> None:
            if app_password_id is not None:  # its last use, in the login's transaction
                app_passwords.touch(conn, app_password_id, session.remote_addr, when)
            append(conn, batch)
            register(conn)
        await self._login_commit(session, commit)
        return True

    def _register(self, server: MssSMTP, session: MssSession, mailbox_id: int | None,
                  method: str) -> Callable[[Connection], None]:
        """The session's registry row (mss sessions), for the login's transaction: a
        mailbox's login only (a relay is no mailbox)."""
        registry = self.registry
        if registry is None or mailbox_id is None:
            return lambda conn: None
        registry.expect(session.id, server.operator_ended)
        return functools.partial(registry.row, session_id=session.id, protocol="smtp",
                                 listener=session.listener, mailbox_id=mailbox_id,
                                 remote_addr=session.remote_addr, auth_method=method)

    async def _login_commit(self, session: MssSession,
                            work: Callable[[Connection], None]) -> None:
        try:
            await self.committer.run(work)
        except BaseException:
            if self.registry is not None:
                self.registry.forget(session.id)
            raise

    def on_auth_failure(self, server: MssSMTP, session: MssSession, mechanism: str,
                        login: bytes, reason: str) -> None:
        self._emit_record(session, Event.SMTP_AUTH, Outcome.SERIOUS_FAILURE,
                          actor=login.decode("utf-8", "replace")[:320] or session.remote_addr,
                          reason=reason, detail={"mechanism": mechanism})

    async def authenticate_bearer(self, server: MssSMTP, session: MssSession, mechanism: str,
                                  message: BearerMessage) -> AuthOutcome:
        assert self.authenticator is not None  # offered only with one (listeners.py)
        return await self._sasl_done(server, session, await self.authenticator.bearer(
            "smtp", mechanism, message, session.remote_addr))

    async def authenticate_certificate(self, server: MssSMTP, session: MssSession,
                                       authzid: str | None) -> AuthOutcome:
        assert self.authenticator is not None
        return await self._sasl_done(server, session, await self.authenticator.certificate(
            "smtp", session.peer_chain, authzid, session.remote_addr))

    def bearer_error(self, outcome: AuthOutcome) -> bytes:
        assert self.authenticator is not None
        return self.authenticator.bearer_error(outcome)

    async def _sasl_done(self, server: MssSMTP, session: MssSession,
                         outcome: AuthOutcome) -> AuthOutcome:
        """Audit a token or certificate login: a refusal without waiting, a success
        committed (with the session's pending records) before the 235."""
        mailbox = outcome.mailbox
        record = session.record(
            Event.SMTP_AUTH, Outcome.SUCCESS if mailbox else (
                Outcome.MINOR_FAILURE if outcome.throttled or outcome.temporary
                else Outcome.SERIOUS_FAILURE),
            actor=outcome.actor[:320], mailbox=mailbox.address if mailbox else None,
            reason=outcome.reason, detail=outcome.detail)
        if mailbox is None:
            self._emit(session, record)
            log.info("auth failed", session=session.id, remote=session.remote_addr,
                     mechanism=outcome.detail.get("mechanism"))
            return outcome
        # a token that reached a shared mailbox through a grant sends as the person's own
        # mailbox, and as the shared one only with the grant's send right (Sender: them)
        sender = outcome.via or mailbox
        delegated: frozenset[str] = await self._off_loop(delegated_to, self.app.reader,
                                                         sender.id)
        session.login = sender.address
        session.may_send_as = frozenset({sender.address}) | delegated
        session.delegated = delegated
        batch = session.take_pending(record)
        register = self._register(server, session, mailbox.id, outcome.method)

        def commit(conn: Connection) -> None:
            append(conn, batch)
            register(conn)
        await self._login_commit(session, commit)
        return outcome

    # ------------------------------------------------------------------ MAIL / RCPT
    async def handle_MAIL(self, server: MssSMTP, session: MssSession, envelope: MssEnvelope,
                          address: str, mail_options: list[str]) -> str:
        whitelist = self.whitelist.current
        try:
            # the null reverse-path arrives as "<>" (RFC 5321 §4.1.1.2)
            sender = normalize_address(address) if address not in ("", "<>") else ""
        except AddressError as exc:
            decision = policy.refuse(policy.Verdict.BAD_ADDRESS, str(exc), whitelist)
        else:
            decision = await self.policy.sender(session, sender, whitelist)
        if not decision.accepted:
            detail: dict[str, Any] = {}
            code = decision.reason.split(":", 1)[0]
            # the precise reason, machine-readable; else the verdict (both bounded codes)
            detail["check"] = code if code in policy.REASON_CODES else decision.verdict.value
            if session.certificate_result is not None:
                detail.update(pki_detail(session.certificate_result))
            elif session.peer_certificate is not None:
                detail["peer_dn"] = session.peer_certificate.subject
            self._emit_record(session, Event.SMTP_SENDER_REFUSED, Outcome.MINOR_FAILURE,
                              mail_from=address[:320], reason=decision.reason,
                              whitelist_version=decision.whitelist_version, detail=detail)
            return str(decision.reply)
        if self.sending is not None and self.policy.kind != "mx":
            # the sender's messages in this window, checked at MAIL FROM: refused before
            # any recipient or DATA is sent (the authoritative check is the bump at DATA)
            try:
                count = await self._off_loop(self._count, session)
            except DBAPIError as exc:
                if not unavailable(exc):
                    raise
                return "451 4.3.0 Temporary lookup failure, try again later"
            if count is not None:
                over = count.caps.over(count.usage, messages=1)
                if over is not None:
                    self._limit_refused(session, count, over)
                    return MAIL_REPLY
                envelope.count = count
        envelope.mail_from = sender or NULL_PATH  # aiosmtpd needs a true value for RCPT
        envelope.mail_options.extend(mail_options)
        return str(decision.reply)

    async def _off_loop(self, work: Any, *args: Any) -> Any:
        """*work* inline on SQLite (a local page read: µs), in a thread on a database
        server (a round trip, and a reconnect when it went away)."""
        if self.app.reader.dialect.name == "sqlite":
            return work(*args)
        return await asyncio.get_running_loop().run_in_executor(None, work, *args)

    def _count(self, session: MssSession) -> Count | None:
        """The sending limits of the session's sender and its use (None: unlimited)."""
        assert self.sending is not None
        if session.relay is not None:
            key, caps, actor = relay_key(session.relay.name), self.sending.relay, \
                f"relay:{session.relay.name}"
        elif session.login is not None and self.policy.kind == "submission":
            key, caps, actor = mailbox_key(session.login), self.sending.mailbox, session.login
        else:
            return None
        if caps.off:
            return None
        return self.sending.count(key, caps, actor)

    def _limit_refused(self, session: MssSession, count: Count, limit: Limit) -> None:
        """Audited once per sender, limit and window (mss/sending.py), not per refusal."""
        assert self.sending is not None
        self.sending.refused(count.key, count.window, limit, self.sending.record(
            count.key, count.window, limit, count.caps, actor=count.actor,
            mailbox=count.actor if count.key.startswith("mailbox:") else None,
            remote_addr=session.remote_addr, session=session.id, listener=session.listener))

    def _facts(self, conn: Connection, address: str) -> tuple[policy.RecipientFacts, int | None]:
        domain = address.rsplit("@", 1)[1]
        found = lifecycle.recipient(conn, address)  # a mailbox's domain is hosted here
        mailbox, hosted, relayed = found.mailbox, found.hosted, found.next_hop is not None
        in_directory = None
        if not hosted and self.policy.checks_directory and self._directory_applies(domain):
            in_directory = directory_has(conn, address)
        suspended = None  # issue 16: deferred (450 4.2.1) unless suspended_inbound = "keep"
        if self.defer_suspended:
            if found.domain_suspended:
                suspended = f"domain {domain}"
            elif mailbox is not None and mailbox.suspended_at is not None:
                suspended = f"mailbox {address}"
        facts = policy.RecipientFacts(
            address=address, domain=domain, domain_hosted=hosted,
            mailbox_exists=mailbox is not None,
            # a mailbox being deleted is refused as unknown (docs/lifecycle.md)
            mailbox_enabled=bool(mailbox and mailbox.enabled and mailbox.delete_after is None),
            in_directory=in_directory, relayed=relayed,
            mailbox_state=mailbox.state if mailbox else "active", suspended=suspended)
        return facts, (mailbox.id if mailbox else None)

    def _postmaster_target(self, conn: Connection, rcpt: str) -> str | None:
        """RFC 5321 §4.5.1: postmaster@ a hosted domain (or <Postmaster>) with no mailbox
        of that name goes to smtp.postmaster. The mailbox address, or None."""
        configured = self.app.config.smtp.postmaster or None
        if rcpt == "postmaster":
            return configured
        local, domain = rcpt.rsplit("@", 1)
        if local != "postmaster" or not configured or mailboxes.get_mailbox(conn, rcpt):
            return None
        hosted, next_hop = domains.domain_hosting(conn, domain)  # a next hop has its own
        return configured if hosted and next_hop is None else None

    def _directory_applies(self, domain: str) -> bool:
        """The directory recipient check: configured, on, and not an unpublished domain."""
        cfg = self.app.config.directory
        return (cfg is not None and cfg.check_recipients
                and domain not in cfg.unpublished_domains
                # patients are in no professional directory (proxy/smtp/citizen.py)
                and not is_citizen(self.app.config.citizen, domain))

    async def handle_RCPT(self, server: MssSMTP, session: MssSession, envelope: MssEnvelope,
                          address: str, rcpt_options: list[str]) -> str:
        whitelist = self.whitelist.current
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"  # RFC 5321 §4.5.3.1.10
        mailbox_id = None
        target = None  # the mailbox address a postmaster recipient is stored in
        try:
            # RFC 5321 §4.1.1.3: <Postmaster> without a domain, in any case
            rcpt = "postmaster" if address.lower() == "postmaster" \
                else normalize_address(address)
            if rcpt != "postmaster":
                normalize_domain(rcpt.rsplit("@", 1)[1])
        except ValueError as exc:  # AddressError too
            decision = policy.refuse(policy.Verdict.BAD_ADDRESS, str(exc), whitelist)
            rcpt = address
        else:
            if rcpt in envelope.rcpt_tos:
                return "250 2.1.5 Recipient OK"  # duplicate: one copy only
            def lookup() -> tuple[str | None, policy.Decision, int | None]:
                with self.app.reader.connect() as conn:
                    found = self._postmaster_target(conn, rcpt)
                    if rcpt == "postmaster" and found is None:
                        return None, policy.refuse(
                            policy.Verdict.RECIPIENT_UNKNOWN,
                            "<Postmaster>: smtp.postmaster is not set", whitelist), None
                    facts, box = self._facts(conn, found or rcpt)
                    citizen = self.app.config.citizen
                    if self.policy.kind != "mx" and not facts.domain_hosted \
                            and is_citizen(citizen, facts.domain):
                        sender = "" if envelope.mail_from == NULL_PATH else \
                            str(envelope.mail_from or "")
                        refused = citizen_refusal(citizen, conn, sender, rcpt, whitelist)
                        if refused is not None:
                            return None, refused, None
                    return found, self.policy.recipient(facts, whitelist), box

            try:
                if self.app.reader.dialect.name == "sqlite":  # a local page read: µs
                    target, decision, mailbox_id = lookup()
                else:  # a round trip to a server, and a reconnect when it went away (up
                    # to connect_timeout): never on the event loop, which serves every
                    # session of the process
                    target, decision, mailbox_id = await asyncio.get_running_loop(
                        ).run_in_executor(None, lookup)
            except DBAPIError as exc:
                if not unavailable(exc):
                    raise
                log.warning("recipient deferred: database unavailable", session=session.id)
                return "451 4.3.0 Temporary lookup failure, try again later"
        if not decision.accepted:
            self._emit_record(session, Event.SMTP_RECIPIENT_REFUSED, Outcome.MINOR_FAILURE,
                              mail_from=envelope.mail_from, rcpt=rcpt[:320],
                              reason=decision.reason,
                              whitelist_version=decision.whitelist_version,
                              detail={"check": decision.verdict.value})  # a bounded code
            return str(decision.reply)
        count = envelope.count
        if count is not None:
            over = count.caps.over(count.usage, recipients=len(envelope.rcpt_tos) + 1)
            if over is not None:  # this recipient would pass the window's cap
                self._limit_refused(session, count, over)
                return RCPT_REPLY
        envelope.rcpt_tos.append(rcpt)
        envelope.rcpt_options.extend(rcpt_options)
        # RFC 3461: this recipient's NOTIFY and ORCPT (one copy per address: the first's)
        envelope.dsn_rcpt.setdefault(target or rcpt, envelope.pending_rcpt)
        if mailbox_id is not None:
            envelope.local[target or rcpt] = mailbox_id  # one copy per mailbox
        else:  # (a postmaster mailbox of a domain with a next hop: queued to it)
            envelope.remote.append(target or rcpt)
        return str(decision.reply)

    # ------------------------------------------------------------------ DATA
    def on_data_refused(self, server: MssSMTP, session: MssSession, envelope: MssEnvelope,
                        reply: str) -> None:
        self._emit_record(session, Event.SMTP_MESSAGE_REFUSED, Outcome.MINOR_FAILURE,
                          mail_from=envelope.mail_from, reason=reply,
                          rcpt=",".join(envelope.rcpt_tos)[:320])

    async def _limit_at_data(self, session: MssSession, count: Count, window: int,
                             recipients: int) -> str:
        """The bump at DATA did not fit (concurrent sessions passed MAIL FROM together):
        451 4.7.1, nothing stored; which limit, from a fresh read (a rare path)."""
        assert self.sending is not None
        usage = await self._off_loop(self.sending.usage, count.key, window)
        self.sending.saw(count.key, window, usage)
        over = count.caps.over(usage, messages=1, recipients=recipients) or "messages"
        self._limit_refused(session, Count(count.key, window, count.caps, usage, count.actor),
                            over)
        return MAIL_REPLY

    def _content_refused(self, session: MssSession, envelope: MssEnvelope, check: str,
                         problems: list[str], reply: str) -> str:
        """A message refused for its MSSanté content (X-MSS-NIL, XDM): audited with the
        problem codes (never a value of the message), nothing stored."""
        detail: dict[str, Any] = {"check": check}
        if problems:
            detail["xdm_problems"] = problems
        self._emit_record(session, Event.SMTP_MESSAGE_REFUSED, Outcome.MINOR_FAILURE,
                          mail_from=envelope.mail_from,
                          reason=f"{check}: {', '.join(problems) or reply[10:]}"[:500],
                          rcpt=",".join(envelope.rcpt_tos)[:320], detail=detail)
        return reply

    def _about(self, examination: Examination | None) -> tuple[dict[str, Any],
                                                                 dict[str, Any]]:
        """The patient fields of every record of the message (its pseudonym), and what the
        acceptance record adds: the XDM and X-MSS detail, the INS sealed to the trusted
        third party (audit/ttp.py)."""
        if examination is None:
            return {}, {}
        detail = examination.audit_detail()
        ins = examination.patient
        if ins is None:
            return {}, detail
        alias = pseudonym(self.pseudonym_key, ins)
        if self.ttp_key is not None:
            detail["patient_sealed"] = seal(self.ttp_key, ins, examination.patient_oid or "",
                                            alias)
        return {"patient": alias}, detail

    async def handle_DATA(self, server: MssSMTP, session: MssSession,
                          envelope: MssEnvelope) -> str:
        data = envelope.content
        assert isinstance(data, bytes)
        refused = self.policy.data_refusal(session, data)
        if refused is not None:  # submission, relay: From:/Sender: (policies.py)
            self._emit_record(session, Event.SMTP_MESSAGE_REFUSED, Outcome.MINOR_FAILURE,
                              mail_from=envelope.mail_from, reason=refused.reason,
                              rcpt=",".join(envelope.rcpt_tos)[:320],
                              detail={"check": refused.reason.split(":", 1)[0]})
            return refused.reply
        if self.require_nil and not rfc5322.find_header(data, "X-MSS-NIL"):
            return self._content_refused(session, envelope, "nil_missing", [],
                                         "550 5.6.0 Message refused: X-MSS-NIL header "
                                         "required")
        mail_from = "" if envelope.mail_from == NULL_PATH else (envelope.mail_from or "")
        behalf = self.policy.on_behalf(session, mail_from, data)
        if behalf is not None and behalf.add_sender:  # RFC 5322 §3.6.2: the transmitter
            data = f"Sender: <{behalf.grantee}>\r\n".encode() + data
        # the transaction's id: in Received:, in the 250 reply, in the audit, and the
        # prefix of its queue rows' ids (mss queue list / show)
        queue_id = messages.new_id()
        short_id = queue_id[:16]
        header_msgid = rfc5322.message_id(data)
        if self.policy.adds_message_id and header_msgid is None:
            header_msgid = rfc5322.new_message_id(self.hostname)  # RFC 6409 §8.3
            data = f"Message-ID: {header_msgid}\r\n".encode("ascii") + data
        protocol = "ESMTPSA" if session.login else ("ESMTPS" if server.tls_active else "ESMTP")
        single = envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None
        stored = rfc5322.received_header(
            helo=session.host_name or "unknown", peer_ip=session.remote_addr,
            hostname=self.hostname, protocol=protocol, queue_id=short_id,
            recipient=single) + data
        whitelist_version = self.whitelist.current.version_id

        def seal(examination: Examination | None) -> deliveries.Delivery:
            about, accepted_detail = self._about(examination)
            keyring = self.app.keyring
            local = [deliveries.seal_local(keyring, mid, addr, stored)
                     for addr, mid in envelope.local.items()]
            queued = [deliveries.seal_queued(
                keyring, rcpt, stored, queue_id, notify=envelope.dsn_rcpt[rcpt].notify,
                orcpt=envelope.dsn_rcpt[rcpt].orcpt) for rcpt in envelope.remote]
            base: dict[str, Any] = {"message_id": header_msgid, "mail_from": mail_from,
                                    "whitelist_version": whitelist_version}
            sent_for = {"on_behalf_of": behalf.mailbox} if behalf is not None else {}
            records = [session.record(Event.SMTP_MESSAGE_ACCEPTED,
                                      detail={"size": len(stored), "queue_id": short_id,
                                              "recipients": len(envelope.rcpt_tos),
                                              **sent_for, **about, **accepted_detail},
                                      **base)]
            if behalf is not None:  # both identities: the grantee acts, the mailbox is used
                records.append(session.record(
                    Event.SMTP_DELEGATED, actor=behalf.grantee, mailbox=behalf.mailbox,
                    detail={"grantee": behalf.grantee, "queue_id": short_id,
                            "sender_added": behalf.add_sender}, **base))
            records += [session.record(Event.DELIVERY_LOCAL, rcpt=c.address, mailbox=c.address,
                                       detail={"store_id": c.message_id, **about}, **base)
                        for c in local]
            records += [session.record(Event.DELIVERY_QUEUED, rcpt=q.rcpt,
                                       detail={"queue_id": q.queue_id, **about}, **base)
                        for q in queued]
            return deliveries.Delivery(mail_from=mail_from, local=local, queued=queued,
                                  audit=[*session.pending_audit, *records],
                                  header_message_id=header_msgid,
                                  received_at=time.time(), ret=envelope.dsn_mail.ret,
                                  envid=envelope.dsn_mail.envid)

        count, recipients = envelope.count, len(envelope.rcpt_tos)
        window = self.sending.window() if self.sending is not None else 0

        counts: list[Usage] = []

        def commit(conn: Connection) -> list[int] | None:
            # the sender's counts, bumped in the transaction recording the message: None
            # (nothing written) when another session of any process took the last place
            if count is not None:
                usage = bump(conn, count.key, window, count.caps, 1, recipients)
                if usage is None:
                    return None
                counts[:] = [usage]
            uids = deliveries.write_delivery(conn, delivery)
            if report is not None:  # RFC 3461 NOTIFY=SUCCESS: "delivered", same transaction
                copy, _ = report_copy(conn, self.app.keyring, mail_from, report,
                                      whitelist.is_whitelisted)
                if copy is not None:
                    deliveries.write_delivery(conn, report_delivery(
                        copy, header_msgid, short_id, "delivered"))
                    reports[:] = [copy]
            return uids

        checking = [self.xdm != "off"]  # the phase, for a failure's audit record

        def check_and_seal() -> tuple[Examination | None, deliveries.Delivery | None]:
            """issue 18: the XDM packages and X-MSS fields (mss/xmss.py), then, unless the
            policy refuses what they show, the copies sealed: one pass in one place."""
            examination = examine(data) if checking[0] else None
            checking[0] = False
            if examination is not None and self.xdm == "refuse" and examination.problems:
                return examination, None
            return examination, seal(examination)

        whitelist = self.whitelist.current
        reports: list[ReportCopy] = []
        try:
            # inflating and hashing documents, encrypting a large message: never on the
            # event loop (one hop for both); without a ZIP (base64 of PK\x03\x04) the
            # check reads the headers and the MIME tree only: µs
            if len(stored) > _SEAL_INLINE_MAX or (checking[0] and b"UEsDB" in data):
                examination, sealed = await asyncio.get_running_loop().run_in_executor(
                    None, check_and_seal)
            else:
                examination, sealed = check_and_seal()
            if sealed is None:
                assert examination is not None
                return self._content_refused(
                    session, envelope, "xdm", list(examination.problems),
                    f"554 5.6.0 Message refused: {examination.reason()}")
            delivery = sealed
            report = delivered_report(self.hostname, mail_from, stored, envelope)
            if await self.committer.run(commit) is None:
                assert count is not None and self.sending is not None
                return await self._limit_at_data(session, count, window, recipients)
            session.pending_audit = []
        except Exception as exc:
            failed = "check" if checking[0] else "storage"
            log.error("check failed" if checking[0] else "store failed", session=session.id,
                      error=repr(exc))
            self._emit_record(session, Event.SMTP_MESSAGE_REFUSED, Outcome.MAJOR_FAILURE,
                              mail_from=mail_from, message_id=header_msgid,
                              reason=f"{failed} failure: {type(exc).__name__}")
            return f"451 4.3.0 Temporary {failed} failure, try again later"
        if count is not None and counts:
            assert self.sending is not None
            self.sending.counted(count.key, window, counts[0])
        for copy in delivery.local:  # committed: wake IMAP sessions (IDLE) of the mailbox
            self.mailstore.notifier.changed(copy.mailbox_id)
        for report_copy_ in reports:  # a delivered report: the sender's INBOX or the queue
            if isinstance(report_copy_, deliveries.LocalCopy):
                self.mailstore.notifier.changed(report_copy_.mailbox_id)
        if delivery.queued or any(isinstance(r, deliveries.QueuedCopy) for r in reports):
            # and this process's queue worker (others: its change watcher)
            self.mailstore.queued.fire()
        log.info("accepted", session=session.id, queue_id=short_id,
                 local=len(delivery.local), queued=len(delivery.queued), size=len(stored))
        return f"250 2.0.0 OK queued as {short_id}"
