"""Postfix (the Debian package) as a third operator of the trust space.

Our node (127.0.0.2) and a private Postfix instance (127.0.0.4, tests/postfix.py) share
a test PKI (trustspace/testpki.py) and a whitelist listing each one's certificate DN for
its domain; a DNS server on loopback serves Postfix's MX record. Postfix relays to our MX
presenting its client certificate (TLS level ``secure`` against the test root), and our
outbound queue delivers to Postfix, which requires and verifies our client certificate.
"""

from __future__ import annotations

import email
import email.policy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.dnsserver import DnsServer
from tests.node import Node, free_port, make_node, read_all, wait_for
from tests.outbound_pair import close_all, delivery_config, message, submit, with_tag
from tests.postfix import PeerRoute, Postfix, make_base, remove_base, skip_unless_usable
from tests.whitelist_fixtures import make_whitelist_xml
from trustspace.testpki import DEFAULT_SERVERS, ServerSpec, init_test_pki

OUR_DOMAIN = "a.mssante.test"
PF_DOMAIN = "pf.mssante.test"
OUR_HOST, PF_HOST = "127.0.0.2", "127.0.0.4"
# Postfix's certificate, listed for its domain, and one from the same PKI listed nowhere
PF_SPEC = ServerSpec("postfix", f"mx.{PF_DOMAIN}", "1750000005", "OPERATEUR POSTFIX",
                     "Paris (75)")
STRANGER_SPEC = ServerSpec("stranger", "mx.stranger.test", "1590000006", "OPERATEUR INCONNU",
                           "Nord (59)")
OUR_SPEC = next(s for s in DEFAULT_SERVERS if s.name == "operator-a")
# mail from Postfix to this address leaves through its transport presenting STRANGER_SPEC
STRANGER_RCPT = f"secretariat@{OUR_DOMAIN}"
# a domain whose MX is Postfix, but whose whitelist entry lists another operator's DN
MISLISTED_DOMAIN = "mislisted.mssante.test"
# a Postfix address accepted at RCPT, then aliased to a destination that fails: Postfix
# sends a delivery report (MAIL FROM:<>) to the sender
BROKEN_RCPT = f"broken@{PF_DOMAIN}"
# mail from Postfix to this address leaves through a transport presenting no certificate
NOCERT_RCPT = f"alice@{OUR_DOMAIN}"
LOST_DOMAIN = "lost.invalid"


@dataclass
class Peers:
    node: Node
    postfix: Postfix
    dns: DnsServer
    pki: Path
    port: int



@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    skip_unless_usable()
    base = tmp_path_factory.mktemp("postfix-interop")
    pki = base / "pki"
    init_test_pki(pki, (*DEFAULT_SERVERS, PF_SPEC, STRANGER_SPEC))
    dns = DnsServer().start()
    port = free_port(OUR_HOST, PF_HOST)
    for domain, host in ((OUR_DOMAIN, OUR_HOST), (PF_DOMAIN, PF_HOST)):
        dns.set(domain, "MX", [f"10 mx.{domain}."])
        dns.set(f"mx.{domain}", "A", [host])
    dns.set(MISLISTED_DOMAIN, "MX", [f"10 mx.{PF_DOMAIN}."])
    whitelist = base / "whitelist.xml"
    whitelist.write_bytes(make_whitelist_xml([(OUR_DOMAIN, OUR_SPEC.subject),
                                              (PF_DOMAIN, PF_SPEC.subject),
                                              (MISLISTED_DOMAIN, STRANGER_SPEC.subject)]))
    (base / "a").mkdir()
    tls = {"cert_file": pki / "operator-a.crt", "key_file": pki / "operator-a.key",
           "ca_file": pki / "root.crt"}
    node = make_node(base / "a", with_whitelist=False, domain=OUR_DOMAIN, host=OUR_HOST,
                     ports={"mx": port}, tls=tls,
                     extra_config=delivery_config(dns.port, port, max_attempts=30))
    node.cli("whitelist", "import", str(whitelist))
    postfix = Postfix(base=make_base(), domain=PF_DOMAIN, host=PF_HOST, port=port, pki=pki,
                      cert="postfix",
                      routes=[PeerRoute(OUR_DOMAIN, OUR_HOST, port, OUR_SPEC.fqdn)],
                      alt_transports={"stranger": "stranger", "nocert": ""},
                      address_transports={STRANGER_RCPT: "stranger", NOCERT_RCPT: "nocert"},
                      virtual_aliases={BROKEN_RCPT: f"gone@{LOST_DOMAIN}"},
                      transport_entries={LOST_DOMAIN: "error:5.2.1 mailbox disabled"})
    try:
        node.start()
        postfix.start()
        yield Peers(node, postfix, dns, pki, port)
    finally:
        postfix.stop()
        close_all([node], dns)
        remove_base(postfix.base)


