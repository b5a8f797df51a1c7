"""Delivery status notifications (issue 18 part 1; RFC 3461, 3464, 3463, 2034, 6522).

Pure parsers and builder first; then one node driven with smtplib (parameters on the wire,
enhanced codes, the ``delivered`` report of a local delivery); then two mss operators
(tests/outbound_pair.py): the parameters passed to a DSN-capable peer and its report
coming back, ``delayed`` after a short configured delay, ``failed`` with RET=FULL, and
NOTIFY=NEVER. Every report is parsed back with Python's ``email`` and its
``message/delivery-status`` fields compared exactly. (Postfix as the peer:
tests/test_dsn_postfix.py.)
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import smtplib
import ssl
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mss.config import load_config
from mss.dsn import (
    DsnError,
    RecipientReport,
    build_report,
    parse_mail_params,
    parse_rcpt_params,
    wants,
    xtext_decode,
    xtext_encode,
)
from proxy.smtp.protocol import with_enhanced_code
from tests.dsn_reports import parse, status_fields
from tests.node import DOMAIN, PASSWORD, Node, make_node, read_all
from tests.outbound_pair import (
    A_DOMAIN,
    B_DOMAIN,
    HOSPITAL_DOMAIN,
    Pair,
    make_pair,
    message,
    with_tag,
)

ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"


def reports(node: Node, address: str, tag: str) -> list[bytes]:
    """The reports in *address*'s INBOX about the message of *tag*."""
    return [m for m in with_tag(read_all(node, address), tag) if b"multipart/report" in m]


def without_dates(fields: dict[str, str]) -> dict[str, str]:
    """*fields* with the date fields checked (RFC 5322 dates) and left out."""
    out = dict(fields)
    for name in ("Arrival-Date", "Last-Attempt-Date", "Will-Retry-Until"):
        if name in out:
            assert email.utils.parsedate_to_datetime(out.pop(name)) is not None
    return out


# --------------------------------------------------------------------------- pure

@given(st.text(max_size=40))
def test_xtext_round_trip(value: str) -> None:
    encoded = xtext_encode(value)
    assert all("!" <= c <= "~" and c != "=" for c in encoded)
    if all(ord(c) < 128 for c in value):
        assert xtext_decode(encoded) == value


def test_xtext_examples() -> None:
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext_decode("QQ+2Babc") == "QQ+abc"
    for bad in ("a+2b", "a+G0", "a+2", "a=b", "a\x7fb"):
        with pytest.raises(DsnError):
            xtext_decode(bad)


def test_mail_and_rcpt_parameters() -> None:
    params, rest = parse_mail_params(["ret=hdrs", "ENVID=QQ+2Babc", "SIZE=10"])
    assert (params.ret, params.envid, rest) == ("HDRS", "QQ+abc", ["SIZE=10"])
    assert params.esmtp() == ["RET=HDRS", "ENVID=QQ+2Babc"]
    rcpt, rest = parse_rcpt_params(["NOTIFY=delay,success", "ORCPT=RFC822;bob+40b.test"])
    assert (rcpt.notify, rcpt.orcpt, rest) == ("SUCCESS,DELAY", "rfc822;bob@b.test", [])
    assert rcpt.esmtp() == ["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;bob@b.test"]
    assert rcpt.original_recipient == "rfc822; bob@b.test"
    for bad in (["RET=PART"], ["RET=FULL", "RET=HDRS"], ["ENVID=" + "x" * 101],
                ["ENVID=a+0A"], ["ENVID="], ["RET"]):
        with pytest.raises(DsnError):
            parse_mail_params(bad)
    for bad in (["NOTIFY=NEVER,SUCCESS"], ["NOTIFY=ALWAYS"], ["NOTIFY=SUCCESS,SUCCESS"],
                ["ORCPT=rfc822"], ["ORCPT=;a@b"], ["ORCPT=rfc822;"],
                ["ORCPT=rfc822;" + "a" * 500], ["NOTIFY=FAILURE", "NOTIFY=DELAY"]):
        with pytest.raises(DsnError):
            parse_rcpt_params(bad)


def test_notify_semantics() -> None:
    """RFC 3461 §4.1: NEVER none; absent: failures and delays (our choice), no success."""
    assert not any(wants("NEVER", k) for k in ("SUCCESS", "FAILURE", "DELAY"))
    assert [wants(None, k) for k in ("SUCCESS", "FAILURE", "DELAY")] == [False, True, True]
    assert [wants("SUCCESS", k) for k in ("SUCCESS", "FAILURE", "DELAY")] == [
        True, False, False]


