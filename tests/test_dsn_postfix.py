"""Delivery status notifications with Postfix as the peer (issue 18 part 1).

Our node (127.0.47.2) and a private Postfix (127.0.47.4, tests/postfix.py) share a test
PKI and a whitelist, as in tests/test_postfix_interop.py. Postfix offers DSN on its MX
port; a second smtpd of the same instance (same host, another port) discards the DSN
keyword from its EHLO (``smtpd_discard_ehlo_keywords = dsn``): the institution's server
our node relays ``clinique.test`` to. Checked, each report parsed with ``email``:

- us -> Postfix with NOTIFY=SUCCESS: the parameters reach Postfix, whose "delivered"
  report comes back over mutual TLS to our sender's INBOX;
- us -> the server without DSN: our own "relayed" report;
- Postfix -> us (``sendmail -N success -V``): our "delivered" report reaches Postfix's
  sender through our queue (MAIL FROM:<>).
"""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mss.config import load_config
from tests.dnsserver import DnsServer
from tests.dsn_reports import status_fields
from tests.node import PASSWORD, Node, free_port, make_node, read_all, wait_for
from tests.outbound_pair import close_all, delivery_config, message, with_tag
from tests.postfix import PeerRoute, Postfix, make_base, remove_base, skip_unless_usable
from tests.whitelist_fixtures import make_whitelist_xml
from trustspace.testpki import DEFAULT_SERVERS, ServerSpec, init_test_pki

OUR_DOMAIN = "a.mssante.test"
PF_DOMAIN = "pf.mssante.test"
CLINIC = "clinique.test"  # hosted by us, relayed to the Postfix smtpd without DSN
OUR_HOST, PF_HOST = "127.0.47.2", "127.0.47.4"  # this branch's loopback range
PF_SPEC = ServerSpec("postfix", f"mx.{PF_DOMAIN}", "1750000005", "OPERATEUR POSTFIX",
                     "Paris (75)")
OUR_SPEC = next(s for s in DEFAULT_SERVERS if s.name == "operator-a")
ALICE = f"alice@{OUR_DOMAIN}"


@dataclass
class Peers:
    node: Node
    postfix: Postfix
    pki: Path



@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    skip_unless_usable()
    base = tmp_path_factory.mktemp("dsn-postfix")
    pki = base / "pki"
    init_test_pki(pki, (*DEFAULT_SERVERS, PF_SPEC))
    dns = DnsServer().start()
    port = free_port(OUR_HOST, PF_HOST)
    no_dsn_port = free_port(PF_HOST)
    for domain, host in ((OUR_DOMAIN, OUR_HOST), (PF_DOMAIN, PF_HOST)):
        dns.set(domain, "MX", [f"10 mx.{domain}."])
        dns.set(f"mx.{domain}", "A", [host])
    whitelist = base / "whitelist.xml"
    whitelist.write_bytes(make_whitelist_xml([(OUR_DOMAIN, OUR_SPEC.subject),
                                              (PF_DOMAIN, PF_SPEC.subject)]))
    (base / "a").mkdir()
    tls = {"cert_file": pki / "operator-a.crt", "key_file": pki / "operator-a.key",
           "ca_file": pki / "root.crt"}
    node = make_node(base / "a", with_whitelist=False, domain=OUR_DOMAIN, host=OUR_HOST,
                     ports={"mx": port}, tls=tls,
                     extra_config=delivery_config(dns.port, port, max_attempts=30))
    node.cli("whitelist", "import", str(whitelist))
    node.cli("domain", "add", CLINIC, "--relay-to", f"{PF_HOST}:{no_dsn_port}")
    postfix = Postfix(base=make_base(), domain=PF_DOMAIN, host=PF_HOST, port=port, pki=pki,
                      cert="postfix",
                      routes=[PeerRoute(OUR_DOMAIN, OUR_HOST, port, OUR_SPEC.fqdn)],
                      extra_domains=(CLINIC,),
                      extra_smtpd={f"{PF_HOST}:{no_dsn_port}": (
                          "smtpd_discard_ehlo_keywords=dsn",)})
    try:
        node.start()
        postfix.start()
        yield Peers(node, postfix, pki)
    finally:
        postfix.stop()
        close_all([node], dns)
        remove_base(postfix.base)


def _submit(peers: Peers, rcpt: str, tag: str, rcpt_options: list[str],
            mail_options: list[str]) -> None:
    ctx = ssl.create_default_context(cafile=str(peers.pki / "root.crt"))
    ctx.check_hostname = False
    node = peers.node
    with smtplib.SMTP(node.host, node.ports["submission"], timeout=30) as client:
        client.starttls(context=ctx)
        client.login(ALICE, PASSWORD)
        assert client.sendmail(ALICE, [rcpt], message(ALICE, rcpt, tag),
                               mail_options=mail_options, rcpt_options=rcpt_options) == {}


def _reports(node: Node, tag: str) -> list[bytes]:
    return [m for m in with_tag(read_all(node, ALICE), tag) if b"multipart/report" in m]


