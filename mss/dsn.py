"""Delivery status notifications: the SMTP parameters (RFC 3461) and the reports (RFC 3464).

Pure functions, no I/O:

- :func:`parse_mail_params` / :func:`parse_rcpt_params`: ``RET``, ``ENVID`` on MAIL FROM
  and ``NOTIFY``, ``ORCPT`` on RCPT TO (RFC 3461 §4), xtext decoded (§4: ``+`` and two
  upper-case hex digits); a bad or repeated value raises :class:`DsnError` (the listener
  answers ``501 5.5.4``, RFC 3463 §3.6 "invalid command arguments");
- :func:`wants`: whether a recipient's NOTIFY asks for a report of a kind (absent NOTIFY:
  ``FAILURE,DELAY``, RFC 3461 §4.1 leaves the default to the MTA);
- :func:`build_report`: a ``multipart/report; report-type=delivery-status`` (RFC 6522)
  with a human-readable part, the ``message/delivery-status`` fields (RFC 3464 §2.2,
  §2.3) and the original headers (``text/rfc822-headers``) or, for a failure with
  ``RET=FULL``, the whole message (``message/rfc822``, RFC 3461 §4.3);
- :func:`is_report`: never a report for a report (RFC 3461 §5.2.2 / RFC 3464 §2).
"""

from __future__ import annotations

import email.utils
import secrets
import time
from dataclasses import dataclass
from types import MappingProxyType

from mss import message as rfc5322

NOTIFY_KINDS = ("SUCCESS", "FAILURE", "DELAY")  # RFC 3461 §4.1, in this canonical order
RETURNS = ("FULL", "HDRS")  # RFC 3461 §4.3
ENVID_MAX = 100  # RFC 3461 §4.4: characters of the ENVID value (encoded)
ORCPT_MAX = 500  # RFC 3461 §4.2: the whole ORCPT parameter
ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")  # RFC 3464 §2.3.3


class DsnError(ValueError):
    """A DSN parameter that is malformed, repeated or out of range (501 5.5.4)."""


# --------------------------------------------------------------------------- xtext

def _xchar(c: str) -> bool:
    # RFC 3461 §4: xchar = any ASCII CHAR between "!" (33) and "~" (126) inclusive,
    # except for "+" and "="
    return "!" <= c <= "~" and c not in "+="