def test_enhanced_codes_added_where_missing() -> None:
    assert with_enhanced_code("250 OK") == "250 2.0.0 OK"
    assert with_enhanced_code('500 Error: command "X" not recognized') == \
        '500 5.5.2 Error: command "X" not recognized'
    assert with_enhanced_code("503 Error: need MAIL command") == \
        "503 5.5.1 Error: need MAIL command"
    assert with_enhanced_code("250-HELP") == "250-2.0.0 HELP"
    for kept in ("250 2.1.5 Recipient OK", "354 End data with <CR><LF>.<CR><LF>", "334 ",
                 "421 4.7.0 Too many errors"):
        assert with_enhanced_code(kept) == kept


def test_report_shape_full_and_headers() -> None:
    original = (b"From: <a@x.test>\r\nMessage-ID: <1@x>\r\nSubject: s\r\n\r\n"
                b"secret body\r\n")
    rcpts = [RecipientReport("b@y.test", "failed", "5.1.1", "rfc822; B@y.test",
                             "mx.y.test", "550 5.1.1 unknown")]
    full = build_report(reporting_mta="mx.x.test", mail_from="a@x.test", original=original,
                        recipients=rcpts, arrival=0.0, explanation="e", envid="id 1",
                        ret="FULL")
    per_message, per_rcpt = status_fields(full)
    assert without_dates(per_message) == {"Reporting-MTA": "dns; mx.x.test",
                                          "Original-Envelope-Id": "id 1"}
    assert without_dates(per_rcpt[0]) == {
        "Original-Recipient": "rfc822; B@y.test", "Final-Recipient": "rfc822; b@y.test",
        "Action": "failed", "Status": "5.1.1", "Remote-MTA": "dns; mx.y.test",
        "Diagnostic-Code": "smtp; 550 5.1.1 unknown"}
    returned = list(parse(full).iter_parts())[2]
    assert returned.get_content_type() == "message/rfc822" and b"secret body" in full
    headers = build_report(reporting_mta="mx.x.test", mail_from="a@x.test", original=original,
                           recipients=rcpts, arrival=0.0, explanation="e", ret="HDRS")
    assert list(parse(headers).iter_parts())[2].get_content_type() == "text/rfc822-headers"
    assert b"secret body" not in headers and b"Message-ID: <1@x>" in headers


# --------------------------------------------------------------------------- one node

@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = make_node(tmp_path_factory.mktemp("dsn-node"))
    n.start()
    try:
        yield n
    finally:
        n.stop()


def _login(node: Node, user: str = ALICE) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=10)
    client.starttls(context=node.client_context())
    client.login(user, PASSWORD)
    return client


def test_replies_carry_enhanced_codes(node: Node) -> None:
    """RFC 2034 §3: after EHLO offered ENHANCEDSTATUSCODES, aiosmtpd's own replies too."""
    client = _login(node)
    try:
        assert client.noop() == (250, b"2.0.0 OK")
        assert client.rset() == (250, b"2.0.0 OK")
        assert client.docmd("FOO") == (500, b'5.5.2 Error: command "FOO" not recognized')
        assert client.docmd("RCPT TO:<bob@demo.mssante.fr>")[1].startswith(b"5.5.1 ")
        assert client.mail(ALICE)[0] == 250
        assert client.docmd("MAIL FROM:<alice@demo.mssante.fr>")[1].startswith(b"5.5.1 ")
        assert client.rcpt(BOB, ["FOO=1"])[:1] == (555,)
        assert client.rcpt(BOB, ["FOO=1"])[1].startswith(b"5.5.4 ")
    finally:
        assert client.quit()[1].startswith(b"2.0.0")


def test_parameters_are_read_after_authentication(node: Node) -> None:
    """Before AUTH a MAIL with a bad DSN parameter gets 530, not 501: nothing of the
    transaction is looked at before the login."""
    client = smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=10)
    try:
        client.starttls(context=node.client_context())
        client.ehlo("client.example")
        assert client.mail(ALICE, ["RET=PART"]) == (530, b"5.7.0 Authentication required")
    finally:
        client.quit()


@pytest.mark.parametrize("mail, rcpt", [
    (["RET=PART"], []), (["RET=FULL", "RET=HDRS"], []), (["ENVID=a+zz"], []),
    ([], ["NOTIFY=NEVER,SUCCESS"]), ([], ["NOTIFY=SOMETIMES"]), ([], ["ORCPT=rfc822"]),
    ([], ["ORCPT=rfc822;bob", "ORCPT=rfc822;bob"]),
])
def test_bad_dsn_parameters_get_501_5_5_4(node: Node, mail: list[str],
                                          rcpt: list[str]) -> None:
    client = _login(node)
    try:
        code, reply = client.mail(ALICE, mail)
        if not mail:
            assert code == 250
            code, reply = client.rcpt(BOB, rcpt)
        assert (code, reply[:26]) == (501, b"5.5.4 Invalid DSN paramete")
        if not mail:  # the transaction goes on
            assert client.rcpt(BOB)[0] == 250
        else:
            assert client.mail(ALICE)[0] == 250
    finally:
        client.quit()


