"""SMTP policy and delivery for the MX and submission listeners.

Each SMTP verb asks :mod:`trustspace.policy` for a decision, answers with the decision's
public reply and records its private reason. An accepted message is encrypted per
recipient and committed with its audit records by the group committer before ``250``.
The order of checks is described, step by step, in ``docs/flow.md``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import structlog
from aiosmtpd.smtp import Envelope, LoginPassword
from cryptography import x509
from sqlalchemy import Connection

from audit.events import Outcome
from audit.journal import AuditRecord, append
from audit.patient import patient_pseudonym, pseudonym_key
from directory.lookup import directory_has
from mss import message as rfc5322
from mss.addresses import AddressError, normalize_address, normalize_domain
from mss.app import App
from mss.committer import GroupCommitter
from mss.login import check_login, throttle_name
from mss.mailstore import Mailstore, deliveries, domains, mailboxes, messages
from mss.passwords import verify_password
from mss.relays import get_relay, relay_by_dn
from mss.throttle import Throttle
from proxy.smtp.protocol import MssSession, MssSMTP
from trustspace import policy
from trustspace.cache import LiveWhitelist
from trustspace.chain import ChainResult, PkiCheck
from trustspace.dn import canonical_name
from trustspace.tlshook import presented_chain
from trustspace.verifier import PeerVerifier

log = structlog.get_logger("mss.smtp")

Mode = Literal["mx", "submission", "relay"]
NULL_PATH = "<>"  # the null reverse-path in the envelope (stored and queued as "")
_SEAL_INLINE_MAX = 1024 * 1024  # larger messages are encrypted in a worker thread


class MssEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.local: dict[str, int] = {}  # recipient address -> mailbox id
        self.remote: list[str] = []  # whitelisted remote recipients (outbound queue)


class SmtpHandler:
    envelope_factory = MssEnvelope

    def __init__(self, app: App, committer: GroupCommitter, whitelist: LiveWhitelist,
                 mode: Mode, verifier: PeerVerifier | None = None,
                 throttle: Throttle | None = None, *, mailstore: Mailstore) -> None:
        if mode != "submission" and verifier is None:  # never an unverified certificate
            raise ValueError(f"the {mode} listener needs an PeerVerifier")
        self.app = app
        self.verifier = verifier  # client certificates (MX, relay)
        self.committer = committer
        self.mailstore = mailstore  # wakes IMAP sessions and the queue worker after a commit
        self.whitelist = whitelist
        self.mode = mode
        self.hostname = app.config.smtp.hostname
        self.max_recipients = app.config.smtp.max_recipients
        self.sessions: set[MssSMTP] = set()
        self.pseudonym_key = pseudonym_key(app.config.audit.pseudonym_key_file)
        cfg = app.config.smtp
        # one per process, shared by the AUTH listeners (start_smtp passes it)
        self.throttle = throttle or Throttle(cfg.auth_failures, cfg.auth_window,
                                             cfg.auth_lockout)

    # ------------------------------------------------------------------ audit
    def _record(self, session: MssSession, event: str, outcome: Outcome = Outcome.SUCCESS,
                **fields: Any) -> AuditRecord:
        return AuditRecord(event=event, outcome=outcome,
                           actor=fields.pop("actor", session.login or session.remote_addr),
                           remote_addr=session.remote_addr, session=session.id,
                           listener=session.listener, **fields)

    def _emit(self, session: MssSession, *records: AuditRecord) -> None:
        """Audit without waiting (refusals: the reply does not wait for the fsync)."""
        batch = self._take_pending(session, records)
        if batch:
            self.committer.submit(lambda conn: append(conn, batch))

    def _emit_record(self, session: MssSession, event: str, outcome: Outcome = Outcome.SUCCESS,
                     **fields: Any) -> None:
        self._emit(session, self._record(session, event, outcome, **fields))

    @staticmethod
    def _take_pending(session: MssSession, records: tuple[AuditRecord, ...] | list[AuditRecord]
                      ) -> list[AuditRecord]:
        batch = [*session.pending_audit, *records]
        session.pending_audit = []
        return batch

    # ------------------------------------------------------------------ session
    def on_connect(self, server: MssSMTP, session: MssSession) -> None:
        self.sessions.add(server)
        log.info("connect", session=session.id, listener=session.listener,
                 remote=session.remote_addr)
        session.pending_audit.append(
            self._record(session, "smtp.connect", actor=session.remote_addr))

    def on_disconnect(self, server: MssSMTP) -> None:
        self.sessions.discard(server)
        self._emit(server.mss_session())

    def on_timeout(self, server: MssSMTP, session: MssSession, reason: str) -> None:
        log.info("timeout", session=session.id, listener=session.listener,
                 remote=session.remote_addr, reason=reason)
        self._emit_record(session, "smtp.timeout", Outcome.MINOR_FAILURE, reason=reason)

    def on_tls(self, server: MssSMTP, session: MssSession, ssl_object: Any) -> None:
        detail = {}
        if ssl_object is not None:
            detail = {"version": ssl_object.version(), "cipher": ssl_object.cipher()[0]}
            session.peer_chain = presented_chain(ssl_object)
            if session.peer_chain:  # not verified yet: see _certificate (MAIL FROM)
                try:
                    subject = x509.load_der_x509_certificate(session.peer_chain[0]).subject
                    session.peer_certificate = policy.PeerCertificate(
                        subject.rfc4514_string(), canonical_name(subject))
                    detail["peer_dn"] = session.peer_certificate.subject
                except ValueError:
                    detail["peer_dn"] = "unparsable certificate"
        session.pending_audit.append(self._record(session, "smtp.tls", detail=detail))

    async def handle_EHLO(self, server: MssSMTP, session: MssSession, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        lines = [r for r in responses if server.offer_auth or not r.startswith("250-AUTH")]
        # RFC 2920: commands are read from one buffer in order, so pipelining is safe.
        # (No ENHANCEDSTATUSCODES: RFC 2034 §3 would require one in every reply, and
        # aiosmtpd's own replies have none.)
        lines.insert(-1, "250-PIPELINING")
        return lines

    # ------------------------------------------------------------------ AUTH
    # (no method of this class may be named auth_*: aiosmtpd takes those for SASL
    # mechanisms and advertises them in EHLO)
    def login_blocked(self, session: MssSession, mechanism: str, login: bytes) -> bool:
        """True (audited) when this login or this address is locked after failures."""
        name = self._throttle_name(login)
        if not self.throttle.blocked(name, session.remote_addr):
            return False
        self._emit(session, self._record(
            session, "smtp.auth", Outcome.MINOR_FAILURE, actor=name[:320],
            reason="throttled",
            detail={"mechanism": mechanism}))
        return True

    def _throttle_name(self, login: bytes) -> str:
        """The identity failures count under: the normalised login (mss.login), the same
        one the password check uses, whatever its spelling."""
        name = throttle_name(login.decode("utf-8", "replace"))
        return f"relay:{name[:64]}" if self.mode == "relay" else name

    def _auth_failed(self, session: MssSession, login: bytes) -> None:
        if self.throttle.failed(self._throttle_name(login), session.remote_addr):
            log.warning("auth locked", session=session.id, remote=session.remote_addr)

    async def authenticate(self, server: MssSMTP, session: MssSession, mechanism: str,
                           credentials: LoginPassword) -> bool:
        if self.mode == "relay":
            return await self._authenticate_relay(session, mechanism, credentials)
        login_text = credentials.login.decode("utf-8", "replace")
        password = credentials.password.decode("utf-8", "replace")
        checked = await asyncio.get_running_loop().run_in_executor(
            None, check_login, self.app.reader, login_text, password)
        ok, reason, address = checked.mailbox is not None, checked.reason, checked.address
        actor = address or login_text[:320]
        outcome = Outcome.SUCCESS if ok else Outcome.SERIOUS_FAILURE
        record = self._record(session, "smtp.auth", outcome, actor=actor, mailbox=address,
                              reason=reason, detail={"mechanism": mechanism})
        if ok:
            assert address is not None
            self.throttle.succeeded(self._throttle_name(credentials.login), session.remote_addr)
            session.login = address
            session.may_send_as = frozenset({address})
            batch = self._take_pending(session, [record])
            await self.committer.run(lambda conn: append(conn, batch))
        else:
            self._emit(session, record)
            self._auth_failed(session, credentials.login)
            log.info("auth failed", session=session.id, remote=session.remote_addr)
        return ok

    async def _authenticate_relay(self, session: MssSession, mechanism: str,
                                  credentials: LoginPassword) -> bool:
        """Relay listener: the login is the relay's name (mss relay add NAME)."""
        name = credentials.login.decode("utf-8", "replace")[:64]
        password = credentials.password.decode("utf-8", "replace")

        def check() -> tuple[Any, str]:
            with self.app.reader.connect() as conn:
                relay = get_relay(conn, name)
            hashed = relay.password_hash if relay else None
            ok = verify_password(password, hashed)  # constant work even when unknown
            if relay is None:
                return None, "unknown relay"
            if not ok:
                return None, "wrong password" if hashed else "relay has no password"
            return relay, "authenticated"

        relay, reason = await asyncio.get_running_loop().run_in_executor(None, check)
        outcome = Outcome.SUCCESS if relay else Outcome.SERIOUS_FAILURE
        record = self._record(session, "smtp.auth", outcome, actor=f"relay:{name}",
                              reason=reason, detail={"mechanism": mechanism, "relay": name})
        if relay is None:
            self._emit(session, record)
            self._auth_failed(session, credentials.login)
            return False
        self.throttle.succeeded(self._throttle_name(credentials.login), session.remote_addr)
        session.login = f"relay:{relay.name}"
        session.relay = relay
        batch = self._take_pending(session, [record])
        await self.committer.run(lambda conn: append(conn, batch))
        return True

    async def _certificate(self, session: MssSession) -> tuple[ChainResult | None,
                                                                policy.Decision | None]:
        """Verify the presented client certificate (cached per chain); the result, and the
        refusal when it may not be used. Checked once per session when it passes."""
        if session.certificate_ok:
            return session.certificate_result, None
        assert self.verifier is not None
        result = await self.verifier.verify(session.peer_chain)
        session.certificate_result = result
        refusal = policy.certificate_check(result, self.whitelist.current,
                                           self.verifier.fail_open)
        if refusal is None:
            session.certificate_ok = True
            if result.check is PkiCheck.CRL_UNAVAILABLE:  # fail-open: accepted, on record
                session.pending_audit.append(self._record(
                    session, "smtp.certificate.fail_open", Outcome.MINOR_FAILURE,
                    reason=result.reason, detail=self._pki_detail(result)))
        return result, refusal

    @staticmethod
    def _pki_detail(result: ChainResult) -> dict[str, Any]:
        detail: dict[str, Any] = {"pki": result.check.value}
        if result.subject:
            detail["peer_dn"] = result.subject
        if result.fingerprint:
            detail["sha256"] = result.fingerprint
        return detail

    async def _relay_identity(self, session: MssSession) -> policy.Decision | None:
        """Relay listener: AUTH done, or a verified client certificate whose DN is
        registered. None when the session has a relay."""
        if session.relay is not None:
            return None
        if not session.peer_chain:
            return policy.refuse(policy.Verdict.AUTHENTICATION_REQUIRED,
                                 "no_certificate: neither SMTP AUTH nor a client certificate",
                                 None)
        result, refusal = await self._certificate(session)
        if refusal is not None:
            return refusal
        peer = session.peer_certificate
        assert peer is not None and result is not None

        def find() -> Any:
            with self.app.reader.connect() as conn:
                return relay_by_dn(conn, peer.dn)

        relay = await asyncio.get_running_loop().run_in_executor(None, find)
        if relay is None:
            return policy.refuse(policy.Verdict.AUTHENTICATION_REQUIRED,
                                 f"dn_not_registered: certificate DN {peer.subject} is not "
                                 "registered for any relay", None)
        session.relay = relay
        session.login = f"relay:{relay.name}"
        session.pending_audit.append(self._record(
            session, "smtp.auth", detail={"mechanism": "certificate", "relay": relay.name,
                                          **self._pki_detail(result)},
            reason="client certificate registered for the relay"))
        return None

    def on_auth_failure(self, server: MssSMTP, session: MssSession, mechanism: str,
                        login: bytes, reason: str) -> None:
        self._emit_record(session, "smtp.auth", Outcome.SERIOUS_FAILURE,
                          actor=login.decode("utf-8", "replace")[:320], reason=reason,
                          detail={"mechanism": mechanism})

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
            decision = await self._sender_decision(session, sender, whitelist)
        if not decision.accepted:
            detail: dict[str, Any] = {}
            code = decision.reason.split(":", 1)[0]
            if code in policy.REASON_CODES:  # the precise reason, machine-readable
                detail["check"] = code
            if session.certificate_result is not None:
                detail.update(self._pki_detail(session.certificate_result))
            elif session.peer_certificate is not None:
                detail["peer_dn"] = session.peer_certificate.subject
            self._emit_record(session, "smtp.sender.refused", Outcome.MINOR_FAILURE,
                              mail_from=address[:320], reason=decision.reason,
                              whitelist_version=decision.whitelist_version, detail=detail)
            return str(decision.reply)
        envelope.mail_from = sender or NULL_PATH  # aiosmtpd needs a true value for RCPT
        envelope.mail_options.extend(mail_options)
        return str(decision.reply)

    async def _sender_decision(self, session: MssSession, sender: str,
                               whitelist: Any) -> policy.Decision:
        if self.mode == "mx":  # the certificate first: no_certificate, untrusted_chain...
            _, refusal = await self._certificate(session)
            if refusal is not None:
                return refusal
            return policy.mx_sender(sender, whitelist, session.peer_certificate)
        if self.mode == "relay":
            refusal = await self._relay_identity(session)
            if refusal is not None:
                return refusal
        return self._may_send_as(session, sender)

    def _may_send_as(self, session: MssSession, sender: str) -> policy.Decision:
        """Whether the session's login may send as *sender* (normalised): the envelope's
        MAIL FROM and the message's From:/Sender: answer to this one rule."""
        if self.mode == "relay":  # any address of the institution's domains
            relay = session.relay
            return policy.relay_sender(sender, relay.name, relay.domains)
        return policy.submission_sender(sender, session.login or "", session.may_send_as)

    def _authors_refusal(self, session: MssSession, data: bytes) -> tuple[str, str] | None:
        """Submission and relay: From: and Sender: must name addresses the login may send
        as (RFC 6409 §8: the submission server enforces submission rights; the MAIL FROM
        rule, reused). The reply and the private reason of a refusal, or None."""
        found = rfc5322.authors(data)
        if found.problem is not None:  # RFC 5322 §3.6: one From, at most one Sender
            return ("550 5.6.0 Message refused: invalid From or Sender header",
                    f"header_invalid: {found.problem}")
        fields = [("From", a) for a in found.from_]
        if found.sender is not None:
            fields.append(("Sender", found.sender))
        for name, address in fields:
            try:
                author = normalize_address(address)
            except AddressError:
                return ("550 5.6.0 Message refused: invalid From or Sender header",
                        f"header_invalid: {name}: {address[:320]!r} is not an address")
            decision = self._may_send_as(session, author)
            if not decision.accepted:
                return (f"550 5.7.1 {name} address not allowed for this login",
                        f"header_sender_not_allowed: {name}: {decision.reason}")
        return None

    def _facts(self, conn: Connection, address: str) -> tuple[policy.RecipientFacts, int | None]:
        domain = address.rsplit("@", 1)[1]
        mailbox = mailboxes.get_mailbox(conn, address)
        hosted, relayed = True, False  # a mailbox's domain is hosted, its mail stored here
        if mailbox is None:
            hosted, next_hop = domains.domain_hosting(conn, domain)
            relayed = next_hop is not None
        in_directory = None
        if not hosted and self.mode != "mx" and self._directory_applies(domain):
            in_directory = directory_has(conn, address)
        facts = policy.RecipientFacts(address=address, domain=domain, domain_hosted=hosted,
                                      mailbox_exists=mailbox is not None,
                                      mailbox_enabled=bool(mailbox and mailbox.enabled),
                                      in_directory=in_directory, relayed=relayed)
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
                and domain not in cfg.unpublished_domains)

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
            with self.app.reader.connect() as conn:
                target = self._postmaster_target(conn, rcpt)
                if rcpt == "postmaster" and target is None:
                    decision = policy.refuse(policy.Verdict.RECIPIENT_UNKNOWN,
                                             "<Postmaster>: smtp.postmaster is not set",
                                             whitelist)
                else:
                    facts, mailbox_id = self._facts(conn, target or rcpt)
                    decision = (policy.mx_recipient(facts, whitelist) if self.mode == "mx"
                                else policy.submission_recipient(facts, whitelist))  # relay
        if not decision.accepted:
            self._emit_record(session, "smtp.recipient.refused", Outcome.MINOR_FAILURE,
                              mail_from=envelope.mail_from, rcpt=rcpt[:320],
                              reason=decision.reason,
                              whitelist_version=decision.whitelist_version)
            return str(decision.reply)
        envelope.rcpt_tos.append(rcpt)
        envelope.rcpt_options.extend(rcpt_options)
        if mailbox_id is not None:
            envelope.local[target or rcpt] = mailbox_id  # one copy per mailbox
        else:  # (a postmaster mailbox of a domain with a next hop: queued to it)
            envelope.remote.append(target or rcpt)
        return str(decision.reply)

    # ------------------------------------------------------------------ DATA
    def on_data_refused(self, server: MssSMTP, session: MssSession, envelope: Envelope,
                        reply: str) -> None:
        self._emit_record(session, "smtp.message.refused", Outcome.MINOR_FAILURE,
                          mail_from=envelope.mail_from, reason=reply,
                          rcpt=",".join(envelope.rcpt_tos)[:320])

    async def handle_DATA(self, server: MssSMTP, session: MssSession,
                          envelope: MssEnvelope) -> str:
        data = envelope.content
        assert isinstance(data, bytes)
        if self.mode != "mx":
            refused = self._authors_refusal(session, data)
            if refused is not None:
                reply, reason = refused
                self._emit_record(session, "smtp.message.refused", Outcome.MINOR_FAILURE,
                                  mail_from=envelope.mail_from, reason=reason,
                                  rcpt=",".join(envelope.rcpt_tos)[:320],
                                  detail={"check": reason.split(":", 1)[0]})
                return reply
        # the transaction's id: in Received:, in the 250 reply, in the audit, and the
        # prefix of its queue rows' ids (mss queue list / show)
        queue_id = messages.new_id()
        short_id = queue_id[:16]
        header_msgid = rfc5322.message_id(data)
        if self.mode != "mx" and header_msgid is None:
            header_msgid = rfc5322.new_message_id(self.hostname)  # RFC 6409 §8.3
            data = f"Message-ID: {header_msgid}\r\n".encode("ascii") + data
        protocol = "ESMTPSA" if session.login else ("ESMTPS" if server.tls_active else "ESMTP")
        single = envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None
        stored = rfc5322.received_header(
            helo=session.host_name or "unknown", peer_ip=session.remote_addr,
            hostname=self.hostname, protocol=protocol, queue_id=short_id,
            recipient=single) + data
        mail_from = "" if envelope.mail_from == NULL_PATH else (envelope.mail_from or "")
        whitelist_version = self.whitelist.current.version_id

        def seal() -> deliveries.Delivery:
            keyring = self.app.keyring
            local = [deliveries.seal_local(keyring, mid, addr, stored)
                     for addr, mid in envelope.local.items()]
            queued = [deliveries.seal_queued(keyring, rcpt, stored, queue_id)
                      for rcpt in envelope.remote]
            base: dict[str, Any] = {"message_id": header_msgid, "mail_from": mail_from,
                                    "whitelist_version": whitelist_version}
            patient = patient_pseudonym(self.pseudonym_key, data)
            about = {"patient": patient} if patient else {}
            records = [self._record(session, "smtp.message.accepted",
                                    detail={"size": len(stored), "queue_id": short_id,
                                            "recipients": len(envelope.rcpt_tos), **about},
                                    **base)]
            records += [self._record(session, "delivery.local", rcpt=c.address, mailbox=c.address,
                                     detail={"store_id": c.message_id, **about}, **base)
                        for c in local]
            records += [self._record(session, "delivery.queued", rcpt=q.rcpt,
                                     detail={"queue_id": q.queue_id, **about}, **base)
                        for q in queued]
            return deliveries.Delivery(mail_from=mail_from, local=local, queued=queued,
                                  audit=[*session.pending_audit, *records],
                                  header_message_id=header_msgid,
                                  received_at=time.time())

        try:
            if len(stored) <= _SEAL_INLINE_MAX:
                delivery = seal()
            else:
                delivery = await asyncio.get_running_loop().run_in_executor(None, seal)
            await self.committer.run(lambda conn: deliveries.write_delivery(conn, delivery))
            session.pending_audit = []
        except Exception as exc:
            log.error("store failed", session=session.id, error=repr(exc))
            self._emit_record(session, "smtp.message.refused", Outcome.MAJOR_FAILURE,
                              mail_from=mail_from, message_id=header_msgid,
                              reason=f"storage failure: {type(exc).__name__}")
            return "451 4.3.0 Temporary storage failure, try again later"
        for copy in delivery.local:  # committed: wake IMAP sessions (IDLE) of the mailbox
            self.mailstore.notifier.changed(copy.mailbox_id)
        if delivery.queued:  # and this process's queue worker (others: its change watcher)
            self.mailstore.queued.fire()
        log.info("accepted", session=session.id, queue_id=short_id,
                 local=len(delivery.local), queued=len(delivery.queued), size=len(stored))
        return f"250 2.0.0 OK queued as {short_id}"
