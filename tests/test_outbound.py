"""Outbound delivery between two real operators (127.0.0.2 and 127.0.0.3) over mutual TLS,
MX records served by a real DNS server on loopback, queue claims, retries, DSNs, restarts."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import random
import signal
import smtplib
import ssl
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import aiosmtplib
import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from mss.config import DeliveryConfig
from proxy.outbound import client
from proxy.outbound.backoff import gives_up, retry_delay
from proxy.outbound.dsn import build_dsn, is_report
from proxy.outbound.mx import parse_next_hop
from tests import xdm_packages
from tests.dnsserver import DnsServer
from tests.node import PASSWORD, Node, read_all, wait_for
from tests.outbound_pair import (
    A_DOMAIN,
    B_DOMAIN,
    HOSPITAL_DOMAIN,
    IMPLICIT_DOMAIN,
    LOOP_DOMAIN,
    MARGIN,
    NULL_MX_DOMAIN,
    PLAIN_DOMAIN,
    RELAYED_DOMAIN,
    REVOKED_DOMAIN,
    SUBJECTS,
    UNTRUSTED_DOMAIN,
    WRONG_DN_DOMAIN,
    Pair,
    make_pair,
    message,
    submit,
    with_tag,
)
from trustspace.dn import canonical_name


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Short schedule (4 attempts, about 2.4 s of retries): rows that fail every time
    expire within the test."""
    p = make_pair(tmp_path_factory.mktemp("pair"), max_attempts=4)
    for node in p.nodes():
        node.start()
    yield p
    p.close()


# retries spread over about 70 s: a row deferred while B is down is still queued when a
# test acts on it or B is back up, even when a restart takes seconds on a loaded machine
PATIENT = {"max_attempts": 8, "retry_base": 1.0, "retry_factor": 2.0, "retry_max": 20.0}


@pytest.fixture(scope="module")
def patient_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = make_pair(tmp_path_factory.mktemp("patient"), **PATIENT)
    for node in p.nodes():
        node.start()
    yield p
    p.close()


def still_queued(node: Node, tag: str) -> bool:
    """The row of message *tag* neither expired nor bounced (the schedule outlasted B's
    restart): otherwise the test could not see a retry at all."""
    done = [r for r in node.audit() if r["event"] in ("queue.expired", "queue.bounced")
            and tag in str(r.get("message_id", ""))]
    return not done


def queued_count_line(node: Node) -> str:
    """The last line of ``mss queue list --status queued``: "0 row(s)" when none."""
    return node.cli("queue", "list", "--status", "queued").stdout.splitlines()[-1]


def audit_events(node: Node, event: str) -> list[dict[str, object]]:
    return node.audit("--event", event)


# --------------------------------------------------------------------------- both ways

def test_a_to_b_and_b_to_a_over_mutual_tls(pair: Pair) -> None:
    a, b = pair.nodes()
    tag_ab, tag_ba = f"ab{time.time_ns()}", f"ba{time.time_ns()}"
    submit(a, pair.pki, [f"bob@{B_DOMAIN}"], message(f"alice@{A_DOMAIN}", f"bob@{B_DOMAIN}",
                                                      tag_ab))
    submit(b, pair.pki, [f"bob@{A_DOMAIN}"], message(f"alice@{B_DOMAIN}", f"bob@{A_DOMAIN}",
                                                      tag_ba))
    within = pair.schedule.first_try()
    assert wait_for(lambda: with_tag(read_all(b, f"bob@{B_DOMAIN}"), tag_ab), within)
    assert wait_for(lambda: with_tag(read_all(a, f"bob@{A_DOMAIN}"), tag_ba), within)
    # B accepted A's client certificate: its DN is recorded on B's TLS audit record
    tls = [r for r in audit_events(b, "smtp.tls") if r.get("listener") == "mx"]
    assert any("O=OPERATEUR A" in json.dumps(r.get("detail")) for r in tls)
    delivered = [r for r in audit_events(a, "queue.delivered") if r["rcpt"] == f"bob@{B_DOMAIN}"]
    assert delivered and str(delivered[-1]["reason"]).startswith("250")
    show = a.cli("queue", "show", str(delivered[-1]["detail"]["queue_id"])).stdout  # type: ignore[index]
    assert "status:       delivered" in show and "remote reply: 250" in show
    assert "Bonjour" not in show and "Subject" not in show  # never the body or subject