def test_postfix_gets_the_parameters_and_reports_delivered(peers: Peers) -> None:
    node, postfix = peers.node, peers.postfix
    bob = f"bob@{PF_DOMAIN}"
    tag = f"pfok{time.time_ns()}"
    _submit(peers, bob, tag, ["NOTIFY=SUCCESS,FAILURE", f"ORCPT=rfc822;{bob}"],
            ["RET=HDRS", "ENVID=pf+2B1"])
    assert wait_for(lambda: _reports(node, tag), 60), postfix.log_tail()
    assert with_tag(postfix.messages("bob"), tag)
    found = _reports(node, tag)
    assert len(found) == 1
    per_message, per_rcpt = status_fields(found[0])
    assert per_message["Reporting-MTA"] == f"dns; mx.{PF_DOMAIN}"
    assert per_message["Original-Envelope-Id"] == "pf+1"  # our ENVID, xtext-decoded
    assert per_rcpt[0]["Final-Recipient"] == f"rfc822; {bob}"
    # Postfix writes "rfc822;addr" (RFC 3464 §2.3.1 allows the space or not)
    assert per_rcpt[0]["Original-Recipient"].replace("; ", ";") == f"rfc822;{bob}"
    assert (per_rcpt[0]["Action"], per_rcpt[0]["Status"]) == ("delivered", "2.0.0")
    # Postfix offered DSN: the parameters went on, and no "relayed" report of ours
    delivered = node.audit("--event", "queue.delivered")
    assert [r["detail"]["dsn"] for r in delivered if r["rcpt"] == bob] == [True]  # type: ignore[index]
    assert not [r for r in node.audit("--event", "delivery.")
                if (r.get("detail") or {}).get("dsn_action") == "relayed"]  # type: ignore[union-attr]


def test_a_server_without_dsn_gets_a_relayed_report_from_us(peers: Peers) -> None:
    node, postfix = peers.node, peers.postfix
    rcpt = f"alice@{CLINIC}"
    tag = f"pfrel{time.time_ns()}"
    _submit(peers, rcpt, tag, ["NOTIFY=SUCCESS", f"ORCPT=rfc822;{rcpt}"], ["ENVID=rel1"])
    assert wait_for(lambda: _reports(node, tag), 60), postfix.log_tail()
    assert with_tag(postfix.messages("alice", CLINIC), tag)
    found = _reports(node, tag)
    assert len(found) == 1
    per_message, per_rcpt = status_fields(found[0])
    assert per_message["Reporting-MTA"] == f"dns; {load_config(node.config).smtp.hostname}"
    assert per_message["Original-Envelope-Id"] == "rel1"
    fields = per_rcpt[0]
    assert (fields["Action"], fields["Status"]) == ("relayed", "2.0.0")
    assert fields["Final-Recipient"] == f"rfc822; {rcpt}"
    assert fields["Original-Recipient"] == f"rfc822; {rcpt}"
    assert fields["Remote-MTA"].startswith(f"dns; {PF_HOST}")
    assert fields["Diagnostic-Code"].startswith("smtp; 250 ")
    # the delivery record says the server offered no DSN (so no parameter went on to it,
    # RFC 3461 §5.2); the first test's Postfix port did
    done = {str(r["rcpt"]): r["detail"] for r in node.audit("--event", "queue.delivered")}
    assert done[rcpt]["dsn"] is False  # type: ignore[index]
    assert all(d["dsn"] is True for r, d in done.items()  # type: ignore[index]
               if r.endswith("@" + PF_DOMAIN) and "dsn" in d)  # type: ignore[operator]


def test_postfix_sender_gets_our_delivered_report(peers: Peers) -> None:
    """Postfix passes NOTIFY=SUCCESS and ENVID to our MX (we offer DSN); we deliver and
    queue the "delivered" report back to its sender (MAIL FROM:<>, mutual TLS)."""
    node, postfix = peers.node, peers.postfix
    sender, ours = f"bob@{PF_DOMAIN}", f"bob@{OUR_DOMAIN}"
    tag = f"pfin{time.time_ns()}"
    postfix.sendmail(sender, [ours], message(sender, ours, tag),
                     ("-N", "success", "-V", "pfenv42"))
    assert wait_for(lambda: with_tag(read_all(node, ours), tag), 60), postfix.log_tail()

    def report() -> list[bytes]:
        return [m for m in with_tag(postfix.messages("bob"), tag) if b"multipart/report" in m]
    assert wait_for(report, 60), postfix.log_tail()
    per_message, per_rcpt = status_fields(report()[0])
    assert per_message["Reporting-MTA"] == f"dns; {load_config(node.config).smtp.hostname}"
    assert per_message["Original-Envelope-Id"] == "pfenv42"
    assert per_rcpt[0]["Final-Recipient"] == f"rfc822; {ours}"
    assert (per_rcpt[0]["Action"], per_rcpt[0]["Status"]) == ("delivered", "2.0.0")