def log_lines(postfix: Postfix, needle: str) -> list[str]:
    return [line for line in postfix.log().splitlines() if needle in line]


# --------------------------------------------------------------------------- Postfix -> us

def test_postfix_relays_to_our_mx_with_its_client_certificate(peers: Peers) -> None:
    node, postfix = peers.node, peers.postfix
    tag = f"pf2mss{time.time_ns()}"
    rcpt = f"bob@{OUR_DOMAIN}"
    postfix.sendmail(f"alice@{PF_DOMAIN}", [rcpt], message(f"alice@{PF_DOMAIN}", rcpt, tag))
    assert wait_for(lambda: with_tag(read_all(node, rcpt), tag), 60), postfix.log_tail()
    # Postfix verified our certificate (level "secure", test root) and its mail was sent
    assert log_lines(postfix, f"Verified TLS connection established to {OUR_HOST}")
    sent = [line for line in log_lines(postfix, "status=sent") if rcpt in line]
    assert sent and "250 2.0.0" in sent[-1]
    # our MX accepted it from the session whose TLS record carries Postfix's DN
    accepted = [r for r in node.audit("--event", "smtp.message.accepted")
                if r["message_id"] == f"<{tag}@test.example>"]
    assert accepted and accepted[0]["listener"] == "mx"
    assert accepted[0]["remote_addr"] == PF_HOST  # smtp_bind_address
    session = accepted[0]["session"]
    tls = [r for r in node.audit("--event", "smtp.tls") if r["session"] == session]
    assert tls and "CN=mx.pf.mssante.test" in str(tls[0]["detail"])
    assert "O=OPERATEUR POSTFIX" in str(tls[0]["detail"])
    stored = with_tag(read_all(node, rcpt), tag)[0]
    assert stored.startswith(b"Received: from mx.pf.mssante.test")  # our trace header
    assert b"\r\nReceived: by mx.pf.mssante.test (Postfix" in stored  # Postfix's own


