"""Per-connection and per-transaction state of an SMTP session, every field typed.

:class:`MssSession` lives for a connection (one id across STARTTLS, RFC 3207 §4.2 gives
a new aiosmtpd session); :class:`MssEnvelope` for one mail transaction (MAIL .. DATA).
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from aiosmtpd.smtp import Envelope, Session

from audit.events import Event, Outcome
from audit.journal import AuditRecord
from mss.dsn import MailParams, RcptParams
from mss.sending import Count
from trustspace.chain import ChainResult
from trustspace.policy import PeerCertificate
from trustspace.relays import Relay


class MssSession(Session):
    """aiosmtpd's session plus what mss needs for policy and audit."""

    id: str
    listener: str
    remote_addr: str
    login: str | None  # the authenticated mailbox address, or relay:NAME
    may_send_as: frozenset[str]  # submission: the addresses the login may send as
    delegated: frozenset[str]  # of those, the mailboxes granted with the send right
    peer_certificate: PeerCertificate | None  # the presented leaf (unverified)
    peer_chain: list[bytes]  # DER, leaf first, as presented (unverified)
    certificate_ok: bool  # the chain passed trustspace.chain (MX, relay)
    certificate_result: ChainResult | None  # the verification's result
    relay: Relay | None  # relay listener: the relay once identified (AUTH or certificate)
    errors: int  # replies counted against smtp.max_errors
    pending_audit: list[AuditRecord]

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.id = secrets.token_hex(8)
        self.listener = ""
        self.remote_addr = ""
        self.login = None
        self.may_send_as = frozenset()
        self.delegated = frozenset()
        self.peer_certificate = None
        self.peer_chain = []
        self.certificate_ok = False
        self.certificate_result = None
        self.relay = None
        self.errors = 0
        # audit records of the session not yet committed: written with the next
        # transaction of the session (or at disconnect), saving a commit per connection
        self.pending_audit = []

    def record(self, event: Event, outcome: Outcome = Outcome.SUCCESS,
               **fields: Any) -> AuditRecord:
        """An audit record of this session: its id, listener, client address, and as
        actor its login (else the client address) unless *fields* names one."""
        return AuditRecord(event=event, outcome=outcome,
                           actor=fields.pop("actor", self.login or self.remote_addr),
                           remote_addr=self.remote_addr, session=self.id,
                           listener=self.listener, **fields)

    def take_pending(self, *records: AuditRecord) -> list[AuditRecord]:
        """The session's pending records followed by *records*; none stay pending."""
        batch = [*self.pending_audit, *records]
        self.pending_audit = []
        return batch


class MssEnvelope(Envelope):
    """aiosmtpd's envelope plus where each accepted recipient's copy goes."""

    local: dict[str, int]  # recipient address -> mailbox id
    remote: list[str]  # whitelisted remote recipients (outbound queue)
    count: Count | None  # the sender's sending limits and use, read at MAIL FROM
    dsn_mail: MailParams  # RFC 3461 RET and ENVID of MAIL FROM
    pending_rcpt: RcptParams  # NOTIFY and ORCPT of the RCPT TO being answered
    dsn_rcpt: dict[str, RcptParams]  # those of each accepted recipient (local or remote)

    def __init__(self) -> None:
        super().__init__()
        self.local = {}
        self.remote = []
        self.count = None
        self.dsn_mail = MailParams()
        self.pending_rcpt = RcptParams()
        self.dsn_rcpt = {}
