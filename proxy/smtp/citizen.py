"""Citizen messaging on submission and relay (docs/mssante-messages.md "Citizen
messaging"): a recipient of the patients' domain (``citizen.domain``) must be
``<INS>@domain`` with a well-formed INS (:mod:`mss.citizen`), else ``550 5.1.3``, and the
sending mailbox must be of a type in ``citizen.senders`` (PER and ORG by default), else
``550 5.7.1``. The domain is exempt from the professional directory check (patients are in
no directory) but not from the whitelist: mail reaches the patients' operator only if its
domain is listed, with its certificate checked as any peer's. The MX has no rule of its
own: mail from patients arrives from that operator like mail from any peer (MAIL FROM: the
domain whitelisted and the certificate's DN listed for it), and ``X-MSS-MES`` (``FIN``:
no reply expected) passes unchanged, as every header does.
"""

from __future__ import annotations

from sqlalchemy import Connection

from mss.citizen import ins_problem
from mss.config import CitizenConfig
from mss.mailstore import mailboxes
from trustspace import policy
from trustspace.whitelist import Whitelist


def is_citizen(cfg: CitizenConfig, domain: str) -> bool:
    return bool(cfg.domain) and domain == cfg.domain


def citizen_refusal(cfg: CitizenConfig, conn: Connection, sender: str, rcpt: str,
                    whitelist: Whitelist) -> policy.Decision | None:
    """The refusal of *rcpt* (normalised, in the citizen domain) from *sender*, or None."""
    local = rcpt.rsplit("@", 1)[0]
    problem = ins_problem(local)
    if problem is not None:
        return policy.refuse(policy.Verdict.PATIENT_ADDRESS_INVALID,
                             f"citizen: {rcpt} is not <INS>@{cfg.domain}: {problem}",
                             whitelist)
    mailbox = mailboxes.get_mailbox(conn, sender) if sender else None
    if mailbox is None:
        return policy.refuse(policy.Verdict.PATIENT_SENDER_REFUSED,
                             f"citizen: sender {sender or '<>'} has no mailbox here (its "
                             "type is unknown)", whitelist)
    if mailbox.type.upper() not in cfg.senders:
        return policy.refuse(policy.Verdict.PATIENT_SENDER_REFUSED,
                             f"citizen: a {mailbox.type} mailbox may not write to patients "
                             f"(citizen.senders = {', '.join(cfg.senders)})", whitelist)
    return None