def test_queue_delivered_names_the_peer_and_the_patient(pair: Pair) -> None:
    """Issue 12 §4: the delivery record names the server that took the message (host and
    certificate DN) and carries the patient pseudonym of the submission, so that
    mss audit list --patient follows the message to the peer."""
    a, b = pair.nodes()
    tag = f"ins{time.time_ns()}"
    package = xdm_packages.Xdm().zip()  # the patient is in the XDM (X-MSS-INS is a flag)
    submit(a, pair.pki, [f"bob@{B_DOMAIN}"], xdm_packages.message(
        package, sender=f"alice@{A_DOMAIN}", rcpt=f"bob@{B_DOMAIN}",
        headers=xdm_packages.GOOD_HEADERS, msgid=f"<{tag}@test.example>"))
    assert wait_for(lambda: with_tag(read_all(b, f"bob@{B_DOMAIN}"), tag))
    arrived = with_tag(read_all(b, f"bob@{B_DOMAIN}"), tag)[0]
    for name, value in xdm_packages.GOOD_HEADERS.items():  # issue 18: carried unchanged
        assert f"\r\n{name}: {value}\r\n".encode() in arrived
    msgid = f"<{tag}@test.example>"
    delivered = a.wait_audit(lambda r: r["event"] == "queue.delivered"
                             and r["message_id"] == msgid)
    assert delivered
    detail = delivered[0]["detail"]
    assert isinstance(detail, dict)
    assert "[127.0.0.3]:" in str(detail["host"])
    assert "CN=mx.operator-b.test" in str(detail["peer_dn"])
    assert "O=OPERATEUR B" in str(detail["peer_dn"])
    accepted = [r for r in audit_events(a, "smtp.message.accepted") if r["message_id"] == msgid]
    patient = accepted[0]["detail"]["patient"]  # type: ignore[index]
    assert str(patient).startswith("pp-") and detail["patient"] == patient
    path = [r["event"] for r in a.audit("--patient", str(patient))]
    assert path == ["smtp.message.accepted", "delivery.queued", "queue.delivered"], path
    # and in the DICOM export: the peer is the destination participant
    xml = [line for line in a.cli("audit", "export", "--format", "dicom-xml").stdout
           .splitlines() if "MSS-QUEUE-DELIVERED" in line and tag in line]
    assert xml and 'UserID="CN=mx.operator-b.test' in xml[-1] and "110152" in xml[-1]


def test_recipients_of_one_message_share_one_transaction(pair: Pair) -> None:
    a, b = pair.nodes()
    tag = f"group{time.time_ns()}"
    rcpts = [f"bob@{B_DOMAIN}", f"secretariat@{B_DOMAIN}", f"ghost@{B_DOMAIN}"]
    submit(a, pair.pki, rcpts, message(f"alice@{A_DOMAIN}", rcpts[0], tag))
    assert wait_for(lambda: all(with_tag(read_all(b, r), tag) for r in rcpts[:2]),
                    pair.schedule.first_try())
    accepted = [r for r in audit_events(b, "smtp.message.accepted")
                if r["message_id"] == f"<{tag}@test.example>"]
    assert len(accepted) == 1 and accepted[0]["detail"]["recipients"] == 2  # type: ignore[index]
    # the refused recipient is settled on its own: bounced with B's RCPT reply
    bounced = a.wait_audit(lambda r: r["event"] == "queue.bounced" and r["rcpt"] == rcpts[2],
                           pair.schedule.first_try())
    assert bounced and "answered RCPT TO with 550 5.1.1" in str(bounced[0]["reason"])
    delivered = {r["rcpt"] for r in audit_events(a, "queue.delivered")
                 if r["message_id"] == f"<{tag}@test.example>"}
    assert delivered == set(rcpts[:2])


def test_relay_to_next_hop_without_mx(pair: Pair) -> None:
    a, b = pair.nodes()
    assert str({d["domain"]: d["relay_to"] for d in a.cli_json("domain", "list")}[
        RELAYED_DOMAIN]).startswith("127.0.0.3:")
    tag = f"relay{time.time_ns()}"
    rcpt = f"dr.house@{RELAYED_DOMAIN}"  # no DNS record at all: only the next hop is used
    submit(a, pair.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, tag))
    assert wait_for(lambda: with_tag(read_all(b, rcpt), tag), pair.schedule.first_try())


def test_mx_mail_for_a_relayed_domain_goes_to_its_server_with_our_certificate(
        pair: Pair) -> None:
    """B's user writes to the hospital A hosts; A's MX queues it for the hospital's own
    server (a TLS server requiring a client certificate): A presents its certificate; the
    hospital's DN is listed nowhere, and no whitelist DN check applies to a next hop."""
    from aiosmtpd.controller import Controller

    a, b = pair.nodes()
    hospital = Recorder()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pair.pki / "root.crt"))
    ctx.load_cert_chain(pair.pki / "operator-b.crt", pair.pki / "operator-b.key")
    ctx.verify_mode = ssl.CERT_REQUIRED  # the hospital requires our client certificate
    server = Controller(hospital, hostname="127.0.0.6", port=pair.mx_port, tls_context=ctx,
                        require_starttls=True)
    server.start()
    try:
        rcpt = f"dr.grey@{HOSPITAL_DOMAIN}"
        tag = f"hosp{time.time_ns()}"
        submit(b, pair.pki, [rcpt], message(f"alice@{B_DOMAIN}", rcpt, tag))
        assert wait_for(lambda: len(hospital.envelopes) == 1, pair.schedule.first_try())
    finally:
        server.stop()
    envelope = hospital.envelopes[0]
    assert envelope.rcpt_tos == [rcpt]  # type: ignore[attr-defined]
    assert envelope.mail_from == f"alice@{B_DOMAIN}"  # type: ignore[attr-defined]
    assert f"<{tag}@test.example>".encode() in envelope.content  # type: ignore[attr-defined]
    assert "organizationName=OPERATEUR A" in hospital.peer_dns[0]
    queued = [r for r in audit_events(a, "delivery.queued") if r["rcpt"] == rcpt]
    assert queued and queued[0]["listener"] == "mx"