def test_postfix_with_a_certificate_not_listed_is_refused_and_bounces(peers: Peers) -> None:
    node, postfix = peers.node, peers.postfix
    tag = f"stranger{time.time_ns()}"
    sender = f"alice@{PF_DOMAIN}"
    postfix.sendmail(sender, [STRANGER_RCPT], message(sender, STRANGER_RCPT, tag))
    # Postfix got 550 5.7.1 and bounced the message to its sender (a mailbox of its own)
    assert wait_for(lambda: with_tag(postfix.messages("alice"), tag), 60), postfix.log_tail()
    bounced = [line for line in log_lines(postfix, "status=bounced") if STRANGER_RCPT in line]
    assert bounced and "550 5.7.1" in bounced[-1]
    report = email.message_from_bytes(with_tag(postfix.messages("alice"), tag)[-1],
                                      policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert "5.7.1" in report.as_string()
    # the refusal is audited with the precise reason; nothing was stored
    refused = node.wait_audit(lambda r: r["event"] == "smtp.sender.refused"
                              and r["mail_from"] == sender
                              and "OPERATEUR INCONNU" in str(r["reason"]), 10)
    assert refused and f"is not listed for {PF_DOMAIN}" in str(refused[0]["reason"])
    assert not with_tag(read_all(node, STRANGER_RCPT), tag)


def test_postfix_without_a_client_certificate_is_refused(peers: Peers) -> None:
    """The usual Postfix mistake: smtp_tls_cert_file left empty."""
    node, postfix = peers.node, peers.postfix
    tag = f"nocert{time.time_ns()}"
    sender = f"bob@{PF_DOMAIN}"
    postfix.sendmail(sender, [NOCERT_RCPT], message(sender, NOCERT_RCPT, tag))

    def outcome() -> list[str]:
        return [line for line in log_lines(postfix, f"to=<{NOCERT_RCPT}>")
                if "status=bounced" in line or "status=sent" in line]

    assert wait_for(outcome, 60), postfix.log_tail()
    assert "status=bounced" in outcome()[-1] and "550 5.7.1" in outcome()[-1]
    assert wait_for(lambda: with_tag(postfix.messages("bob"), tag), 30)  # Postfix's DSN
    refused = node.wait_audit(lambda r: r["event"] == "smtp.sender.refused"
                              and r["mail_from"] == sender, 10)
    assert refused and "no client certificate" in str(refused[-1]["reason"])
    assert not with_tag(read_all(node, NOCERT_RCPT), tag)


# --------------------------------------------------------------------------- us -> Postfix

def test_our_queue_delivers_to_postfix_over_mutual_tls(peers: Peers) -> None:
    node, postfix = peers.node, peers.postfix
    tag = f"mss2pf{time.time_ns()}"
    rcpt = f"bob@{PF_DOMAIN}"
    submit(node, peers.pki, [rcpt], message(f"alice@{OUR_DOMAIN}", rcpt, tag))
    assert wait_for(lambda: with_tag(postfix.messages("bob"), tag), 60), postfix.log_tail()
    delivered = node.wait_audit(lambda r: r["event"] == "queue.delivered" and r["rcpt"] == rcpt)
    assert delivered and str(delivered[0]["reason"]).startswith("250")
    got = email.message_from_bytes(with_tag(postfix.messages("bob"), tag)[0],
                                   policy=email.policy.default)
    received = [str(h) for h in got.get_all("Received", [])]
    # Postfix's trace header: it required and verified our client certificate
    assert 'Client CN "mx.operator-a.test"' in received[0]
    assert "(verified OK)" in received[0]
    assert any("(mss)" in h for h in received[1:])  # ours, from submission
    assert log_lines(postfix, "Trusted TLS connection established from")


def test_postfix_refusing_a_recipient_bounces_with_its_reply(peers: Peers) -> None:
    node, postfix = peers.node, peers.postfix
    sender, rcpt = f"alice@{OUR_DOMAIN}", f"nobody@{PF_DOMAIN}"
    tag = f"pfunknown{time.time_ns()}"
    before = len(read_all(node, sender))
    submit(node, peers.pki, [rcpt], message(sender, rcpt, tag))
    bounced = node.wait_audit(lambda r: r["event"] == "queue.bounced" and r["rcpt"] == rcpt, 30)
    assert bounced and "550 5.1.1" in str(bounced[0]["reason"])  # Postfix's RCPT reply
    assert wait_for(lambda: len(read_all(node, sender)) > before)
    dsn = [m for m in read_all(node, sender) if f"rfc822; {rcpt}".encode() in m]
    assert dsn and b"Status: 5.1.1" in dsn[-1] and b"User unknown" in dsn[-1]
    assert log_lines(postfix, "User unknown in virtual mailbox table")


def test_postfix_with_a_dn_not_listed_for_the_domain_gets_nothing(peers: Peers) -> None:
    """MISLISTED_DOMAIN's MX is Postfix, whose certificate verifies, but the whitelist lists
    another DN for that domain: our queue closes the session before MAIL FROM."""
    node, postfix = peers.node, peers.postfix
    rcpt = f"bob@{MISLISTED_DOMAIN}"
    tag = f"mislisted{time.time_ns()}"
    submit(node, peers.pki, [rcpt], message(f"alice@{OUR_DOMAIN}", rcpt, tag))
    deferred = node.wait_audit(lambda r: r["event"] == "queue.deferred" and r["rcpt"] == rcpt,
                               30)
    assert deferred and f"is not listed for {MISLISTED_DOMAIN}" in str(deferred[0]["reason"])
    assert "OPERATEUR POSTFIX" in str(deferred[0]["reason"])
    assert not [line for line in postfix.log().splitlines() if rcpt in line]  # no RCPT seen
    queue_id = str(deferred[0]["detail"]["queue_id"])  # type: ignore[index]
    # settle it (it would retry until it expires), once the attempt's lease is released
    assert wait_for(lambda: node.cli("queue", "bounce", queue_id, check=False).returncode == 0,
                    30)


def test_postfix_delivery_report_reaches_our_sender(peers: Peers) -> None:
    """Postfix accepts the recipient, then fails delivery: its DSN, sent with MAIL FROM:<>
    and its operator certificate, must reach our sender's mailbox (RFC 5321 §6.1)."""
    node, postfix = peers.node, peers.postfix
    sender = f"bob@{OUR_DOMAIN}"
    tag = f"pfdsn{time.time_ns()}"
    submit(node, peers.pki, [BROKEN_RCPT], message(sender, BROKEN_RCPT, tag), sender=sender)
    assert node.wait_audit(lambda r: r["event"] == "queue.delivered"
                           and r["rcpt"] == BROKEN_RCPT, 30)

    def report() -> list[bytes]:
        return [m for m in read_all(node, sender)
                if b"multipart/report" in m and f"<{tag}@test.example>".encode() in m]

    def refused() -> list[str]:  # Postfix gave up on its report: no use waiting longer
        return [line for line in log_lines(postfix, f"to=<{sender}>")
                if "status=bounced" in line]

    wait_for(lambda: report() or refused(), 60)
    assert report(), postfix.log_tail()
    assert b"5.2.1" in report()[0] and b"MAILER-DAEMON@pf.mssante.test" in report()[0]


def tricky_message(sender: str, rcpt: str, tag: str) -> bytes:
    """About 1 MB of 8-bit text with lines a careless SMTP implementation mangles: a lone
    dot, leading dots (RFC 5321 §4.5.2 transparency), trailing spaces, long lines."""
    lines = [".", "..", ".leading dot", "é à ç ü ß € 😀", "trailing spaces   ", "",
             "y" * 998]
    body = "\r\n".join(lines * 2500) + "\r\n"
    return (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: test {tag}\r\n"
            f"Message-ID: <{tag}@test.example>\r\nDate: Mon, 23 Nov 2026 05:00:00 +0000\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n{body}").encode()


def body_of(raw: bytes) -> bytes:
    """The body with CRLF line ends (Postfix's Maildir files use LF)."""
    raw = raw.replace(b"\r\n", b"\n")
    return raw.split(b"\n\n", 1)[1].replace(b"\n", b"\r\n")


def test_content_survives_both_ways(peers: Peers) -> None:
    node, postfix = peers.node, peers.postfix
    tag_in, tag_out = f"bigin{time.time_ns()}", f"bigout{time.time_ns()}"
    ours, theirs = f"bob@{OUR_DOMAIN}", f"bob@{PF_DOMAIN}"
    sent_in = tricky_message(theirs, ours, tag_in)
    sent_out = tricky_message(ours, theirs, tag_out)
    assert len(sent_in) > 1_000_000
    postfix.sendmail(theirs, [ours], sent_in)
    submit(node, peers.pki, [theirs], sent_out, sender=ours)
    assert wait_for(lambda: with_tag(read_all(node, ours), tag_in), 60), postfix.log_tail()
    assert wait_for(lambda: with_tag(postfix.messages("bob"), tag_out), 60), postfix.log_tail()
    assert body_of(with_tag(read_all(node, ours), tag_in)[0]) == body_of(sent_in)
    assert body_of(with_tag(postfix.messages("bob"), tag_out)[0]) == body_of(sent_out)


def test_postfix_down_then_up_is_delivered_after_retry(peers: Peers) -> None:
    node, postfix = peers.node, peers.postfix
    rcpt = f"alice@{PF_DOMAIN}"
    tag = f"pfdown{time.time_ns()}"
    postfix.stop()
    try:
        submit(node, peers.pki, [rcpt], message(f"alice@{OUR_DOMAIN}", rcpt, tag))
        deferred = node.wait_audit(lambda r: r["event"] == "queue.deferred"
                                   and r["rcpt"] == rcpt, 20)
        assert deferred
    finally:
        postfix.start()
    assert wait_for(lambda: with_tag(postfix.messages("alice"), tag), 60), postfix.log_tail()
    assert node.wait_audit(lambda r: r["event"] == "queue.delivered" and r["rcpt"] == rcpt)