def test_local_delivery_sends_delivered_report(node: Node) -> None:
    """NOTIFY=SUCCESS on a hosted recipient: a "delivered" report in the sender's INBOX,
    committed with the message (so present at the 250); NOTIFY absent or NEVER: none."""
    tag, plain, never = (f"loc{n}{time.time_ns()}" for n in "abc")
    client = _login(node)
    try:
        client.sendmail(ALICE, [BOB], message(ALICE, BOB, tag),
                        mail_options=["RET=FULL", "ENVID=env+2B1"],
                        rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;Bob+40demo.mssante.fr"])
        client.sendmail(ALICE, [BOB], message(ALICE, BOB, plain))
        client.sendmail(ALICE, [BOB], message(ALICE, BOB, never),
                        rcpt_options=["NOTIFY=NEVER"])
    finally:
        client.quit()
    found = reports(node, ALICE, tag)
    assert len(found) == 1
    hostname = load_config(node.config).smtp.hostname
    per_message, per_rcpt = status_fields(found[0])
    assert without_dates(per_message) == {"Reporting-MTA": f"dns; {hostname}",
                                          "Original-Envelope-Id": "env+1"}
    assert [without_dates(r) for r in per_rcpt] == [{
        "Original-Recipient": "rfc822; Bob@demo.mssante.fr",
        "Final-Recipient": f"rfc822; {BOB}", "Action": "delivered", "Status": "2.0.0"}]
    parsed = parse(found[0])
    assert parsed["To"] == ALICE and parsed["Auto-Submitted"] == "auto-replied"
    assert b"Bonjour" not in found[0]  # RET=FULL is for failures only (RFC 3461 §4.3)
    assert with_tag(read_all(node, BOB), tag)
    assert not reports(node, ALICE, plain) and not reports(node, ALICE, never)
    rows = node.wait_audit(lambda r: r["event"] == "delivery.local"
                           and (r.get("detail") or {}).get("dsn_action") == "delivered"  # type: ignore[union-attr]
                           and r["rcpt"] == ALICE)
    assert rows


def test_no_report_for_a_report(node: Node) -> None:
    tag = f"rep{time.time_ns()}"
    report = build_report(reporting_mta="x.test", mail_from=BOB, original=message(
        BOB, ALICE, tag), recipients=[RecipientReport(ALICE, "failed", "5.0.0")],
        arrival=0.0, explanation="e")
    report = report.replace(b"From: Mail Delivery System <mailer-daemon@x.test>",
                            f"From: <{ALICE}>".encode())
    client = _login(node)
    try:
        client.sendmail(ALICE, [BOB], report, rcpt_options=["NOTIFY=SUCCESS"])
    finally:
        client.quit()
    assert with_tag(read_all(node, BOB), tag)
    assert not reports(node, ALICE, tag)


# --------------------------------------------------------------------------- two operators

@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Rows that fail every time expire after 4 attempts (about 2.4 s); a "delayed"
    report is due 0.8 s after queueing (attempt 3 at the latest), once."""
    p = make_pair(tmp_path_factory.mktemp("dsn-pair"), max_attempts=4, delay_warning=0.8,
                  delay_warning_repeat=3600.0)
    for n in p.nodes():
        n.start()
    yield p
    p.close()


def _submit(pair: Pair, tag: str, rcpts: dict[str, list[str]],
            mail_options: list[str] | None = None) -> None:
    """One message from alice@A, each recipient with its own RCPT parameters."""
    a = pair.a
    sender = f"alice@{A_DOMAIN}"
    ctx = ssl.create_default_context(cafile=str(pair.pki / "root.crt"))
    ctx.check_hostname = False
    client = smtplib.SMTP(a.host, a.ports["submission"], timeout=30)
    try:
        client.starttls(context=ctx)
        client.login(sender, PASSWORD)
        assert client.mail(sender, mail_options or [])[0] == 250
        for rcpt, options in rcpts.items():
            assert client.rcpt(rcpt, options)[0] == 250, rcpt
        assert client.data(message(sender, next(iter(rcpts)), tag))[0] == 250
    finally:
        client.quit()


def _wait(pair: Pair, found: object, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and not found():  # type: ignore[operator]
        time.sleep(0.1)


def test_parameters_reach_the_peer_and_its_delivered_report_comes_back(pair: Pair) -> None:
    """A passes NOTIFY, ORCPT, RET, ENVID to B (whose EHLO offers DSN); B delivers and
    sends the "delivered" report back through its queue (MAIL FROM:<>) to alice@A."""
    a, b = pair.nodes()
    tag = f"pair{time.time_ns()}"
    bob = f"bob@{B_DOMAIN}"
    _submit(pair, tag, {bob: ["NOTIFY=SUCCESS,FAILURE", f"ORCPT=rfc822;{bob}"]},
            ["RET=HDRS", "ENVID=QQ+2Babc"])
    found: list[bytes] = []

    def arrived() -> bool:
        found[:] = reports(a, f"alice@{A_DOMAIN}", tag)
        return bool(found)
    _wait(pair, arrived, 2 * pair.schedule.first_try())
    assert len(found) == 1
    per_message, per_rcpt = status_fields(found[0])
    assert without_dates(per_message) == {
        "Reporting-MTA": f"dns; {load_config(b.config).smtp.hostname}",
        "Original-Envelope-Id": "QQ+abc"}
    assert [without_dates(r) for r in per_rcpt] == [{
        "Original-Recipient": f"rfc822; {bob}", "Final-Recipient": f"rfc822; {bob}",
        "Action": "delivered", "Status": "2.0.0"}]
    assert with_tag(read_all(b, bob), tag)
    # B offered DSN (A's delivery record says so): A sent no "relayed" report of its own
    delivered = a.audit("--event", "queue.delivered")
    assert [r["detail"]["dsn"] for r in delivered if r["rcpt"] == bob] == [True]  # type: ignore[index]
    assert not [r for r in a.audit("--event", "delivery.")
                if (r.get("detail") or {}).get("dsn_action") == "relayed"]  # type: ignore[union-attr]


def test_delayed_then_failed_and_notify_never(pair: Pair) -> None:
    """The institution's server (next hop 127.0.0.6) never answers: NOTIFY=DELAY,FAILURE
    gets one "delayed" report (delivery.delay_warning, not repeated within
    delay_warning_repeat) then the "failed" one when the row expires; NOTIFY=NEVER and
    NOTIFY=SUCCESS get nothing."""
    a = pair.a
    alice = f"alice@{A_DOMAIN}"
    told, never, success = (f"{u}@{HOSPITAL_DOMAIN}" for u in ("told", "never", "success"))
    tag = f"delay{time.time_ns()}"
    _submit(pair, tag, {told: ["NOTIFY=DELAY,FAILURE", f"ORCPT=rfc822;{told}"],
                        never: ["NOTIFY=NEVER"], success: ["NOTIFY=SUCCESS"]},
            ["ENVID=hosp1"])
    assert a.wait_audit(lambda r: r["event"] == "queue.expired"
                        and tag in str(r.get("message_id")), pair.schedule.expiry(), count=3)
    # the reports are committed with the rows' statuses: all there once the rows expired
    found = reports(a, alice, tag)
    actions = [status_fields(m)[1][0]["Action"] for m in found]
    assert sorted(actions) == ["delayed", "failed"]
    delayed = found[actions.index("delayed")]
    failed = found[actions.index("failed")]
    per_message, per_rcpt = status_fields(delayed)
    assert without_dates(per_message)["Original-Envelope-Id"] == "hosp1"
    fields = per_rcpt[0]
    assert "Will-Retry-Until" in fields and fields["Status"].startswith("4.")
    assert without_dates(fields)["Final-Recipient"] == f"rfc822; {told}"
    assert fields["Original-Recipient"] == f"rfc822; {told}"
    assert parse(delayed)["Subject"].startswith("Delayed message")
    failed_fields = without_dates(status_fields(failed)[1][0])
    assert (failed_fields["Action"], failed_fields["Status"]) == ("failed", "4.4.7")
    for quiet in (never, success):
        assert not [m for m in found if f"rfc822; {quiet}".encode() in m]


def test_failure_with_ret_full_returns_the_message(pair: Pair) -> None:
    """B refuses the recipient (550 5.1.1): the "failed" report carries the whole message
    (RET=FULL, message/rfc822) and the peer's reply."""
    a, b = pair.nodes()
    alice = f"alice@{A_DOMAIN}"
    rcpt = f"nobody{time.time_ns()}@{B_DOMAIN}"
    tag = f"full{time.time_ns()}"
    _submit(pair, tag, {rcpt: ["NOTIFY=FAILURE"]}, ["RET=FULL"])
    assert a.wait_audit(lambda r: r["event"] == "queue.bounced" and r["rcpt"] == rcpt,
                        pair.schedule.first_try())
    found = reports(a, alice, tag)
    assert len(found) == 1
    per_rcpt = without_dates(status_fields(found[0])[1][0])
    assert per_rcpt["Action"] == "failed" and per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    assert per_rcpt["Remote-MTA"].startswith("dns; mx.b.mssante.test")
    returned = list(parse(found[0]).iter_parts())[2]
    assert returned.get_content_type() == "message/rfc822"
    assert b"Bonjour." in found[0]