def test_sessions_to_a_peer_are_reused_and_a_closed_one_replaced(pair: Pair) -> None:
    """Twelve messages queued at once go over at most max_per_destination (4) sessions
    (RFC 5321 §4.1.4: MAIL FROM again after the end of DATA); after B restarts, the kept
    sessions are dead and the next message goes over a new one, with no deferral."""
    a, b = pair.nodes()
    rcpt = f"bob@{B_DOMAIN}"
    tags = [f"reuse{i}x{time.time_ns()}" for i in range(12)]
    ctx = ssl.create_default_context(cafile=str(pair.pki / "root.crt"))
    ctx.check_hostname = False
    with smtplib.SMTP(a.host, a.ports["submission"], timeout=30) as c:
        c.starttls(context=ctx)
        c.login(f"alice@{A_DOMAIN}", PASSWORD)
        for tag in tags:
            c.sendmail(f"alice@{A_DOMAIN}", [rcpt], message(f"alice@{A_DOMAIN}", rcpt, tag))

    def sessions_for(wanted: list[str]) -> set[object] | None:
        rows = [r for r in audit_events(b, "smtp.message.accepted") if r["listener"] == "mx"
                and str(r.get("message_id", "")).strip("<>").split("@")[0] in wanted]
        return {r["session"] for r in rows} if len(rows) == len(wanted) else None

    assert wait_for(lambda: sessions_for(tags) is not None, pair.schedule.first_try())
    used = sessions_for(tags)
    assert used is not None and 1 <= len(used) <= 4
    b.stop()
    b.start()
    late = f"reuse-late{time.time_ns()}"
    submit(a, pair.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, late))
    assert wait_for(lambda: with_tag(read_all(b, rcpt), late), pair.schedule.first_try())
    assert not [r for r in audit_events(a, "queue.deferred")
                if late in str(r.get("message_id", ""))]



# --------------------------------------------------------------------------- failures

def test_next_hop_refusal_sends_the_dsn_back_to_the_remote_sender(pair: Pair) -> None:
    """B's user writes to the hospital A relays to its own server; that server refuses the
    recipient after A's MX accepted it: A owes the sender a DSN (RFC 5321 §6.1) and queues
    it to B with MAIL FROM:<>; it lands in the sender's INBOX on B."""
    from aiosmtpd.controller import Controller

    a, b = pair.nodes()
    hospital = Refusing()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pair.pki / "operator-b.crt", pair.pki / "operator-b.key")
    server = Controller(hospital, hostname="127.0.0.6", port=pair.mx_port, tls_context=ctx,
                        require_starttls=True)
    server.start()
    sender, rcpt = f"bob@{B_DOMAIN}", f"dr.nobody@{HOSPITAL_DOMAIN}"
    tag = f"hdsn{time.time_ns()}"
    try:
        submit(b, pair.pki, [rcpt], message(sender, rcpt, tag), sender=sender)

        def dsn_arrived() -> list[bytes]:
            return [m for m in read_all(b, sender)
                    if f"rfc822; {rcpt}".encode() in m and f"<{tag}@test.example>".encode() in m]
        assert wait_for(dsn_arrived, 2 * pair.schedule.first_try())  # refusal, then DSN
    finally:
        server.stop()
    dsn = dsn_arrived()[0]
    assert b"Status: 5.1.1" in dsn and b"Diagnostic-Code: smtp; 550 5.1.1" in dsn
    bounced = [r for r in audit_events(a, "queue.bounced") if r["rcpt"] == rcpt]
    assert bounced and "DSN queued to the sender" in str(bounced[0]["reason"])
    queued = [r for r in audit_events(a, "delivery.queued") if r["rcpt"] == sender]
    assert queued and queued[-1]["detail"]["dsn_for"]  # type: ignore[index]
    # B's MX took it from A with a null reverse-path (A's DN is listed)
    accepted = [r for r in audit_events(b, "smtp.message.accepted")
                if r["listener"] == "mx" and r.get("mail_from") == ""]
    assert accepted



