"""``mss report --month YYYY-MM --format csv|json``: the month's indicators for the national
agency and the operator's customers, computed from the audit journal only (docs/report.md).

Counted from ``audit_log`` rows, never from content (no subject, no body: the journal holds
none): mailboxes by type and state at the end of the month (every successful
``admin.mailbox.add``, ``admin.mailbox.disable`` and ``admin.keys.shred`` up to then, and
the lifecycle's: suspend, resume, enable, rename, delete, undelete, ``mailbox.purge``,
which removes the mailbox from the count), messages sent
(submission and relay ``smtp.message.accepted`` by the sender's domain, ``queue.delivered``
by the peer operator's certificate DN or, without one, the recipient's domain) and received
(MX ``smtp.message.accepted`` by the sender's domain and by the peer's DN, from the
session's ``smtp.tls`` record), logins per protocol, method and outcome (``smtp.auth``,
``imap.login``, ``portal.login``), refusals per event and reason code.

One row format for both outputs: ``month, section, item, qualifier, count``; CSV with a
header line, JSON a list of objects. The pure part (:func:`indicators`) takes rows as
:func:`audit.journal.query` gives them and is tested on a journal of known counts.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

COLUMNS = ("month", "section", "item", "qualifier", "count")
MAILBOX_EVENTS = ("admin.mailbox.add", "admin.mailbox.disable", "admin.keys.shred",
                  # issue 16: the lifecycle (mss/lifecycle_cli.py)
                  "admin.mailbox.suspend", "admin.mailbox.resume", "admin.mailbox.enable",
                  "admin.mailbox.rename", "admin.mailbox.delete", "admin.mailbox.undelete",
                  "mailbox.purge")
_STATE_AFTER = MappingProxyType({  # a successful record -> the mailbox's state after it
    "admin.mailbox.disable": "disabled", "admin.keys.shred": "disabled",
    "admin.mailbox.suspend": "suspended", "admin.mailbox.resume": "enabled",
    "admin.mailbox.enable": "enabled", "admin.mailbox.delete": "deleting"})
LOGIN_EVENTS = MappingProxyType({"smtp.auth": "smtp", "imap.login": "imap",
                                 "portal.login": "portal"})
REFUSAL_EVENTS = ("connection.refused", "limit.exceeded", "smtp.sender.refused",
                  "smtp.recipient.refused", "smtp.message.refused", "smtp.timeout",
                  "portal.refused")
OUTCOMES = MappingProxyType({0: "success", 4: "refused", 8: "failure", 12: "error"})
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_CODE = re.compile(r"^[A-Za-z0-9_.\- ]{1,64}$")


class ReportError(ValueError):
    """Bad input (the CLI prints it on one line, exit 2)."""


@dataclass(frozen=True)
class Month:
    name: str  # YYYY-MM
    since: str  # ISO 8601 UTC, included
    until: str  # the next month's first instant, excluded

    @classmethod
    def parse(cls, text: str) -> Month:
        match = _MONTH.match(text)
        if match is None:
            raise ReportError(f"--month {text!r}: expected YYYY-MM (e.g. 2026-11)")
        year, month = int(match[1]), int(match[2])
        after = (year + 1, 1) if month == 12 else (year, month + 1)
        return cls(text, f"{year:04d}-{month:02d}-01T00:00:00.000000Z",
                   f"{after[0]:04d}-{after[1]:02d}-01T00:00:00.000000Z")


def _domain(address: str | None) -> str:
    return address.rsplit("@", 1)[1].lower() if address and "@" in address else "(none)"


def reason_code(row: Mapping[str, Any]) -> str:
    """A refusal's code: ``detail.check`` when the record has one, else its reason up to
    the first colon (what follows may name an address or a DN); free text is "other"."""
    detail = row.get("detail") or {}
    check = detail.get("check") if isinstance(detail, dict) else None
    code = str(check or (row.get("reason") or "").split(":", 1)[0]).strip()
    return code if _CODE.match(code) else "other"


def login_method(row: Mapping[str, Any]) -> str:
    detail = row.get("detail") or {}
    method = detail.get("method") or detail.get("mechanism") or "password"
    return str(method).lower()[:32]


def indicators(month: str, mailbox_rows: Iterable[Mapping[str, Any]],
               rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The report's rows: *mailbox_rows* are every mailbox record up to the month's end,
    *rows* every record of the month (oldest first both)."""
    kinds: dict[str, str] = {}
    state: dict[str, str] = {}
    before_delete: dict[str, str] = {}  # undelete restores it
    for r in mailbox_rows:
        address, event = r.get("mailbox"), r["event"]
        if not address or r["outcome"] != 0:
            continue
        if event == "admin.mailbox.add":
            kinds[address] = str((r.get("detail") or {}).get("type", "?"))
            state[address] = "enabled"
        elif address not in state:
            continue
        elif event == "mailbox.purge":
            del state[address], kinds[address]
        elif event == "admin.mailbox.rename":
            new = str((r.get("detail") or {}).get("new_address", address))
            state[new], kinds[new] = state.pop(address), kinds.pop(address)
        elif event == "admin.mailbox.undelete":
            state[address] = before_delete.pop(address, "enabled")
        elif event in _STATE_AFTER:
            if event == "admin.mailbox.delete":
                before_delete[address] = state[address]
            state[address] = _STATE_AFTER[event]
    counts: Counter[tuple[str, str, str]] = Counter(
        ("mailboxes", kinds[a], s) for a, s in state.items())
    peers: dict[str, str] = {}  # MX session -> the presented certificate's DN
    for r in rows:
        event, listener = r["event"], r.get("listener") or ""
        detail = r.get("detail") or {}
        if event == "smtp.tls" and listener == "mx" and detail.get("peer_dn"):
            peers[str(r.get("session"))] = str(detail["peer_dn"])
        elif event == "smtp.message.accepted":
            if listener == "mx":
                counts["received_by_domain", _domain(r.get("mail_from")), ""] += 1
                peer = peers.get(str(r.get("session")), "(unknown)")
                counts["received_from_peer", peer, ""] += 1
            else:
                counts["sent_by_domain", _domain(r.get("mail_from")), listener] += 1
        elif event == "queue.delivered":
            counts["sent_to_peer", str(detail.get("peer_dn") or _domain(r.get("rcpt"))),
                   ""] += 1
        elif event in LOGIN_EVENTS:
            counts["logins", f"{LOGIN_EVENTS[event]}/{login_method(r)}",
                   OUTCOMES.get(int(r["outcome"]), str(r["outcome"]))] += 1
        elif event in REFUSAL_EVENTS:
            counts["refusals", event, reason_code(r)] += 1
    return [{"month": month, "section": s, "item": i, "qualifier": q, "count": n}
            for (s, i, q), n in sorted(counts.items())]


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=2) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def journal_rows(conn: Any, month: Month) -> tuple[Iterator[dict[str, Any]],
                                                   Iterator[dict[str, Any]]]:
    """The two streams :func:`indicators` reads, from the database (streamed)."""
    from sqlalchemy import select

    from mss import db

    t = db.audit_log
    columns = (t.c.event, t.c.outcome, t.c.listener, t.c.session, t.c.mail_from, t.c.rcpt,
               t.c.mailbox, t.c.reason, t.c.detail)
    streamed = conn.execution_options(stream_results=True, yield_per=2000)

    def rows(stmt: Any) -> Iterator[dict[str, Any]]:
        for row in streamed.execute(stmt):
            out = dict(row._mapping)
            out["detail"] = json.loads(out["detail"]) if out["detail"] else {}
            yield out

    mailboxes = rows(select(*columns).where(t.c.event.in_(MAILBOX_EVENTS),
                                            t.c.ts < month.until).order_by(t.c.id))
    month_rows = rows(select(*columns).where(t.c.ts >= month.since, t.c.ts < month.until)
                      .order_by(t.c.id))
    return mailboxes, month_rows


def run_report(ctx: Any, month_text: str, fmt: str) -> None:
    """The command: one read transaction, the rows printed, ``audit.read`` recorded."""
    import sys

    from audit.events import Event
    from audit.journal import AuditRecord
    from mss.cli_support import actor, fail, node

    if fmt not in ("csv", "json"):
        fail(f"--format {fmt!r}: expected csv or json")
    try:
        month = Month.parse(month_text)
    except ReportError as exc:
        fail(str(exc))
    with node(ctx) as app:
        with app.reader.connect() as conn:
            mailboxes, rows = journal_rows(conn, month)
            result = indicators(month.name, mailboxes, rows)
        app.audit(AuditRecord(Event.AUDIT_READ, actor=actor(),
                              detail={"report": month.name, "format": fmt,
                                      "rows": len(result)}))
    sys.stdout.write(render(result, fmt))
