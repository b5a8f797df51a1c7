"""Trust-space policy: each check returns a :class:`Decision`, never a bare bool.

A decision carries the outcome, the public SMTP reply (code, enhanced code, short text that
reveals no configuration), the private reason for the audit record, and the whitelist
version it was taken against. ``REPLIES`` is the one table mapping outcomes to replies.
The checks are pure: callers look up facts (mailbox, hosted domain, whitelist) and pass them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from trustspace.blocks import PeerBlock, PeerBlocks
from trustspace.chain import ChainResult, PkiCheck
from trustspace.dn import CanonicalDN
from trustspace.whitelist import Whitelist


class Verdict(Enum):
    ACCEPT = "accept"
    SENDER_OUTSIDE_TRUST_SPACE = "sender-outside-trust-space"
    SENDER_NOT_OWNED = "sender-not-owned"
    NULL_SENDER_REFUSED = "null-sender-refused"
    RECIPIENT_OUTSIDE_TRUST_SPACE = "recipient-outside-trust-space"
    RECIPIENT_UNKNOWN = "recipient-unknown"
    RECIPIENT_SUSPENDED = "recipient-suspended"  # issue 16: lifecycle.suspended_inbound
    BAD_ADDRESS = "bad-address"
    TEMPORARY_FAILURE = "temporary-failure"
    CERTIFICATE_REQUIRED = "certificate-required"
    CERTIFICATE_REFUSED = "certificate-refused"
    CERTIFICATE_STATUS_UNAVAILABLE = "certificate-status-unavailable"
    AUTHENTICATION_REQUIRED = "authentication-required"
    SENDER_NOT_RELAY_DOMAIN = "sender-not-relay-domain"
    PEER_BLOCKED = "peer-blocked"  # mss peer block, without an end
    PEER_BLOCKED_TEMPORARILY = "peer-blocked-temporarily"  # mss peer block --until
    RECIPIENT_BLOCKED = "recipient-blocked"  # submission/relay RCPT to a blocked domain
    PATIENT_ADDRESS_INVALID = "patient-address-invalid"  # issue 18: not <INS>@citizen domain
    PATIENT_SENDER_REFUSED = "patient-sender-refused"  # a mailbox type not in citizen.senders


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


# RFC 3463 enhanced codes; public texts name no domain, DN, list or version.
REPLIES: MappingProxyType[Verdict, Reply] = MappingProxyType({
    Verdict.SENDER_OUTSIDE_TRUST_SPACE: Reply(
        550, "5.7.1", "Sender outside the MSSante trust space"),
    Verdict.SENDER_NOT_OWNED: Reply(553, "5.7.1", "Sender address not allowed for this login"),
    Verdict.NULL_SENDER_REFUSED: Reply(550, "5.7.1", "Null sender not accepted here"),
    Verdict.RECIPIENT_OUTSIDE_TRUST_SPACE: Reply(
        550, "5.7.1", "Recipient outside the MSSante trust space"),
    Verdict.RECIPIENT_UNKNOWN: Reply(550, "5.1.1", "Recipient unknown"),
    # RFC 5321 §4.2.2 450 (mailbox unavailable, try again), RFC 3463 X.2.1 (mailbox disabled,
    # not accepting messages): the sender's MTA retries until the mailbox is resumed
    Verdict.RECIPIENT_SUSPENDED: Reply(450, "4.2.1", "Mailbox temporarily unavailable, try "
                                       "again later"),
    Verdict.BAD_ADDRESS: Reply(553, "5.1.3", "Bad address syntax"),
    Verdict.TEMPORARY_FAILURE: Reply(451, "4.3.0", "Temporary failure, try again later"),
    Verdict.CERTIFICATE_REQUIRED: Reply(550, "5.7.1", "Client certificate required"),
    Verdict.CERTIFICATE_REFUSED: Reply(550, "5.7.1", "Client certificate not accepted"),
    # temporary (RFC 5321 §4.2.1 4yz): the sender's MTA retries later
    Verdict.CERTIFICATE_STATUS_UNAVAILABLE: Reply(
        454, "4.7.0", "Certificate status unavailable, try again later"),
    Verdict.AUTHENTICATION_REQUIRED: Reply(530, "5.7.0", "Authentication required"),
    Verdict.SENDER_NOT_RELAY_DOMAIN: Reply(550, "5.7.1",
                                           "Sender address not allowed for this relay"),
    # a local block (trustspace/blocks.py): with an end, temporary, so that the peer's
    # queue tries again after it (RFC 5321 §4.2.1 4yz; RFC 3463 X.7.1 not authorized)
    Verdict.PEER_BLOCKED: Reply(550, "5.7.1", "Sender not accepted by local policy"),
    Verdict.PEER_BLOCKED_TEMPORARILY: Reply(
        450, "4.7.1", "Sender temporarily not accepted, try again later"),
    Verdict.RECIPIENT_BLOCKED: Reply(550, "5.7.1", "Recipient not accepted by local policy"),
    # RFC 3463 §3.2 X.1.3 bad destination mailbox address syntax: the local part is no INS
    Verdict.PATIENT_ADDRESS_INVALID: Reply(550, "5.1.3", "Invalid patient address"),
    Verdict.PATIENT_SENDER_REFUSED: Reply(550, "5.7.1",
                                          "This mailbox may not write to patients"),
})


# the first word of a refusal's private reason, also in the audit detail as "check"
REASON_CODES = frozenset({c.value for c in PkiCheck} | {
    "domain_not_whitelisted", "dn_not_listed", "dn_not_registered", "peer_blocked"})


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str  # private: goes to the audit record, never on the wire
    whitelist_version: int | None
    accept_reply: Reply | None = None

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPT

    @property
    def reply(self) -> Reply:
        if self.accepted:
            return self.accept_reply or Reply(250, "2.0.0", "OK")
        return REPLIES[self.verdict]


def accept(reason: str, whitelist: Whitelist | None, reply: Reply) -> Decision:
    return Decision(Verdict.ACCEPT, reason, whitelist.version_id if whitelist else None, reply)


def refuse(verdict: Verdict, reason: str, whitelist: Whitelist | None) -> Decision:
    return Decision(verdict, reason, whitelist.version_id if whitelist else None)


SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")


@dataclass(frozen=True)
class RecipientFacts:
    """What the caller looked up about one recipient."""

    address: str
    domain: str
    domain_hosted: bool
    mailbox_exists: bool
    mailbox_enabled: bool
    in_directory: bool | None = None  # None: the directory check does not apply
    relayed: bool = False  # hosted domain with a next hop: its server knows its mailboxes
    mailbox_state: str = "active"  # mss.mailstore.mailboxes.Mailbox.state, for the reason
    # the mailbox or its domain suspended and lifecycle.suspended_inbound = "defer"
    suspended: str | None = None  # what is suspended ("mailbox X", "domain D"), else None


@dataclass(frozen=True)
class PeerCertificate:
    """The client certificate a peer presented (verified by :func:`certificate_check`)."""

    subject: str  # RFC 4514 text, for the audit record
    dn: CanonicalDN


def certificate_check(result: ChainResult, whitelist: Whitelist | None,
                      fail_open: bool) -> Decision | None:
    """The presented certificate chain (trustspace/chain.py): None when it may be used,
    else the refusal. Reasons start with the check's code (``untrusted_chain: ...``)."""
    if result.ok:
        return None
    if result.check is PkiCheck.NO_CERTIFICATE:
        return refuse(Verdict.CERTIFICATE_REQUIRED, result.reason, whitelist)
    if result.check is PkiCheck.CRL_UNAVAILABLE:
        if fail_open:
            return None  # pki.crl_unavailable = "fail-open": the caller notes it
        return refuse(Verdict.CERTIFICATE_STATUS_UNAVAILABLE, result.reason, whitelist)
    return refuse(Verdict.CERTIFICATE_REFUSED, result.reason, whitelist)