def test_permanent_refusal_bounces_with_dsn_to_sender(pair: Pair) -> None:
    a, _ = pair.nodes()
    tag = f"perm{time.time_ns()}"
    rcpt = f"nobody@{B_DOMAIN}"
    submit(a, pair.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, tag))

    def dsns() -> list[bytes]:  # this test's DSN: names the recipient and the original
        return [m for m in read_all(a, f"alice@{A_DOMAIN}")
                if f"rfc822; {rcpt}".encode() in m and f"<{tag}@test.example>".encode() in m]

    assert wait_for(dsns, pair.schedule.first_try())
    found = dsns()
    assert len(found) == 1, found
    dsn = found[0]
    parsed = email.message_from_bytes(dsn, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    status = parts[1].as_string()
    assert f"Final-Recipient: rfc822; {rcpt}" in status and "Action: failed" in status
    assert "Status: 5.1.1" in status and "Diagnostic-Code: smtp; 550 5.1.1" in status
    original = parts[2].get_payload() if not parts[2].is_multipart() else ""
    assert f"<{tag}@test.example>" in str(original) and "Bonjour" not in dsn.decode()
    bounced = [r for r in audit_events(a, "queue.bounced") if r["rcpt"] == rcpt]
    assert bounced and "550 5.1.1" in str(bounced[-1]["reason"])


def test_wrong_peer_dn_is_never_delivered(pair: Pair) -> None:
    a, _ = pair.nodes()
    rcpt = f"bob@{WRONG_DN_DOMAIN}"
    submit(a, pair.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, f"dn{time.time_ns()}"))
    rows = a.wait_audit(lambda r: r["event"] == "queue.deferred" and r["rcpt"] == rcpt,
                        pair.schedule.first_try())
    assert rows and "is not listed for wrong-dn.test" in str(rows[0]["reason"])
    assert "OPERATEUR B" in str(rows[0]["reason"])
    # after max_attempts (4 in this module): expired, DSN to the sender, never delivered
    expired = a.wait_audit(lambda r: r["event"] == "queue.expired" and r["rcpt"] == rcpt,
                           pair.schedule.expiry())
    assert expired and not [r for r in audit_events(a, "queue.delivered") if r["rcpt"] == rcpt]
    dsns = [m for m in read_all(a, f"alice@{A_DOMAIN}") if f"rfc822; {rcpt}".encode() in m]
    assert dsns and b"Status: 4.4.7" in dsns[-1]


def test_peer_down_then_up_is_delivered_after_retry(patient_pair: Pair) -> None:
    a, b = patient_pair.nodes()
    schedule = patient_pair.schedule
    b.stop()
    tag = f"down{time.time_ns()}"
    try:
        submit(a, patient_pair.pki, [f"bob@{B_DOMAIN}"],
               message(f"alice@{A_DOMAIN}", f"bob@{B_DOMAIN}", tag))
        deferred = a.wait_audit(lambda r: r["event"] == "queue.deferred"
                                and tag in str(r.get("message_id", "")), schedule.first_try())
        reason = str(deferred[-1]["reason"]) if deferred else ""
        assert deferred and ("ConnectError" in reason or "refused" in reason.lower()), deferred
    finally:
        b.start()
    assert still_queued(a, tag)
    # B is back: the row is delivered at its next attempt, whichever it is
    worst = max(schedule.next_try(n) for n in range(1, schedule.cfg.max_attempts))
    assert wait_for(lambda: with_tag(read_all(b, f"bob@{B_DOMAIN}"), tag), worst)


def test_kill_9_with_messages_queued_then_restart_delivers_all(patient_pair: Pair) -> None:
    pair = patient_pair
    a, b = pair.nodes()
    rcpt = f"secretariat@{B_DOMAIN}"
    b.stop()
    tags = [f"k9q{i}x{time.time_ns()}" for i in range(8)]
    for tag in tags:
        submit(a, pair.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, tag))
    a.stop(signal.SIGKILL)  # queued rows, some leased by the dead worker
    b.start()
    a.start()
    # then a kill -9 while deliveries are in flight
    live = [f"k9f{i}x{time.time_ns()}" for i in range(12)]
    for tag in live:
        submit(a, pair.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, tag))
    a.stop(signal.SIGKILL)
    a.start()

    def arrived() -> bool:
        stored = read_all(b, rcpt)
        return all(with_tag(stored, t) for t in tags + live)

    # rows leased by a killed worker come back after the lease, then wait their retry gap
    worst = max(pair.schedule.reclaim(n) for n in range(1, pair.schedule.cfg.max_attempts))
    assert wait_for(arrived, worst + len(tags + live) * pair.schedule.cfg.poll_interval)
    stored = read_all(b, rcpt)
    # queued while B was down: exactly once
    assert all(len(with_tag(stored, t)) == 1 for t in tags)
    # killed mid-delivery: at least once; a duplicate only for a row whose 250 came in
    # just before the kill (RFC 5321 §6.1), so at most the rows in flight
    duplicates = sum(len(with_tag(stored, t)) - 1 for t in live)
    assert duplicates <= 4
    # and no row is left queued
    assert wait_for(lambda: queued_count_line(a) == "0 row(s)", pair.schedule.first_try())


def test_null_mx_bounces_and_no_mx_falls_back_to_the_a_record(pair: Pair) -> None:
    a, _ = pair.nodes()
    null_rcpt, implicit_rcpt = f"x@{NULL_MX_DOMAIN}", f"x@{IMPLICIT_DOMAIN}"
    submit(a, pair.pki, [null_rcpt, implicit_rcpt],
           message(f"alice@{A_DOMAIN}", null_rcpt, f"mx{time.time_ns()}"))
    null = a.wait_audit(lambda r: r["event"] == "queue.bounced" and r["rcpt"] == null_rcpt,
                        pair.schedule.first_try())
    assert null and "null MX, RFC 7505" in str(null[0]["reason"])
    # implicit MX: the A record is B, whose MX answers for itself: 550 (domain not hosted)
    implicit = a.wait_audit(lambda r: r["event"] == "queue.bounced"
                            and r["rcpt"] == implicit_rcpt, pair.schedule.first_try())
    assert implicit and f"{IMPLICIT_DOMAIN}[127.0.0.3]" in str(implicit[0]["reason"])
    assert "550 5.1.1" in str(implicit[0]["reason"])
    dsns = [m for m in read_all(a, f"alice@{A_DOMAIN}") if f"rfc822; {null_rcpt}".encode() in m]
    assert dsns and b"Status: 5.1.10" in dsns[-1]


