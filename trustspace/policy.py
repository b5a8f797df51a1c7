"""Trust-space policy: each check returns a :class:`Decision`, never a bare bool.

A decision carries the outcome, the public SMTP reply (code, enhanced code, short text that
reveals no configuration), the private reason for the audit record, and the whitelist
version it was taken against. ``REPLIES`` is the one table mapping outcomes to replies.
The checks are pure: callers look up facts (mailbox, hosted domain, whitelist) and pass them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from trustspace.dn import CanonicalDN
from trustspace.whitelist import Whitelist


class Verdict(Enum):
    ACCEPT = "accept"
    SENDER_OUTSIDE_TRUST_SPACE = "sender-outside-trust-space"
    SENDER_NOT_OWNED = "sender-not-owned"
    NULL_SENDER_REFUSED = "null-sender-refused"
    RECIPIENT_OUTSIDE_TRUST_SPACE = "recipient-outside-trust-space"
    RECIPIENT_UNKNOWN = "recipient-unknown"
    BAD_ADDRESS = "bad-address"
    TEMPORARY_FAILURE = "temporary-failure"


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


# RFC 3463 enhanced codes; public texts name no domain, DN, list or version.
REPLIES: dict[Verdict, Reply] = {
    Verdict.SENDER_OUTSIDE_TRUST_SPACE: Reply(
        550, "5.7.1", "Sender outside the MSSante trust space"),
    Verdict.SENDER_NOT_OWNED: Reply(553, "5.7.1", "Sender address not allowed for this login"),
    Verdict.NULL_SENDER_REFUSED: Reply(550, "5.7.1", "Null sender not accepted here"),
    Verdict.RECIPIENT_OUTSIDE_TRUST_SPACE: Reply(
        550, "5.7.1", "Recipient outside the MSSante trust space"),
    Verdict.RECIPIENT_UNKNOWN: Reply(550, "5.1.1", "Recipient unknown"),
    Verdict.BAD_ADDRESS: Reply(553, "5.1.3", "Bad address syntax"),
    Verdict.TEMPORARY_FAILURE: Reply(451, "4.3.0", "Temporary failure, try again later"),
}


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


@dataclass(frozen=True)
class PeerCertificate:
    """The client certificate an operator presented (already verified by TLS)."""

    subject: str  # RFC 4514 text, for the audit record
    dn: CanonicalDN


def mx_sender(mail_from: str, whitelist: Whitelist,
              peer: PeerCertificate | None = None) -> Decision:
    """MX MAIL FROM: the sender's domain must be on the whitelist (DESIGN.md §2) and, when
    the peer presented a certificate, its subject DN must be one the whitelist lists for
    that domain. This is the one place an MX sender is judged; requiring the certificate
    comes with the trust-space issue.
    """
    if not mail_from:
        return refuse(Verdict.NULL_SENDER_REFUSED,
                      "null reverse-path without an authenticated operator certificate",
                      whitelist)
    domain = mail_from.rsplit("@", 1)[1]
    if not whitelist.is_whitelisted(domain):
        return refuse(Verdict.SENDER_OUTSIDE_TRUST_SPACE,
                      f"sender domain {domain} is not on whitelist version "
                      f"{whitelist.version_id}", whitelist)
    if peer is not None and not whitelist.dn_listed(domain, peer.dn):
        return refuse(Verdict.SENDER_OUTSIDE_TRUST_SPACE,
                      f"certificate DN {peer.subject} is not listed for {domain} in whitelist "
                      f"version {whitelist.version_id}", whitelist)
    if peer is not None:
        return accept(f"sender domain {domain} whitelisted, certificate DN listed",
                      whitelist, SENDER_OK)
    return accept(f"sender domain {domain} whitelisted", whitelist, SENDER_OK)


def mx_recipient(facts: RecipientFacts, whitelist: Whitelist) -> Decision:
    """MX RCPT TO: only hosted, enabled mailboxes (we relay nothing for others here)."""
    if not facts.domain_hosted:
        return refuse(Verdict.RECIPIENT_UNKNOWN,
                      f"domain {facts.domain} is not hosted here (no relaying on MX)", whitelist)
    if facts.relayed:
        return accept(f"domain {facts.domain} goes to its next hop", whitelist, RECIPIENT_OK)
    if not facts.mailbox_exists:
        return refuse(Verdict.RECIPIENT_UNKNOWN, f"no mailbox {facts.address}", whitelist)
    if not facts.mailbox_enabled:
        return refuse(Verdict.RECIPIENT_UNKNOWN, f"mailbox {facts.address} is disabled",
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


def submission_recipient(facts: RecipientFacts, whitelist: Whitelist) -> Decision:
    """Submission RCPT TO: a hosted mailbox, or a domain on the whitelist; nothing else."""
    if facts.domain_hosted:
        return mx_recipient(facts, whitelist)
    if whitelist.is_whitelisted(facts.domain):
        if facts.in_directory is False:
            return refuse(Verdict.RECIPIENT_UNKNOWN,
                          f"{facts.address} is not in the professional directory", whitelist)
        return accept(f"remote domain {facts.domain} whitelisted", whitelist, RECIPIENT_OK)
    return refuse(Verdict.RECIPIENT_OUTSIDE_TRUST_SPACE,
                  f"recipient domain {facts.domain} is not on whitelist version "
                  f"{whitelist.version_id}", whitelist)