def blocked(block: PeerBlock, whitelist: Whitelist | None, what: str) -> Decision:
    """The refusal of a local block: temporary when the block has an end."""
    verdict = Verdict.PEER_BLOCKED_TEMPORARILY if block.temporary else Verdict.PEER_BLOCKED
    return refuse(verdict, f"peer_blocked: {what}: {block.describe()}", whitelist)


def mx_sender(mail_from: str, whitelist: Whitelist,
              peer: PeerCertificate | None = None,
              blocks: PeerBlocks | None = None) -> Decision:
    """MX MAIL FROM, once the peer's certificate chain has been accepted: the certificate's
    DN and the sender's domain must not be blocked locally (*blocks*, mss peer block), the
    domain must be on the whitelist (docs/flow.md "MX") and the certificate's subject DN one
    the whitelist lists for that domain. A null reverse-path (delivery reports, RFC 5321
    §4.5.5) needs a DN the whitelist lists for some domain: an operator of the trust space.
    *peer* None (no certificate) is refused: the MX requires one.
    """
    if peer is None:
        return refuse(Verdict.CERTIFICATE_REQUIRED,
                      "no_certificate: no client certificate presented", whitelist)
    if blocks is not None:
        found = blocks.dn_block(peer.dn)
        if found is not None:
            return blocked(found, whitelist, f"certificate DN {peer.subject}")
        if mail_from:
            domain = mail_from.rsplit("@", 1)[1]
            found = blocks.domain_block(domain)
            if found is not None:
                return blocked(found, whitelist, f"sender domain {domain}")
    if not mail_from:
        if whitelist.dn_known(peer.dn):
            return accept("null reverse-path from a listed operator certificate",
                          whitelist, SENDER_OK)
        return refuse(Verdict.NULL_SENDER_REFUSED,
                      f"dn_not_listed: certificate DN {peer.subject} is not listed for any "
                      f"domain in whitelist version {whitelist.version_id} (null "
                      "reverse-path)", whitelist)
    domain = mail_from.rsplit("@", 1)[1]
    if not whitelist.is_whitelisted(domain):
        return refuse(Verdict.SENDER_OUTSIDE_TRUST_SPACE,
                      f"domain_not_whitelisted: sender domain {domain} is not on whitelist "
                      f"version {whitelist.version_id}", whitelist)
    if not whitelist.dn_listed(domain, peer.dn):
        return refuse(Verdict.SENDER_OUTSIDE_TRUST_SPACE,
                      f"dn_not_listed: certificate DN {peer.subject} is not listed for "
                      f"{domain} in whitelist version {whitelist.version_id}", whitelist)
    return accept(f"sender domain {domain} whitelisted, certificate DN listed",
                  whitelist, SENDER_OK)