def test_a_next_hop_pointing_back_here_is_a_loop_bounced_after_100_hops(pair: Pair) -> None:
    a, _ = pair.nodes()
    rcpt = f"x@{LOOP_DOMAIN}"
    submit(a, pair.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, f"loop{time.time_ns()}"))
    hops = 101 * pair.schedule.attempt()  # each hop is one first try at A's own MX
    bounced = a.wait_audit(lambda r: r["event"] == "queue.bounced" and r["rcpt"] == rcpt,
                           hops + MARGIN)
    assert bounced and "mail loop: 101 Received headers" in str(bounced[0]["reason"])
    dsns = [m for m in read_all(a, f"alice@{A_DOMAIN}") if f"rfc822; {rcpt}".encode() in m]
    assert len(dsns) == 1 and b"Status: 5.4.6" in dsns[0]


class Recorder:
    """aiosmtpd handler keeping every envelope a test peer receives."""

    def __init__(self) -> None:
        self.envelopes: list[object] = []
        self.mail_from: list[str] = []
        self.peer_dns: list[str] = []

    async def handle_MAIL(self, server: object, session: object, envelope: object,
                          address: str, options: list[str]) -> str:
        self.mail_from.append(address)
        envelope.mail_from = address  # type: ignore[attr-defined]
        return "250 OK"

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.envelopes.append(envelope)
        transport = server.transport  # type: ignore[attr-defined]
        cert = transport.get_extra_info("peercert") if transport else None
        if cert:
            self.peer_dns.append(",".join(f"{k}={v}" for rdn in cert["subject"]
                                          for k, v in rdn))
        return "250 OK"


class Refusing(Recorder):
    """A next hop that knows no recipient (RFC 5321 §4.2.2 550 5.1.1)."""

    async def handle_RCPT(self, server: object, session: object, envelope: object,
                          address: str, rcpt_options: list[str]) -> str:
        return "550 5.1.1 No such user here"


def test_no_starttls_or_untrusted_certificate_never_sends(pair: Pair) -> None:
    from aiosmtpd.controller import Controller

    a, b = pair.nodes()
    plain, untrusted = Recorder(), Recorder()
    other_ca = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other_ca.load_cert_chain(b.data_dir / "pki" / "server.crt", b.data_dir / "pki" / "server.key")
    servers = [Controller(plain, hostname="127.0.0.4", port=pair.mx_port),
               Controller(untrusted, hostname="127.0.0.5", port=pair.mx_port,
                          tls_context=other_ca)]
    for server in servers:
        server.start()
    try:
        rcpts = [f"x@{PLAIN_DOMAIN}", f"x@{UNTRUSTED_DOMAIN}"]
        submit(a, pair.pki, rcpts, message(f"alice@{A_DOMAIN}", rcpts[0], f"tls{time.time_ns()}"))
        first = pair.schedule.first_try()
        no_tls = a.wait_audit(lambda r: r["event"] == "queue.deferred" and r["rcpt"] == rcpts[0],
                              first)
        assert no_tls and "does not offer STARTTLS" in str(no_tls[0]["reason"])
        bad = a.wait_audit(lambda r: r["event"] == "queue.deferred" and r["rcpt"] == rcpts[1],
                           first)
        assert bad and "certificate not trusted" in str(bad[0]["reason"])
        for rcpt in rcpts:  # each recipient expires on its own
            assert a.wait_audit(lambda r, rcpt=rcpt: r["event"] == "queue.expired"
                                and r["rcpt"] == rcpt, pair.schedule.expiry()), rcpt
    finally:
        for server in servers:
            server.stop()
    assert plain.mail_from == [] and untrusted.mail_from == []  # nothing ever sent
    assert plain.envelopes == [] and untrusted.envelopes == []


def test_revoked_peer_certificate_never_gets_mail(pair: Pair) -> None:
    """The peer's chain verifies in the handshake (test root) and its DN is listed for the
    domain, but the ORGANISATIONS CRL revokes it: deferred with that reason, nothing sent."""
    from aiosmtpd.controller import Controller

    a, _ = pair.nodes()
    revoked = Recorder()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair.pki / "revoked.crt", pair.pki / "revoked.key")  # + chain
    server = Controller(revoked, hostname="127.0.0.7", port=pair.mx_port, tls_context=context)
    server.start()
    try:
        rcpt = f"x@{REVOKED_DOMAIN}"
        submit(a, pair.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, f"rv{time.time_ns()}"))
        rows = a.wait_audit(lambda r: r["event"] == "queue.deferred" and r["rcpt"] == rcpt,
                            pair.schedule.first_try())
        assert rows and "refused: revoked:" in str(rows[0]["reason"])
        assert SUBJECTS["revoked"].split(",")[0] in str(rows[0]["reason"])
    finally:
        server.stop()
    assert revoked.mail_from == [] and revoked.envelopes == []  # nothing ever sent


