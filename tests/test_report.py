"""``mss report`` (mss/report.py, issue 17 #4): the month's indicators from the audit
journal, on a journal this test writes with known counts (the real CLI reads it)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import pytest

from audit.events import Event, Outcome
from audit.journal import AuditRecord, append
from mss.app import open_app
from mss.report import Month, ReportError, reason_code
from tests.node import Node, make_node

D = "hopital.test"
DN_A, DN_B = "CN=mx.operator-a.fr,C=FR", "CN=mx.operator-b.fr,C=FR"


def test_month_bounds_and_reason_codes() -> None:
    m = Month.parse("2020-12")
    assert (m.since, m.until) == ("2020-12-01T00:00:00.000000Z", "2021-01-01T00:00:00.000000Z")
    for bad in ("2020-13", "2020-1", "20-11", "2020-11-01", ""):
        with pytest.raises(ReportError):
            Month.parse(bad)
    assert reason_code({"reason": "dn_not_listed: CN=x", "detail": {}}) == "dn_not_listed"
    assert reason_code({"reason": "x", "detail": {"check": "header_invalid"}}) == "header_invalid"
    assert reason_code({"reason": "<a@b> {weird}", "detail": {}}) == "other"


def at(day: int, month: str = "2020-11") -> str:
    return f"{month}-{day:02d}T10:00:00.000000Z"


def journal() -> list[AuditRecord]:
    """October: 3 mailboxes added, one disabled; November: one added, one shredded, the
    traffic below; December: one disabled (after the month: not counted)."""
    r = AuditRecord
    oct_, dec = "2020-10", "2020-12"
    records = [
        r(Event.ADMIN_MAILBOX_ADD, mailbox=f"a@{D}", detail={"type": "PER"}, ts=at(1, oct_)),
        r(Event.ADMIN_MAILBOX_ADD, mailbox=f"b@{D}", detail={"type": "PER"}, ts=at(1, oct_)),
        r(Event.ADMIN_MAILBOX_ADD, mailbox=f"o@{D}", detail={"type": "ORG"}, ts=at(1, oct_)),
        r(Event.ADMIN_MAILBOX_DISABLE, mailbox=f"b@{D}", ts=at(2, oct_)),
        r(Event.SMTP_MESSAGE_ACCEPTED, listener="mx", session="s0", mail_from="x@a.fr",
          ts=at(3, oct_)),
        r(Event.ADMIN_MAILBOX_ADD, mailbox=f"app@{D}", detail={"type": "APP"}, ts=at(1)),
        r(Event.ADMIN_KEYS_SHRED, mailbox=f"a@{D}", ts=at(2)),
        r(Event.ADMIN_KEYS_SHRED, Outcome.MINOR_FAILURE, mailbox=f"o@{D}", ts=at(2)),
        # received: two messages from operator A in one session, one from B
        r(Event.SMTP_TLS, listener="mx", session="s1", detail={"peer_dn": DN_A}, ts=at(3)),
        r(Event.SMTP_MESSAGE_ACCEPTED, listener="mx", session="s1",
          mail_from="dr.x@operator-a.fr", detail={"size": 10}, ts=at(3)),
        r(Event.SMTP_MESSAGE_ACCEPTED, listener="mx", session="s1",
          mail_from="dr.y@operator-a.fr", ts=at(4)),
        r(Event.SMTP_TLS, listener="mx", session="s2", detail={"peer_dn": DN_B}, ts=at(4)),
        r(Event.SMTP_MESSAGE_ACCEPTED, listener="mx", session="s2",
          mail_from="z@operator-b.fr", ts=at(4)),
        # sent: three submitted, one relayed; delivered to peers
        *(r(Event.SMTP_MESSAGE_ACCEPTED, listener="submission", session=f"u{i}",
            mail_from=f"app@{D}", ts=at(5)) for i in range(3)),
        r(Event.SMTP_MESSAGE_ACCEPTED, listener="relay", session="r1",
          mail_from="lab@clinique.test", ts=at(5)),
        *(r(Event.QUEUE_DELIVERED, rcpt=f"p{i}@operator-a.fr", detail={"peer_dn": DN_A},
            ts=at(6)) for i in range(2)),
        r(Event.QUEUE_DELIVERED, rcpt="q@relayed.fr", detail={"host": "mx.relayed.fr"},
          ts=at(6)),
        # logins
        *(r(Event.SMTP_AUTH, detail={"mechanism": "PLAIN", "method": "password"}, ts=at(7))
          for _ in range(2)),
        r(Event.SMTP_AUTH, Outcome.SERIOUS_FAILURE, detail={"mechanism": "PLAIN",
                                                          "method": "password"}, ts=at(7)),
        r(Event.SMTP_AUTH, Outcome.MINOR_FAILURE, reason="throttled",
          detail={"mechanism": "LOGIN"}, ts=at(7)),
        r(Event.IMAP_LOGIN, detail={"method": "app-password"}, ts=at(8)),
        r(Event.IMAP_LOGIN, detail={"mechanism": "OAUTHBEARER", "method": "oauthbearer"},
          ts=at(8)),
        r(Event.IMAP_LOGIN, Outcome.SERIOUS_FAILURE, detail={"mechanism": "EXTERNAL",
                                                           "method": "external"}, ts=at(8)),
        # refusals
        *(r(Event.SMTP_SENDER_REFUSED, reason=f"dn_not_listed: {DN_B}",
            detail={"check": "dn_not_listed", "peer_dn": DN_B}, ts=at(9)) for _ in range(2)),
        r(Event.LIMIT_EXCEEDED, reason="messages", ts=at(9)),
        r(Event.CONNECTION_REFUSED, reason="max_connections_per_address", ts=at(9)),
        r(Event.SMTP_RECIPIENT_REFUSED, reason="outside the trust space: x@y.fr", ts=at(9)),
        # after the month
        r(Event.ADMIN_MAILBOX_DISABLE, mailbox=f"o@{D}", ts=at(1, dec)),
        r(Event.SMTP_MESSAGE_ACCEPTED, listener="submission", mail_from=f"app@{D}",
          ts=at(1, dec)),
    ]
    return records


EXPECTED = [  # section, item, qualifier, count (sorted as the report sorts)
    ("logins", "imap/app-password", "success", 1),
    ("logins", "imap/external", "failure", 1),
    ("logins", "imap/oauthbearer", "success", 1),
    ("logins", "smtp/login", "refused", 1),
    ("logins", "smtp/password", "failure", 1),
    ("logins", "smtp/password", "success", 2),
    ("mailboxes", "APP", "enabled", 1),
    ("mailboxes", "ORG", "enabled", 1),
    ("mailboxes", "PER", "disabled", 2),
    ("received_by_domain", "operator-a.fr", "", 2),
    ("received_by_domain", "operator-b.fr", "", 1),
    ("received_from_peer", DN_A, "", 2),
    ("received_from_peer", DN_B, "", 1),
    ("refusals", "connection.refused", "max_connections_per_address", 1),
    ("refusals", "limit.exceeded", "messages", 1),
    ("refusals", "smtp.recipient.refused", "outside the trust space", 1),
    ("refusals", "smtp.sender.refused", "dn_not_listed", 2),
    ("sent_by_domain", "clinique.test", "relay", 1),
    ("sent_by_domain", D, "submission", 3),
    ("sent_to_peer", DN_A, "", 2),
    ("sent_to_peer", "relayed.fr", "", 1),
]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    node = make_node(tmp_path_factory.mktemp("report"))
    app = open_app(node.config)
    try:
        with app.engine.begin() as conn:
            append(conn, journal())
    finally:
        app.close()
    yield node


def test_report_csv_and_json_from_a_known_journal(node: Node) -> None:
    out = node.cli("report", "--month", "2020-11", "--format", "csv").stdout
    lines = out.splitlines()
    assert lines[0] == "month,section,item,qualifier,count"
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["section"], r["item"], r["qualifier"], int(r["count"])) for r in rows] == EXPECTED
    assert {r["month"] for r in rows} == {"2020-11"}
    as_json = json.loads(node.cli("report", "--month", "2020-11", "--format", "json").stdout)
    assert [(r["section"], r["item"], r["qualifier"], r["count"]) for r in as_json] == EXPECTED
    assert "subject" not in out.lower()
    # the read is audited; a month without records gives the header only
    reads = [r for r in node.audit("--event", "audit.read")
             if (r["detail"] or {}).get("report") == "2020-11"]  # type: ignore[union-attr]
    assert len(reads) == 2
    empty = node.cli("report", "--month", "2019-01", "--format", "csv").stdout
    assert empty == "month,section,item,qualifier,count\n"


@pytest.mark.parametrize("args, message", [
    (("--month", "2020-13"), "--month '2020-13': expected YYYY-MM"),
    (("--month", "2020-11", "--format", "xml"), "--format 'xml': expected csv or json"),
])
def test_report_bad_input_is_one_line(node: Node, args: tuple[str, ...], message: str) -> None:
    proc = node.cli("report", *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