def relay_sender(mail_from: str, relay: str, domains: frozenset[str]) -> Decision:
    """Relay MAIL FROM: an address of one of the domains registered for the relay
    (``mss relay add --domains``); the null reverse-path is refused like on submission.
    *mail_from* is normalised (addresses.normalize_address: IDNA domain, lower case), as the
    relay's domains are stored."""
    if not mail_from:
        return refuse(Verdict.SENDER_NOT_RELAY_DOMAIN,
                      f"null reverse-path from relay {relay}", None)
    domain = mail_from.rsplit("@", 1)[1]
    if domain not in domains:
        return refuse(Verdict.SENDER_NOT_RELAY_DOMAIN,
                      f"relay {relay} may not send as {mail_from} (domain {domain} not "
                      f"among {','.join(sorted(domains))})", None)
    return accept(f"relay {relay} sends for {domain}", None, SENDER_OK)


def mx_recipient(facts: RecipientFacts, whitelist: Whitelist) -> Decision:
    """MX RCPT TO: only hosted, enabled mailboxes (we relay nothing for others here)."""
    if not facts.domain_hosted:
        return refuse(Verdict.RECIPIENT_UNKNOWN,
                      f"domain {facts.domain} is not hosted here (no relaying on MX)", whitelist)
    if facts.relayed:
        if facts.suspended:
            return refuse(Verdict.RECIPIENT_SUSPENDED, f"{facts.suspended} is suspended",
                          whitelist)
        return accept(f"domain {facts.domain} goes to its next hop", whitelist, RECIPIENT_OK)
    if not facts.mailbox_exists:
        return refuse(Verdict.RECIPIENT_UNKNOWN, f"no mailbox {facts.address}", whitelist)
    if not facts.mailbox_enabled:  # disabled, or being deleted (mss mailbox delete)
        state = "being deleted" if facts.mailbox_state == "deleting" else "disabled"
        return refuse(Verdict.RECIPIENT_UNKNOWN, f"mailbox {facts.address} is {state}",
                      whitelist)
    if facts.suspended:
        return refuse(Verdict.RECIPIENT_SUSPENDED, f"{facts.suspended} is suspended",
                      whitelist)
    return accept("hosted mailbox", whitelist, RECIPIENT_OK)


def submission_sender(mail_from: str, login: str, may_send_as: frozenset[str]) -> Decision:
    """Submission MAIL FROM: a mailbox the authenticated user may send as (RFC 6409 §6.1)."""
    if not mail_from:
        return refuse(Verdict.SENDER_NOT_OWNED, f"null reverse-path from user {login}", None)
    if mail_from not in may_send_as:
        return refuse(Verdict.SENDER_NOT_OWNED,
                      f"user {login} may not send as {mail_from}", None)
    return accept("authenticated owner", None, SENDER_OK)


def submission_recipient(facts: RecipientFacts, whitelist: Whitelist,
                         blocks: PeerBlocks | None = None) -> Decision:
    """Submission RCPT TO: a hosted mailbox, or a domain on the whitelist and not blocked
    for good (a block with an end lets it be queued: the worker holds it); nothing else."""
    if facts.domain_hosted:
        return mx_recipient(facts, whitelist)
    found = blocks.domain_block(facts.domain) if blocks is not None else None
    if found is not None and not found.temporary:
        return refuse(Verdict.RECIPIENT_BLOCKED,
                      f"peer_blocked: recipient domain {facts.domain}: {found.describe()}",
                      whitelist)
    if whitelist.is_whitelisted(facts.domain):
        if facts.in_directory is False:
            return refuse(Verdict.RECIPIENT_UNKNOWN,
                          f"{facts.address} is not in the professional directory", whitelist)
        return accept(f"remote domain {facts.domain} whitelisted", whitelist, RECIPIENT_OK)
    return refuse(Verdict.RECIPIENT_OUTSIDE_TRUST_SPACE,
                  f"recipient domain {facts.domain} is not on whitelist version "
                  f"{whitelist.version_id}", whitelist)