def test_two_serving_workers_share_the_queue_without_double_sending(tmp_path: Path) -> None:
    p = make_pair(tmp_path, batch=3)
    a, b = p.nodes()
    a.config.write_text(a.config.read_text().replace('data_dir = "."',
                                                     'data_dir = "."\nworkers = 2'))
    rcpt = f"bob@{B_DOMAIN}"
    try:
        b.start()
        a.start()
        assert wait_for(lambda: a.log_path is not None
                        and a.log_path.read_text().count('"event": "ready"') == 2)
        tags = [f"w2x{i}x{time.time_ns()}" for i in range(30)]
        for tag in tags:
            submit(a, p.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, tag))
        # 30 rows in batches of 3: each batch one first try
        assert wait_for(lambda: len(audit_events(a, "queue.delivered")) >= 30,
                        10 * p.schedule.attempt() + MARGIN)
        stored = read_all(b, rcpt)
        assert all(len(with_tag(stored, t)) == 1 for t in tags)
        delivered = audit_events(a, "queue.delivered")
        ids = [r["detail"]["queue_id"] for r in delivered]  # type: ignore[index]
        assert len(ids) == len(set(ids)) == 30
    finally:
        p.close(graceful=True)


def _seconds_between(first: dict[str, object], then: dict[str, object]) -> float:
    return (datetime.fromisoformat(str(then["ts"]))
            - datetime.fromisoformat(str(first["ts"]))).total_seconds()


def _delivered_record(node: Node, queue_id: str) -> dict[str, object] | None:
    rows = [r for r in audit_events(node, "queue.delivered")
            if r["detail"]["queue_id"] == queue_id]  # type: ignore[index]
    return rows[0] if rows else None


def test_queuing_commit_wakes_the_worker_at_once(tmp_path: Path) -> None:
    """Issue 20 #9: the worker is woken by the commit that queues a row (this process) or
    by the change watcher (``mss queue retry``, another process), not by its poll: with the
    safety poll at 30 s, each message is delivered within 1.5 s of being queued (the
    attempt included: a TLS session to B)."""
    p = make_pair(tmp_path, poll_interval=30.0, retry_base=60.0, retry_max=60.0)
    a, b = p.nodes()
    rcpt = f"bob@{B_DOMAIN}"
    try:
        a.start()
        time.sleep(0.5)  # the worker's first (empty) claim is behind it: it sleeps
        submit(a, p.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, f"wk{time.time_ns()}"))
        deferred = a.wait_audit(lambda r: r["event"] == "queue.deferred", 20)
        assert deferred, "B is down: the first attempt is deferred (next one in 60 s)"
        b.start()
        for i in range(3):  # in-process wake-up: the SMTP commit signals the worker
            submit(a, p.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, f"wk{i}x{time.time_ns()}"))
        queued = [r for r in audit_events(a, "delivery.queued")]
        assert len(queued) == 4
        for record in queued[1:]:
            queue_id = str(record["detail"]["queue_id"])  # type: ignore[index]
            assert wait_for(lambda q=queue_id: _delivered_record(a, q), 20)  # type: ignore[misc]
            done = _delivered_record(a, queue_id)
            assert done is not None and _seconds_between(record, done) < 1.5
        # another process (the CLI) makes the deferred row due: the watcher sees it
        queue_id = str(deferred[0]["detail"]["queue_id"])  # type: ignore[index]
        a.cli("queue", "retry", queue_id)
        retried = a.wait_audit(lambda r: r["event"] == "admin.queue.retry")
        assert wait_for(lambda: _delivered_record(a, queue_id), 20)
        done = _delivered_record(a, queue_id)
        assert done is not None and _seconds_between(retried[0], done) < 1.5
    finally:
        p.close(graceful=True)


def test_delivery_config_errors_name_the_key(tmp_path: Path) -> None:
    from mss.config import ConfigError, parse_config

    for table, message_part in (({"retry_factor": 0.5}, "delivery.retry_factor"),
                                ({"jitter": 1.5}, "delivery.jitter"),
                                ({"port": 0}, "delivery.port"),
                                ({"lease": 60.0}, "delivery.lease"),
                                ({"nameservers": "127.0.0.1"}, "delivery.nameservers"),
                                ({"max_attempts": "8"}, "delivery.max_attempts"),
                                ({"session_idle": 600.0}, "delivery.session_idle"),
                                ({"session_reuse": 0}, "delivery.session_reuse")):
        with pytest.raises(ConfigError, match=message_part):
            parse_config({"delivery": table}, tmp_path / "mss.toml")
    cfg = parse_config({"delivery": {"nameservers": ["10.0.0.53"], "dns_port": 5353}},
                       tmp_path / "mss.toml").delivery
    assert cfg.nameservers == ("10.0.0.53",) and cfg.dns_port == 5353 and cfg.max_attempts == 8


# --------------------------------------------------------------------------- CLI