def xtext_decode(text: str) -> str:
    """The value of an xtext (RFC 3461 §4); DsnError when it is not one."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "+":
            pair = text[i + 1:i + 3]
            if len(pair) != 2 or any(h not in "0123456789ABCDEF" for h in pair):
                raise DsnError(f"bad xtext escape at {i}: '+' needs two upper-case hex digits")
            out.append(chr(int(pair, 16)))
            i += 3
            continue
        if not _xchar(c):
            raise DsnError(f"character {ord(c)} not allowed in xtext")
        out.append(c)
        i += 1
    return "".join(out)


def xtext_encode(value: str) -> str:
    """*value* as xtext: printable ASCII but ``+`` and ``=`` as is, the rest ``+HH``.
    Characters above U+00FF are encoded as their UTF-8 octets."""
    out: list[str] = []
    for c in value:
        if _xchar(c):
            out.append(c)
        else:
            out.extend(f"+{b:02X}" for b in c.encode("utf-8"))
    return "".join(out)


# --------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class MailParams:
    ret: str | None = None  # FULL | HDRS (RFC 3461 §4.3)
    envid: str | None = None  # decoded (RFC 3461 §4.4)

    def esmtp(self) -> list[str]:
        """The parameters to pass to a DSN-capable next hop (RFC 3461 §4)."""
        out = [f"RET={self.ret}"] if self.ret else []
        if self.envid is not None:
            out.append(f"ENVID={xtext_encode(self.envid)}")
        return out


@dataclass(frozen=True)
class RcptParams:
    notify: str | None = None  # None (absent), "NEVER", or kinds comma-joined in order
    orcpt: str | None = None  # "addr-type;decoded address" (RFC 3461 §4.2)

    def esmtp(self) -> list[str]:
        out = [f"NOTIFY={self.notify}"] if self.notify else []
        if self.orcpt is not None:
            kind, _, address = self.orcpt.partition(";")
            out.append(f"ORCPT={kind};{xtext_encode(address)}")
        return out

    @property
    def original_recipient(self) -> str | None:
        """The RFC 3464 §2.3.1 Original-Recipient value ("rfc822; addr")."""
        if self.orcpt is None:
            return None
        kind, _, address = self.orcpt.partition(";")
        return f"{kind}; {address}"


def _split(params: list[str], names: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """The parameters named *names* (upper-cased name -> value as given) and the others."""
    found: dict[str, str] = {}
    rest: list[str] = []
    for param in params:
        name, eq, value = param.partition("=")
        upper = name.upper()
        if upper not in names:
            rest.append(param)
            continue
        if upper in found:
            raise DsnError(f"{upper} given twice")  # RFC 3461 §4.1-§4.4
        if not eq or not value:
            raise DsnError(f"{upper} needs a value")
        found[upper] = value
    return found, rest


def _printable(value: str, what: str) -> str:
    if any(not " " <= c <= "~" for c in value):
        raise DsnError(f"{what} must decode to printable ASCII")
    return value


def parse_mail_params(params: list[str]) -> tuple[MailParams, list[str]]:
    """RET and ENVID of MAIL FROM (RFC 3461 §4.3, §4.4), and the parameters left."""
    found, rest = _split(params, ("RET", "ENVID"))
    ret = found.get("RET")
    if ret is not None:
        ret = ret.upper()
        if ret not in RETURNS:
            raise DsnError("RET must be FULL or HDRS")
    envid = found.get("ENVID")
    if envid is not None:
        if len(envid) > ENVID_MAX:
            raise DsnError(f"ENVID longer than {ENVID_MAX} characters")
        envid = _printable(xtext_decode(envid), "ENVID")
    return MailParams(ret, envid), rest


def parse_notify(value: str) -> str:
    """NOTIFY's canonical form: "NEVER" or kinds in the order of NOTIFY_KINDS."""
    words = [w.strip().upper() for w in value.split(",")]
    if words == ["NEVER"]:
        return "NEVER"
    if "NEVER" in words:
        raise DsnError("NOTIFY=NEVER cannot be combined with another value")  # §4.1
    if not words or any(w not in NOTIFY_KINDS for w in words) or len(set(words)) != len(words):
        raise DsnError("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
    return ",".join(k for k in NOTIFY_KINDS if k in words)


def parse_orcpt(value: str) -> str:
    """ORCPT's "addr-type;decoded address" (RFC 3461 §4.2)."""
    if len("ORCPT=") + len(value) > ORCPT_MAX:
        raise DsnError(f"ORCPT longer than {ORCPT_MAX} characters")
    kind, semi, encoded = value.partition(";")
    # addr-type = atom (RFC 5322 §3.2.3); "rfc822" in practice
    if not semi or not kind or not all(c.isalnum() or c in "!#$%&'*+-/=?^_`{|}~"
                                      for c in kind) or not kind.isascii():
        raise DsnError("ORCPT must be addr-type;xtext")
    address = _printable(xtext_decode(encoded), "ORCPT")
    if not address:
        raise DsnError("ORCPT has an empty address")
    return f"{kind.lower() if kind.lower() == 'rfc822' else kind};{address}"


def parse_rcpt_params(params: list[str]) -> tuple[RcptParams, list[str]]:
    """NOTIFY and ORCPT of RCPT TO (RFC 3461 §4.1, §4.2), and the parameters left."""
    found, rest = _split(params, ("NOTIFY", "ORCPT"))
    notify = parse_notify(found["NOTIFY"]) if "NOTIFY" in found else None
    orcpt = parse_orcpt(found["ORCPT"]) if "ORCPT" in found else None
    return RcptParams(notify, orcpt), rest


def wants(notify: str | None, kind: str) -> bool:
    """Does NOTIFY *notify* (stored form, None when absent) ask for a *kind* report?
    Absent: failures and delays (RFC 3461 §4.1: the MTA's choice), never successes."""
    if notify is None:
        return kind in ("FAILURE", "DELAY")
    return kind in notify.split(",")


# --------------------------------------------------------------------------- reports

def is_report(data: bytes) -> bool:
    """Is *data* itself a delivery report? (RFC 3464 §2: never a DSN for a DSN.)"""
    ctype = (rfc5322.find_header(data, "Content-Type") or "").lower()
    return "multipart/report" in ctype and "delivery-status" in ctype


def _field(text: str) -> str:
    """One header field value: no CR/LF, bounded."""
    return " ".join(text.split())[:900]


@dataclass(frozen=True)
class RecipientReport:
    """The per-recipient fields of one report (RFC 3464 §2.3)."""

    final_recipient: str
    action: str  # one of ACTIONS
    status: str  # RFC 3463 class.subject.detail
    original_recipient: str | None = None  # "rfc822; addr" (from ORCPT)
    remote_mta: str | None = None
    diagnostic: str | None = None  # the remote SMTP reply
    last_attempt: float | None = None
    will_retry_until: float | None = None  # delayed reports (RFC 3464 §2.3.8)


_SUBJECTS = MappingProxyType({
    "failed": "Undelivered message (delivery status notification)",
    "delayed": "Delayed message (delivery status notification)",
    "delivered": "Delivered message (delivery status notification)",
    "relayed": "Relayed message (delivery status notification)",
    "expanded": "Expanded message (delivery status notification)",
})
_SAYS = MappingProxyType({
    "failed": "could not be delivered",
    "delayed": "has not been delivered yet; delivery will be retried",
    "delivered": "was delivered to the recipient's mailbox",
    "relayed": "was relayed to a server that sends no delivery reports",
    "expanded": "was expanded",
})


def build_report(*, reporting_mta: str, mail_from: str, original: bytes,
                 recipients: list[RecipientReport], arrival: float, explanation: str,
                 envid: str | None = None, ret: str | None = None,
                 now: float | None = None) -> bytes:
    """The whole report message (CRLF line ends), to *mail_from*. The original is
    returned whole only for a failure with RET=FULL (RFC 3461 §4.3), else its header
    block (text/rfc822-headers, RFC 6522 §4)."""
    if not recipients:
        raise ValueError("a report names at least one recipient")
    now = time.time() if now is None else now
    action = recipients[0].action
    boundary = f"mss-dsn-{secrets.token_hex(12)}"
    date = email.utils.formatdate(now)
    lines = [
        f"From: Mail Delivery System <mailer-daemon@{reporting_mta}>",
        f"To: <{mail_from}>",
        f"Subject: {_SUBJECTS.get(action, _SUBJECTS['failed'])}",
        f"Date: {date}",
        f"Message-ID: {rfc5322.new_message_id(reporting_mta)}",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
    ]
    for r in recipients:
        lines.append(f"Your message to <{r.final_recipient}> "
                     f"{_SAYS.get(r.action, _SAYS['failed'])}.")
    lines += ["", _field(explanation), "", f"--{boundary}",
              "Content-Type: message/delivery-status", "",
              # RFC 3464 §2.2 per-message fields
              f"Reporting-MTA: dns; {reporting_mta}"]
    if envid is not None:
        lines.append(f"Original-Envelope-Id: {_field(envid)}")
    lines.append(f"Arrival-Date: {email.utils.formatdate(arrival)}")
    for r in recipients:
        # RFC 3464 §2.3 per-recipient fields, each group after a blank line
        lines.append("")
        if r.original_recipient:
            lines.append(f"Original-Recipient: {_field(r.original_recipient)}")
        lines += [f"Final-Recipient: rfc822; {r.final_recipient}", f"Action: {r.action}",
                  f"Status: {r.status}"]
        if r.remote_mta:
            lines.append(f"Remote-MTA: dns; {_field(r.remote_mta)}")
        if r.diagnostic:
            lines.append(f"Diagnostic-Code: smtp; {_field(r.diagnostic)}")
        lines.append("Last-Attempt-Date: "
                     f"{email.utils.formatdate(now if r.last_attempt is None else r.last_attempt)}")
        if r.will_retry_until is not None:
            lines.append(f"Will-Retry-Until: {email.utils.formatdate(r.will_retry_until)}")
    full = ret == "FULL" and action == "failed"
    lines += ["", f"--{boundary}",
              "Content-Type: message/rfc822" if full else "Content-Type: text/rfc822-headers",
              "", ""]
    text = "\r\n".join(lines).encode("utf-8")
    if full:
        body = original if original.endswith(b"\r\n") else original + b"\r\n"
    else:
        body = rfc5322.header_block(original).rstrip(b"\r\n") + b"\r\n"
    return text + body + f"\r\n--{boundary}--\r\n".encode("ascii")


def build_dsn(*, reporting_mta: str, mail_from: str, rcpt: str, original: bytes,
              action: str, status: str, diagnostic: str | None, remote_mta: str | None,
              arrival: float, explanation: str, now: float | None = None,
              envid: str | None = None, ret: str | None = None,
              original_recipient: str | None = None,
              will_retry_until: float | None = None) -> bytes:
    """A report for one recipient (the queue's reports name one row each)."""
    return build_report(
        reporting_mta=reporting_mta, mail_from=mail_from, original=original,
        recipients=[RecipientReport(rcpt, action, status, original_recipient, remote_mta,
                                    diagnostic, will_retry_until=will_retry_until)],
        arrival=arrival, explanation=explanation, envid=envid, ret=ret, now=now)