def test_queue_cli_retry_bounce_purge(patient_pair: Pair, tmp_path: Path) -> None:
    pair = patient_pair  # the row must still be queued when the worker is stopped
    a, b = pair.nodes()
    b.stop()
    try:
        rcpt = f"bob@{B_DOMAIN}"
        tag = f"cli{time.time_ns()}"
        submit(a, pair.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, tag))
        row = a.wait_audit(lambda r: r["event"] == "queue.deferred"
                           and tag in str(r.get("message_id", "")), pair.schedule.first_try())
        a.stop()  # no worker: the CLI alone acts on the queue (deterministic states)
        assert still_queued(a, tag)
        queue_id = str(row[-1]["detail"]["queue_id"])  # type: ignore[index]
        assert queue_id[:16] in a.cli("queue", "list", "--status", "queued").stdout
        assert queue_id in [r["id"] for r in a.cli_json("queue", "list", "--status", "queued")]
        assert "1 row(s) due now" in a.cli("queue", "retry", queue_id).stdout
        out = a.cli("queue", "bounce", queue_id).stdout
        assert "bounced (DSN stored)" in out
        bad = a.cli("queue", "bounce", queue_id, check=False)
        assert bad.returncode == 2 and bad.stderr.startswith("mss: error: ")
        assert "status:       bounced" in a.cli("queue", "show", queue_id).stdout
        missing = a.cli("queue", "show", "deadbeefdeadbeef", check=False)
        assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1
        assert a.cli("queue", "retry", check=False).returncode == 2
        assert "row(s) purged" in a.cli("queue", "purge", "--bounced").stdout
        assert a.cli("queue", "show", queue_id, check=False).returncode == 2
        assert a.audit("--event", "admin.queue.retry")
        assert a.audit("--event", "admin.queue.purge")
        assert [r for r in audit_events(a, "queue.bounced")
                if r["detail"]["queue_id"] == queue_id  # type: ignore[index]
                and str(r["actor"]).startswith("cli:")]
    finally:
        b.start()
        if a.process is None:
            a.start()


def test_relay_to_must_be_host_port(pair: Pair) -> None:
    bad = pair.a.cli("domain", "add", "other.test", "--relay-to", "nohost", check=False)
    assert bad.returncode == 2 and bad.stderr == "mss: error: next hop 'nohost': expected " \
        "HOST:PORT\n"


# --------------------------------------------------------------------------- units

def test_backoff_grows_with_jitter_and_gives_up() -> None:
    cfg = DeliveryConfig()
    rng = random.Random(4)
    waits = [retry_delay(n, cfg, rng) for n in range(1, 8)]
    assert 0.8 * 1200 <= waits[0] <= 1.2 * 1200
    assert all(w <= cfg.retry_max * 1.2 for w in waits)
    total = sum(retry_delay(n, DeliveryConfig(jitter=0.0)) for n in range(1, 8))
    assert 1.5 * 86400 < total < 2 * 86400  # defaults: 8 attempts over about 2 days
    assert gives_up(8, 0.0, 10.0, cfg) and not gives_up(7, 0.0, 10.0, cfg)
    assert gives_up(2, 0.0, cfg.max_age + 1, cfg)


def test_dsn_shape_and_no_dsn_for_dsn() -> None:
    original = b"From: <a@x.test>\r\nSubject: s\r\nMessage-ID: <1@x>\r\n\r\nsecret body\r\n"
    dsn = build_dsn(reporting_mta="mx.x.test", mail_from="a@x.test", rcpt="b@y.test",
                    original=original, action="failed", status="5.1.1",
                    diagnostic="550 5.1.1 unknown\r\nuser", remote_mta="mx.y.test",
                    arrival=0.0, explanation="no such user")
    assert b"secret body" not in dsn and b"Message-ID: <1@x>" in dsn
    assert b"Diagnostic-Code: smtp; 550 5.1.1 unknown user\r\n" in dsn
    assert is_report(dsn) and not is_report(original)


@pytest.mark.parametrize("text,expected", [("mx.clinique.fr:25", ("mx.clinique.fr", 25)),
                                           ("[127.0.0.3]:2525", ("127.0.0.3", 2525))])
def test_parse_next_hop(text: str, expected: tuple[str, int]) -> None:
    assert parse_next_hop(text) == expected
    for bad in ("host", "host:0", "host:99999", ":25", "a b:25"):
        with pytest.raises(ValueError):
            parse_next_hop(bad)


@given(host=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}",
                          fullmatch=True),
       port=st.integers(min_value=1, max_value=65535))
def test_parse_next_hop_round_trips(host: str, port: int) -> None:
    assert parse_next_hop(f"{host.upper()}:{port}") == (host, port)


@given(text=st.text(max_size=40))
def test_parse_next_hop_never_crashes(text: str) -> None:
    try:
        host, port = parse_next_hop(text)
    except ValueError:
        return
    assert host and 0 < port < 65536 and " " not in host


class _QuitPeer:
    """A loopback SMTP peer that greets and then answers QUIT (221) or never does."""

    def __init__(self, answers_quit: bool) -> None:
        self.answers_quit = answers_quit
        self.lines: list[bytes] = []
        self.hung_up = asyncio.Event()  # the client closed its socket

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 peer.test ESMTP\r\n")
        await writer.drain()
        while line := await reader.readline():
            self.lines.append(line.strip())
            if line.strip().upper() == b"QUIT" and self.answers_quit:
                writer.write(b"221 bye\r\n")
                await writer.drain()
        self.hung_up.set()
        writer.close()


async def _pool_session(port: int) -> client.Session:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, use_tls=False,
                           timeout=5)
    await smtp.connect()
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "peer.test")])
    return client.Session(smtp, f"peer.test[127.0.0.1]:{port}", [], subject,
                          canonical_name(subject))


async def test_sessions_being_quit_are_the_pools_and_end_at_its_close() -> None:
    """The QUITs sent once a delivery's replies are in run in tasks of the delivery
    worker's session pool, not of the process (no module global): another pool holds
    none of them, and the pool's close(deadline) waits for the answered QUIT and cancels
    the one a peer never answers at the deadline, its socket closed."""
    peers = [_QuitPeer(answers_quit=True), _QuitPeer(answers_quit=False)]
    servers = [await asyncio.start_server(p.serve, "127.0.0.1", 0) for p in peers]
    try:
        pool, other = client.SessionPool(30, 10, 2), client.SessionPool(30, 10, 2)
        sessions = [await _pool_session(s.sockets[0].getsockname()[1]) for s in servers]
        for session in sessions:
            pool.quit_later(session)
        assert len(pool.closing) == 2 and not other.closing
        await asyncio.wait_for(peers[0].hung_up.wait(), 5)  # 221, then closed
        start = time.monotonic()
        await pool.close(time.monotonic() + 0.3)  # far below the 5 s a QUIT may take
        assert time.monotonic() - start < 0.3 + 2.0
        assert not pool.closing
        assert not any(s.smtp.is_connected for s in sessions)
        await asyncio.wait_for(peers[1].hung_up.wait(), 5)  # cancelled: socket closed
        assert [p.lines for p in peers] == [[b"QUIT"], [b"QUIT"]]
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


async def test_loopback_dns_server_answers_over_udp_and_tcp() -> None:
    import dns.asyncquery
    import dns.message

    server = DnsServer().start()
    try:
        server.set("b.test", "MX", ["10 mx.b.test."])
        query = dns.message.make_query("b.test", "MX")
        for ask in (dns.asyncquery.udp, dns.asyncquery.tcp):
            answer = await ask(query, "127.0.0.1", timeout=2, port=server.port)
            assert [r.to_text() for r in answer.answer[0]] == ["10 mx.b.test."]
        missing = await dns.asyncquery.udp(dns.message.make_query("c.test", "A"), "127.0.0.1",
                                           timeout=2, port=server.port)
        assert missing.rcode() == dns.rcode.NXDOMAIN
    finally:
        server.stop()


async def test_loopback_dns_server_skips_a_port_held_over_udp(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first port number the kernel hands out is held over UDP by another process
    (EADDRINUSE took out a whole module once): the server moves to a port free over both."""
    import socket
    import socketserver

    import dns.asyncquery
    import dns.message

    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    held.bind(("127.0.0.1", 0))
    taken = held.getsockname()[1]
    real_bind = socketserver.TCPServer.server_bind
    calls: list[int] = []

    def bind_first_to_taken(self: socketserver.TCPServer) -> None:
        calls.append(1)
        if len(calls) == 1:  # the kernel's first pick: the number held over UDP
            self.server_address = ("127.0.0.1", taken)
        real_bind(self)

    monkeypatch.setattr(socketserver.TCPServer, "server_bind", bind_first_to_taken)
    try:
        server = DnsServer().start()
    finally:
        monkeypatch.undo()
        held.close()
    try:
        assert server.port != taken
        server.set("b.test", "A", ["127.0.0.3"])
        for ask in (dns.asyncquery.udp, dns.asyncquery.tcp):
            answer = await ask(dns.message.make_query("b.test", "A"), "127.0.0.1", timeout=2,
                               port=server.port)
            assert [r.to_text() for r in answer.answer[0]] == ["127.0.0.3"]
    finally:
        server.stop()


def test_no_dsn_for_a_null_sender_or_for_a_report() -> None:
    from proxy.outbound.claims import Claim
    from proxy.outbound.notify import dsn_copy
    from trustspace.whitelist import Whitelist

    row = Claim(id="0" * 32, mail_from="", rcpt="b@y.test", domain="y.test",
                message_id=None, size=1, attempts=0, created_at=0.0)
    copy, why = dsn_copy(None, None, "mx.x.test", row, b"", "5.0.0", "r", None, None,  # type: ignore[arg-type]
                         Whitelist.empty())
    assert copy is None and "null reverse-path" in why
    report = build_dsn(reporting_mta="mx.y.test", mail_from="a@x.test", rcpt="b@y.test",
                       original=b"Subject: s\r\n\r\n", action="failed", status="5.1.1",
                       diagnostic=None, remote_mta=None, arrival=0.0, explanation="x")
    row = Claim(id="0" * 32, mail_from="a@x.test", rcpt="b@y.test", domain="y.test",
                message_id=None, size=1, attempts=0, created_at=0.0)
    copy, why = dsn_copy(None, None, "mx.x.test", row, report, "5.0.0", "r", None, None,  # type: ignore[arg-type]
                         Whitelist.empty())
    assert copy is None and "no DSN for a DSN" in why
