"""SMTP end to end: the real server on loopback driven by smtplib, aiosmtplib and swaks."""

from __future__ import annotations

import ast
import asyncio
import base64
import inspect
import smtplib
import socket
import ssl
import subprocess
import time
import typing
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.smtp import Session
from sqlalchemy import Engine

from mss.app import open_app
from mss.runtime import Runtime
from proxy.smtp import handler as handler_module
from proxy.smtp import policies, protocol
from proxy.smtp.handler import SmtpHandler
from proxy.smtp.listeners import SmtpListeners
from proxy.smtp.session import MssEnvelope, MssSession
from tests import peers
from tests.node import BACKENDS, DOMAIN, PASSWORD, Node, inbox_count, make_node
from tests.node import mx_session as mx
from tests.node import simple_message as message
from trustspace.cache import LiveWhitelist
from trustspace.policy import RecipientFacts
from trustspace.relays import Relay
from trustspace.whitelist import Whitelist

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
REMOTE = "dr.martin@operator-a.mssante.fr"
IN_PROCESS = True  # running_node served in a thread of this process (tests/conftest.py)
# the tests that read or write the store, whitelist, grants or audit trail run on both
# backends; those of the SMTP exchange alone ("protocol only") on SQLite
BACKENDS = BACKENDS



def submission(node: Node) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=10)
    client.starttls(context=node.client_context())
    client.login(ALICE, PASSWORD)
    return client




# --------------------------------------------------------------------------- MX

def test_mx_accepts_whitelisted_sender_for_hosted_mailbox(running_node: Node) -> None:
    before = inbox_count(running_node, BOB)
    with mx(running_node) as client:
        refused = client.sendmail(REMOTE, [BOB], message(REMOTE, BOB))
    assert refused == {}
    assert inbox_count(running_node, BOB) == before + 1
    rows = running_node.audit("--mailbox", BOB)
    delivered = [r for r in rows if r["event"] == "delivery.local"]
    assert delivered and delivered[-1]["mail_from"] == REMOTE
    assert delivered[-1]["whitelist_version"] is not None


def test_mx_refuses_sender_outside_trust_space(running_node: Node) -> None:
    with mx(running_node) as client:
        code, reply = client.mail("someone@gmail.com")
        assert (code, reply[:5]) == (550, b"5.7.1")
        assert b"gmail" not in reply  # public text names nothing
        client.rset()
        # the session stays usable
        assert client.mail(REMOTE)[0] == 250
    rows = running_node.wait_audit(lambda r: r["event"] == "smtp.sender.refused"
                                   and r["mail_from"] == "someone@gmail.com")
    assert rows and "gmail.com" in str(rows[-1]["reason"])
    assert rows[-1]["whitelist_version"] is not None


def test_mx_refuses_unknown_and_non_hosted_recipients(running_node: Node) -> None:
    with mx(running_node) as client:
        assert client.mail(REMOTE)[0] == 250
        code, reply = client.rcpt(f"nobody@{DOMAIN}")
        assert (code, reply[:5]) == (550, b"5.1.1")
        code, reply = client.rcpt("x@operator-b.mssante.fr")  # no relaying on MX
        assert (code, reply[:5]) == (550, b"5.1.1")
        assert client.rcpt(BOB)[0] == 250


@pytest.mark.backends("sqlite")  # protocol only
def test_mx_requires_starttls_before_mail(running_node: Node) -> None:
    with smtplib.SMTP("127.0.0.1", running_node.ports["mx"], timeout=10) as client:
        client.ehlo("mx.operator-a.fr")
        assert "starttls" in client.esmtp_features
        assert "auth" not in client.esmtp_features
        code, _ = client.mail(REMOTE)
        assert code == 530


@pytest.mark.backends("sqlite")  # protocol only
def test_mx_offers_no_auth(running_node: Node) -> None:
    with mx(running_node) as client:
        assert "auth" not in client.esmtp_features
        code, _ = client.docmd("AUTH", "PLAIN AGFsaWNlAHg=")
        assert code == 502


# --------------------------------------------------------------------------- submission

def test_submission_local_and_remote_delivery(running_node: Node) -> None:
    before = inbox_count(running_node, BOB)
    with submission(running_node) as client:
        refused = client.sendmail(ALICE, [BOB, REMOTE], message(ALICE, BOB))
    assert refused == {}
    assert inbox_count(running_node, BOB) == before + 1
    rows = running_node.audit("--mailbox", REMOTE)
    assert any(r["event"] == "delivery.queued" and r["rcpt"] == REMOTE for r in rows)


def test_submission_refuses_recipient_outside_trust_space(running_node: Node) -> None:
    with submission(running_node) as client:
        assert client.mail(ALICE)[0] == 250
        code, reply = client.rcpt("patient@gmail.com")
        assert (code, reply[:5]) == (550, b"5.7.1")
        assert client.rcpt(BOB)[0] == 250  # session kept
    rows = running_node.wait_audit(lambda r: r["event"] == "smtp.recipient.refused"
                                   and r["rcpt"] == "patient@gmail.com")
    assert rows and rows[-1]["actor"] == ALICE


def test_submission_sender_must_be_the_login(running_node: Node) -> None:
    with submission(running_node) as client:
        code, reply = client.mail(BOB)
        assert (code, reply[:5]) == (553, b"5.7.1")


@pytest.mark.backends("sqlite")  # protocol only
def test_auth_before_tls_refused(running_node: Node) -> None:
    with smtplib.SMTP("127.0.0.1", running_node.ports["submission"], timeout=10) as client:
        client.ehlo("client.example")
        assert "auth" not in client.esmtp_features  # RFC 4954 §4: not offered in clear
        code, _ = client.docmd("AUTH", "PLAIN AGFsaWNlQGRlbW8ubXNzYW50ZS5mcgB4")
        assert code == 530
        code, _ = client.mail(ALICE)
        assert code == 530


def test_wrong_password_refused_and_audited(running_node: Node) -> None:
    client = smtplib.SMTP("127.0.0.1", running_node.ports["submission"], timeout=10)
    client.starttls(context=running_node.client_context())
    with pytest.raises(smtplib.SMTPAuthenticationError) as info:
        client.login(ALICE, "wrong password")
    assert info.value.smtp_code == 535
    client.login(ALICE, PASSWORD)  # the session stays usable
    client.quit()
    rows = running_node.wait_audit(lambda r: r["event"] == "smtp.auth" and r["outcome"] == 8
                                   and r["actor"] == ALICE)
    assert rows and rows[-1]["reason"] == "wrong password"
    assert all("wrong password" not in str(v) for r in rows for k, v in r.items()
               if k != "reason")


@pytest.mark.backends("sqlite")  # protocol only
def test_auth_login_prompts_username_password(running_node: Node) -> None:
    import base64

    with smtplib.SMTP("127.0.0.1", running_node.ports["submission"], timeout=10) as client:
        client.starttls(context=running_node.client_context())
        client.ehlo("outlook.example")
        code, prompt = client.docmd("AUTH", "LOGIN")
        assert (code, base64.b64decode(prompt)) == (334, b"Username:")
        code, prompt = client.docmd(base64.b64encode(ALICE.encode()).decode())
        assert (code, base64.b64decode(prompt)) == (334, b"Password:")
        code, _ = client.docmd(base64.b64encode(PASSWORD.encode()).decode())
        assert code == 235


@pytest.mark.backends("sqlite")  # protocol only
def test_implicit_tls_submissions_port(running_node: Node) -> None:
    ctx = running_node.client_context()
    with smtplib.SMTP_SSL("127.0.0.1", running_node.ports["submissions"], context=ctx,
                          timeout=10) as client:
        client.login(ALICE, PASSWORD)
        assert client.sendmail(ALICE, [BOB], message(ALICE, BOB)) == {}


@pytest.mark.backends("sqlite")  # protocol only
def test_implicit_tls_client_gone_during_the_handshake(running_node: Node) -> None:
    """A client that connects to submissions and leaves before or during the TLS handshake
    costs nothing: no event loop error in the log, the next client served."""
    port = running_node.ports["submissions"]
    offset = running_node.log_path.stat().st_size
    for hello in (b"", b"\x16\x03\x01\x00\x05", b"EHLO not-tls\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            if hello:
                raw.sendall(hello)
    with smtplib.SMTP_SSL("127.0.0.1", port, context=running_node.client_context(),
                          timeout=10) as client:
        assert client.noop()[0] == 250
    time.sleep(0.3)  # the log lines of the closed connections written
    logged = running_node.log_path.read_bytes()[offset:].decode(errors="replace")
    assert "AssertionError" not in logged and "event loop error" not in logged, logged


async def test_aiosmtplib_submission(running_node: Node) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = ALICE, BOB, "aiosmtplib"
    msg.set_content("hello")
    errors, reply = await aiosmtplib.send(
        msg, hostname="127.0.0.1", port=running_node.ports["submission"], start_tls=True,
        tls_context=running_node.client_context(), username=ALICE, password=PASSWORD,
        timeout=10)
    assert errors == {} and reply.startswith("2.0.0 OK")


@pytest.mark.backends("sqlite")  # protocol only
def test_swaks_submission_and_mx(running_node: Node) -> None:
    swaks = peers.require_peer("swaks")
    # swaks only recommends its TLS module (Makefile DEBIAN_TEST_PACKAGES: libnet-ssleay-perl)
    support = subprocess.run([swaks, "--support"], capture_output=True, text=True, timeout=30)
    peers.require("TLS not available" not in support.stdout + support.stderr,
                  "swaks without TLS (Debian package 'libnet-ssleay-perl'; `make system-deps`)")
    before = inbox_count(running_node, BOB)
    out = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(running_node.ports["submission"]),
         "--tls", "--auth", "PLAIN", "--auth-user", ALICE, "--auth-password", PASSWORD,
         "--from", ALICE, "--to", BOB, "--header", "Subject: swaks", "--timeout", "20"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    cert, key = running_node.operator_certificate()
    out = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(running_node.ports["mx"]), "--tls",
         "--tls-cert", str(cert), "--tls-key", str(key),
         "--from", REMOTE, "--to", BOB, "--ehlo", "mx.operator-a.fr", "--timeout", "20"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(running_node.ports["mx"]), "--tls",
         "--tls-cert", str(cert), "--tls-key", str(key), "--from", "spam@example.com",
         "--to", BOB, "--timeout", "20"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "550 5.7.1" in out.stdout
    assert inbox_count(running_node, BOB) == before + 2


# --------------------------------------------------------------------------- DATA rules

def lines_until(tls: ssl.SSLSocket, count: int) -> list[bytes]:
    buf = b""
    while buf.count(b"\r\n") < count:
        chunk = tls.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\r\n")[:count]


def smtp_prelude(tls: ssl.SSLSocket) -> None:
    tls.sendall(b"EHLO mx.operator-a.fr\r\n")
    buf = b""
    while b"250 " not in buf:
        buf += tls.recv(65536)
    tls.sendall(f"MAIL FROM:<{REMOTE}>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n".encode())
    replies = lines_until(tls, 3)
    assert [r[:3] for r in replies] == [b"250", b"250", b"354"], replies


@pytest.mark.parametrize("smuggle", [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"])
@pytest.mark.backends("sqlite")  # protocol only
def test_smuggling_sequences_do_not_end_data(running_node: Node, smuggle: bytes) -> None:
    before_alice = inbox_count(running_node, ALICE)
    tls = running_node.mx_tls_socket()
    smtp_prelude(tls)
    injected = (b"Subject: first\r\n\r\nbody" + smuggle
                + f"MAIL FROM:<{REMOTE}>\r\nRCPT TO:<{ALICE}>\r\nDATA\r\n".encode()
                + b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n")
    tls.sendall(injected)
    reply = lines_until(tls, 1)[0]
    # one message, refused as a whole for its bare CR/LF; no second transaction ran
    assert reply.startswith(b"554 5.6.0"), reply
    tls.sendall(b"NOOP\r\n")
    assert lines_until(tls, 1)[0].startswith(b"250")
    tls.close()
    assert inbox_count(running_node, ALICE) == before_alice


@pytest.mark.backends("sqlite")  # protocol only
def test_dot_stuffing_and_crlf_dot_crlf(running_node: Node) -> None:
    tls = running_node.mx_tls_socket()
    smtp_prelude(tls)
    tls.sendall(b"Subject: dots\r\n\r\n..leading dot\r\n.\r\n")
    assert lines_until(tls, 1)[0].startswith(b"250 2.0.0")
    tls.close()


@pytest.mark.backends("sqlite")  # protocol only
def test_oversized_mail_refused_and_nothing_stored(tmp_path: object, fresh_node: Node) -> None:
    text = fresh_node.config.read_text().replace("max_message_size = 52428800",
                                                  "max_message_size = 100000")
    fresh_node.config.write_text(text)
    fresh_node.start()
    try:
        with mx(fresh_node) as client:
            assert "size" in client.esmtp_features and client.esmtp_features["size"] == "100000"
            # declared size over the limit: refused at MAIL (RFC 1870 §6.1)
            code, _ = client.docmd(f"MAIL FROM:<{REMOTE}> SIZE=200000")
            assert code == 552
            client.rset()
            # undeclared size: the limit holds while reading DATA (RFC 1870 §6.3)
            big = message(REMOTE, BOB, body="x" * 70 + "\n") * 2000
            assert client.mail(REMOTE)[0] == 250 and client.rcpt(BOB)[0] == 250
            code, reply = client.data(big)
            assert (code, reply[:5]) == (552, b"5.3.4")
            assert client.noop()[0] == 250  # the session continues after the refusal
        assert inbox_count(fresh_node, BOB) == 0
        rows = fresh_node.wait_audit(lambda r: r["event"] == "smtp.message.refused")
        assert rows and "552" in str(rows[-1]["reason"])
    finally:
        fresh_node.stop()


@pytest.mark.backends("sqlite")  # protocol only
def test_long_line_refused(running_node: Node) -> None:
    tls = running_node.mx_tls_socket()
    smtp_prelude(tls)
    tls.sendall(b"Subject: long\r\n\r\n" + b"a" * 1200 + b"\r\n.\r\n")
    assert lines_until(tls, 1)[0].startswith(b"500 5.5.2")
    tls.sendall(b"NOOP\r\n")
    assert lines_until(tls, 1)[0].startswith(b"250")
    tls.close()


@pytest.mark.backends("sqlite")  # protocol only
def test_malformed_commands_answered_session_kept(running_node: Node) -> None:
    with mx(running_node) as client:
        assert client.docmd("FOO")[0] == 500
        assert client.docmd("MAIL", "TO:<x>")[0] == 501
        assert client.docmd("RCPT", f"TO:<{BOB}>")[0] == 503  # no MAIL yet
        assert client.docmd("DATA")[0] == 503
        assert client.docmd("MAIL FROM:<not an address>")[0] in (501, 553)
        assert client.docmd("EHLO")[0] == 501
        assert client.noop()[0] == 250
        assert client.sendmail(REMOTE, [BOB], message(REMOTE, BOB)) == {}


def test_patient_is_audited_as_pseudonym_only(running_node: Node) -> None:
    from audit.patient import pseudonym, pseudonym_key
    from tests import xdm_packages

    ins = "2790699123456"  # in the XDM metadata (X-MSS-INS is only the flag O/N)
    package = xdm_packages.Xdm(patient=f"{ins}^^^&1.2.250.1.213.1.4.8&ISO").zip()
    body = xdm_packages.message(package, sender=ALICE, rcpt=BOB,
                                headers=xdm_packages.GOOD_HEADERS)
    with submission(running_node) as client:
        assert client.sendmail(ALICE, [BOB], body) == {}
    alias = pseudonym(pseudonym_key(running_node.data_dir / "keys" / "pseudonym.key"), ins)
    rows = running_node.audit("--patient", alias)
    assert {r["event"] for r in rows} >= {"smtp.message.accepted", "delivery.local"}
    # grep in another process: closing a descriptor of the database here would drop the
    # in-process server's SQLite locks (POSIX locks are per process)
    grep = subprocess.run(["grep", "-rlF", ins, str(running_node.data_dir)],
                          capture_output=True, text=True)
    assert grep.returncode == 1 and grep.stdout == "", grep  # 1: nothing found (2: error)



def test_mx_client_certificate_dn_must_be_listed_for_the_domain(running_node: Node) -> None:
    from trustspace.pki import issue_certificate

    pki = running_node.data_dir / "pki"
    # the whitelist lists "CN=mx.operator-a.fr,OU=312345678,O=Operator A,ST=Paris (75),C=FR";
    # the same DN in another order, case and spacing must match
    listed, listed_key = issue_certificate(
        pki, "operator-a", ["mx.operator-a.fr"],
        subject="C=FR,ST=Paris  (75),O=operator a,OU=312345678,CN=MX.Operator-A.fr")
    other, other_key = issue_certificate(
        pki, "intruder", ["mx.intruder.fr"],
        subject="CN=mx.intruder.fr,OU=399999999,O=Intruder,ST=Paris (75),C=FR")
    for cert, key, expected in ((listed, listed_key, 250), (other, other_key, 550)):
        ctx = running_node.client_context()
        ctx.load_cert_chain(cert, key)
        with smtplib.SMTP("127.0.0.1", running_node.ports["mx"], timeout=10) as client:
            client.ehlo("mx.operator-a.fr")
            client.starttls(context=ctx)
            client.ehlo("mx.operator-a.fr")
            code, reply = client.mail(REMOTE)
            assert code == expected, reply
            if code == 550:
                assert reply.startswith(b"5.7.1") and b"intruder" not in reply.lower()
    rows = running_node.wait_audit(lambda r: r["event"] == "smtp.sender.refused"
                                   and "not listed" in str(r["reason"]))
    assert rows and "CN=mx.intruder.fr" in str(rows[-1]["reason"])


def test_auth_throttled_after_repeated_failures(tmp_path: Path) -> None:
    """RFC 4954 §6: after auth_failures wrong passwords the login (and the address) get
    454 4.7.0 without a password check, audited, until auth_lockout has passed."""
    node = make_node(tmp_path)
    node.config.write_text(node.config.read_text().replace(
        "[smtp]\n", "[smtp]\nauth_failures = 3\nauth_lockout = 2.0\n", 1))
    node.start()

    def plain(client: smtplib.SMTP, user: str, password: str) -> None:
        client.user, client.password = user, password  # one attempt: PLAIN only
        client.auth("PLAIN", client.auth_plain)

    try:
        client = smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=10)
        client.starttls(context=node.client_context())
        client.ehlo()
        for _ in range(3):
            with pytest.raises(smtplib.SMTPAuthenticationError) as wrong:
                plain(client, ALICE, "wrong password")
            assert wrong.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPAuthenticationError) as locked:
            plain(client, ALICE, PASSWORD)  # even the right password: locked
        assert locked.value.smtp_code == 454
        assert locked.value.smtp_error.startswith(b"4.7.0")
        # the address is locked too: another user from 127.0.0.1 waits as well
        with pytest.raises(smtplib.SMTPAuthenticationError) as other:
            plain(client, BOB, PASSWORD)
        assert other.value.smtp_code == 454
        time.sleep(2.2)
        plain(client, ALICE, PASSWORD)  # lockout over
        client.quit()
        rows = node.wait_audit(lambda r: r["event"] == "smtp.auth"
                               and str(r.get("reason", "")).startswith("throttled"),
                               count=2)
        assert len(rows) == 2 and all(r["outcome"] == 4 for r in rows)
    finally:
        node.stop()


# --------------------------------------------------------------------------- EHLO

def _ehlo_lines(client: smtplib.SMTP, name: str = "client.example") -> list[str]:
    code, text = client.ehlo(name)
    assert code == 250
    return text.decode().split("\n")[1:]  # the capabilities, after the greeting line


def test_ehlo_capabilities_exact_per_listener(tmp_path: Path) -> None:
    """Each listener's EHLO capability list, exactly (issue 12 §3: no SASL mechanism
    "blocked", which aiosmtpd took from a handler method named auth_blocked). AUTH only
    after TLS (RFC 4954 §4), never on the MX. Issue 18: ENHANCEDSTATUSCODES (RFC 2034)
    and DSN (RFC 3461) on every listener."""
    node = make_node(tmp_path)
    node.start()
    head = ["SIZE 52428800", "8BITMIME"]
    tail = ["ENHANCEDSTATUSCODES", "DSN", "PIPELINING", "HELP"]
    try:
        with smtplib.SMTP("127.0.0.1", node.ports["mx"], timeout=10) as client:
            assert _ehlo_lines(client) == [*head, "STARTTLS", *tail]
            client.starttls(context=node.mx_client_context())
            assert _ehlo_lines(client) == [*head, *tail]
        for name in ("submission", "relay"):
            with smtplib.SMTP("127.0.0.1", node.ports[name], timeout=10) as client:
                assert _ehlo_lines(client) == [*head, "STARTTLS", *tail], name
                client.starttls(context=node.client_context())
                assert _ehlo_lines(client) == [*head, "AUTH LOGIN PLAIN", *tail], name
                code, _ = client.docmd("AUTH", "BLOCKED")  # was taken for a mechanism
                assert code == 504 and client.noop()[0] == 250  # session kept
        with smtplib.SMTP_SSL("127.0.0.1", node.ports["submissions"], timeout=10,
                              context=node.client_context()) as client:
            assert _ehlo_lines(client) == [*head, "AUTH LOGIN PLAIN", *tail]
    finally:
        node.stop()


# --------------------------------------------------------------------------- From: / Sender:

def _headers_then(client: smtplib.SMTP, headers: str, sender: str = ALICE) -> tuple[int, bytes]:
    """One transaction to BOB whose message has *headers*; the DATA reply."""
    assert client.mail(sender)[0] == 250 and client.rcpt(BOB)[0] == 250
    code, reply = client.data(f"{headers}Subject: t\r\n\r\nBonjour.\r\n".encode())
    return code, reply


def test_submission_header_from_and_sender_must_be_allowed(running_node: Node) -> None:
    """RFC 6409 §8: the submission server enforces submission rights, for the author
    fields too (issue 20 #6): From: and Sender: must be addresses the login may send as
    (the MAIL FROM rule); an RFC 5322-invalid author field is refused 550 5.6.0."""
    before = inbox_count(running_node, BOB)
    refused = [
        (f'From: "Dr Bob" <{BOB}>\r\n', b"5.7.1"),
        ("From: dg@ars.sante.fr\r\n", b"5.7.1"),
        (f"From: {ALICE}, {BOB}\r\nSender: {ALICE}\r\n", b"5.7.1"),  # every From address
        (f"From: {ALICE}\r\nSender: {BOB}\r\n", b"5.7.1"),
        ("To: someone\r\n", b"5.6.0"),  # no From (RFC 5322 §3.6: required)
        (f"From: {ALICE}\r\nFrom: {BOB}\r\n", b"5.6.0"),  # two From fields
        (f"From: {ALICE})<{BOB}>\r\n", b"5.6.0"),  # a reader may show bob
        (f"From: team: {ALICE};\r\n", b"5.6.0"),  # a group
    ]
    with submission(running_node) as client:
        for headers, enhanced in refused:
            code, reply = _headers_then(client, headers)
            assert (code, reply[:5]) == (550, enhanced), (headers, reply)
            assert b"bob" not in reply.lower()  # the public text names no address
        allowed = [f'From: "Alice" <{ALICE.upper()}>\r\nSender: {ALICE}\r\n',
                   f"From: =?utf-8?q?Dr_Al=C3=AFce?= <{ALICE}>\r\n"]
        for headers in allowed:
            code, reply = _headers_then(client, headers)
            assert code == 250, (headers, reply)
    assert inbox_count(running_node, BOB) == before + len(allowed)
    rows = running_node.wait_audit(
        lambda r: r["event"] == "smtp.message.refused" and r["actor"] == ALICE
        and str(r["reason"]).startswith("header_"))
    assert len(rows) >= len(refused)
    spoof = [r for r in rows if "dg@ars.sante.fr" in str(r["reason"])]
    assert spoof and spoof[-1]["detail"] == {"check": "header_sender_not_allowed"}  # type: ignore[comparison-overlap]


# --------------------------------------------------------------------------- connection records

def _session_events(node: Node, session: str) -> list[str]:
    return [str(r["event"]) for r in node.audit() if r.get("session") == session]


def _wait_session(node: Node, predicate: object) -> str:
    rows = node.wait_audit(predicate)
    assert rows, "no audit record of the session"
    return str(rows[-1]["session"])


def test_connection_records_survive_starttls_and_session_end(running_node: Node) -> None:
    """Issue 12 §4: aiosmtpd replaces the session at STARTTLS; the buffered smtp.connect
    must survive it (one session id per connection), implicit TLS records smtp.tls, and
    a session without a transaction leaves its records at its end."""
    with submission(running_node) as client:  # STARTTLS, then a transaction
        subject = f"records {time.time_ns()}"
        assert client.sendmail(ALICE, [BOB], message(ALICE, BOB, subject)) == {}
    session = _wait_session(running_node, lambda r: r["event"] == "smtp.message.accepted"
                            and r["listener"] == "submission")
    events = _session_events(running_node, session)
    assert events[:3] == ["smtp.connect", "smtp.tls", "smtp.auth"], events
    assert "smtp.message.accepted" in events

    ctx = running_node.client_context()
    with smtplib.SMTP_SSL("127.0.0.1", running_node.ports["submissions"], context=ctx,
                          timeout=10) as client:
        client.login(ALICE, PASSWORD)
    session = _wait_session(running_node, lambda r: r["event"] == "smtp.auth"
                            and r["listener"] == "submissions")
    assert _session_events(running_node, session)[:3] == ["smtp.connect", "smtp.tls",
                                                          "smtp.auth"]

    with smtplib.SMTP("127.0.0.1", running_node.ports["mx"], timeout=10,
                      source_address=("127.0.0.61", 0)) as client:
        client.ehlo("mx.operator-a.fr")  # EHLO, QUIT: no transaction
    rows = running_node.wait_audit(lambda r: r["event"] == "smtp.connect"
                                   and r["remote_addr"] == "127.0.0.61")
    assert len(rows) == 1 and rows[0]["listener"] == "mx"

    with smtplib.SMTP("127.0.0.1", running_node.ports["mx"], timeout=10,
                      source_address=("127.0.0.62", 0)) as client:
        client.ehlo("mx.operator-a.fr")
        client.starttls(context=running_node.mx_client_context())
        client.ehlo("mx.operator-a.fr")  # STARTTLS, then QUIT: no transaction
    rows = running_node.wait_audit(lambda r: r["remote_addr"] == "127.0.0.62"
                                   and r["event"] == "smtp.tls")
    assert rows
    assert _session_events(running_node, str(rows[0]["session"])) == ["smtp.connect",
                                                                      "smtp.tls"]


def test_queued_as_id_is_the_queue_and_audit_id(running_node: Node) -> None:
    """Issue 12 §3: the id of "250 ... queued as ID" finds the message's queue rows with
    mss queue show / list and is the queue id of its audit records."""
    other = "dr.durand@operator-b.mssante.fr"
    with submission(running_node) as client:
        assert client.mail(ALICE)[0] == 250
        assert client.rcpt(REMOTE)[0] == 250 and client.rcpt(other)[0] == 250
        code, reply = client.data(message(ALICE, REMOTE, "queued as"))
    assert code == 250, reply
    queue_id = reply.decode().rsplit("queued as ", 1)[1]
    shown = running_node.cli("queue", "show", queue_id).stdout
    ids = [line.split()[1] for line in shown.splitlines() if line.startswith("id:")]
    assert len(ids) == 2 and all(i.startswith(queue_id) for i in ids), shown
    assert f"to:           {REMOTE}" in shown and f"to:           {other}" in shown
    shown_json = running_node.cli_json("queue", "show", queue_id)
    assert sorted(r["rcpt"] for r in shown_json) == sorted([REMOTE, other])
    listed = running_node.cli_json("queue", "list")
    assert [r["id"].startswith(queue_id) for r in listed].count(True) == 2
    accepted = running_node.wait_audit(lambda r: r["event"] == "smtp.message.accepted"
                                       and r["detail"]["queue_id"] == queue_id)  # type: ignore[index]
    assert len(accepted) == 1
    queued = running_node.wait_audit(lambda r: r["event"] == "delivery.queued"
                                     and r["session"] == accepted[0]["session"])
    assert sorted(r["detail"]["queue_id"] for r in queued) == sorted(ids)  # type: ignore[index]
    ambiguous = running_node.cli("queue", "retry", queue_id, check=False)
    assert ambiguous.returncode == 2 and "several queue rows" in ambiguous.stderr


@pytest.mark.backends("sqlite")  # protocol only
def test_line_length_limits_exact(running_node: Node) -> None:
    """RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with its CRLF, the
    transparency dot not counted; §4.5.3.1.4: a command line at most 512 (issue 20)."""
    before = inbox_count(running_node, BOB)
    cases = [(b"a" * 998 + b"\r\n", b"250 2.0.0"),  # 1000 octets: accepted
             (b"a" * 999 + b"\r\n", b"500 5.5.2"),  # 1001: refused
             (b"." + b"." + b"a" * 997 + b"\r\n", b"250 2.0.0"),  # 1001 on the wire, stuffed
             (b"." + b"." + b"a" * 998 + b"\r\n", b"500 5.5.2")]
    tls = running_node.mx_tls_socket()
    for line, expected in cases:
        smtp_prelude(tls)
        tls.sendall(b"Subject: long\r\n\r\n" + line + b".\r\n")
        reply = lines_until(tls, 1)[0]
        assert reply.startswith(expected), (len(line), reply)
    noop = b"NOOP " + b"x" * (512 - 7) + b"\r\n"
    for command, expected in ((noop, b"250"), (noop[:5] + b"x" + noop[5:], b"500"),
                              (b"NOOP " + b"x" * 994 + b"\r\n", b"500")):
        tls.sendall(command)
        assert lines_until(tls, 1)[0][:3] == expected, len(command)
    tls.sendall(b"QUIT\r\n")
    tls.close()
    assert inbox_count(running_node, BOB) == before + 2


@pytest.mark.backends("sqlite")  # protocol only
def test_aiosmtpd_log_is_json_without_client_text(running_node: Node) -> None:
    """Issue 20: aiosmtpd's own logger wrote the first word of unrecognised lines (the
    message text a client sends after a refused DATA), and not as JSON."""
    import json

    assert running_node.log_path is not None
    tls = running_node.mx_tls_socket()
    tls.sendall(b"EHLO mx.operator-a.fr\r\n")
    buf = b""
    while b"250 " not in buf:
        buf += tls.recv(65536)
    tls.sendall(b"DATA\r\n")  # refused: no MAIL; the client sends its text anyway
    assert lines_until(tls, 1)[0][:3] == b"503"
    tls.sendall(b"Confidentialpatientword is ill\r\n")
    assert lines_until(tls, 1)[0][:3] == b"500"
    tls.sendall(b"QUIT\r\n")
    tls.close()
    deadline = time.monotonic() + 5
    text = ""
    while time.monotonic() < deadline and "unrecognised" not in text:
        time.sleep(0.1)
        text = running_node.log_path.read_text()
    assert "unrecognised" in text  # aiosmtpd's record, as a template
    assert "confidentialpatientword" not in text.lower()
    for line in text.splitlines():
        assert isinstance(json.loads(line), dict), line


# --------------------------------------------------------------------------- postmaster

def test_postmaster_config_is_an_address(tmp_path: Path) -> None:
    from mss.config import ConfigError, parse_config

    cfg = tmp_path / "mss.toml"
    assert parse_config({}, cfg).smtp.postmaster == ""
    assert parse_config({"smtp": {"postmaster": " Admin@Demo.MSSante.fr "}},
                        cfg).smtp.postmaster == "admin@demo.mssante.fr"
    with pytest.raises(ConfigError, match=r"smtp\.postmaster"):
        parse_config({"smtp": {"postmaster": "admin"}}, cfg)


@pytest.mark.backends("sqlite")  # protocol only
def test_postmaster_unset_refuses_bare_postmaster(running_node: Node) -> None:
    with mx(running_node) as client:
        assert client.mail(REMOTE)[0] == 250
        code, reply = client.rcpt("Postmaster")
        assert (code, reply[:5]) == (550, b"5.1.1")
    assert running_node.wait_audit(lambda r: r["event"] == "smtp.recipient.refused"
                                   and "smtp.postmaster is not set" in str(r["reason"]))


def test_postmaster_of_every_hosted_domain(tmp_path: Path) -> None:
    """RFC 5321 §4.5.1: postmaster@ each hosted domain, and <Postmaster>, are accepted
    and stored in the smtp.postmaster mailbox (issue 20)."""
    node = make_node(tmp_path)
    secretariat = f"secretariat@{DOMAIN}"
    node.config.write_text(node.config.read_text().replace(
        "[smtp]\n", f'[smtp]\npostmaster = "{secretariat}"\n', 1))
    node.cli("domain", "add", "clinique.test")
    node.start()
    try:
        with mx(node) as client:
            assert client.mail(REMOTE)[0] == 250
            for rcpt in (f"postmaster@{DOMAIN}", "POSTMASTER@clinique.test", "Postmaster"):
                code, reply = client.rcpt(rcpt)
                assert code == 250, (rcpt, reply)
            assert client.rcpt("postmaster@operator-b.mssante.fr")[0] == 550  # not ours
            assert client.data(message(REMOTE, f"postmaster@{DOMAIN}"))[0] == 250
        with submission(node) as client:
            assert client.sendmail(ALICE, [f"postmaster@{DOMAIN}"],
                                   message(ALICE, f"postmaster@{DOMAIN}")) == {}
        assert inbox_count(node, secretariat) == 2  # one copy per message
        rows = node.wait_audit(lambda r: r["event"] == "delivery.local"
                               and r["mailbox"] == secretariat, count=2)
        assert len(rows) == 2
    finally:
        node.stop()


# --------------------------------------------------------------------------- the seam
# (issue 13 point 6) the protocol engine, its handler and the listener policies

def _hints_without_any(hint: object) -> bool:
    return hint is not typing.Any and all(_hints_without_any(a) for a in typing.get_args(hint))


async def test_session_fields_are_all_typed() -> None:
    """Every attribute an MssSession or MssEnvelope gets beyond aiosmtpd's own has a
    declared type, and none is Any (mypy strict sees each field)."""
    for cls, made in ((MssSession, MssSession(asyncio.get_running_loop())),
                      (MssEnvelope, MssEnvelope())):
        base = cls.__mro__[1]
        own = set(vars(made)) - set(vars(base(asyncio.get_running_loop()) if base is Session
                                         else base()))
        hints = typing.get_type_hints(cls)
        assert own and own <= set(hints), own - set(hints)
        assert all(_hints_without_any(hints[name]) for name in own), hints


def _called_hooks(tree: ast.AST) -> set[str]:
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "hooks"}


def test_protocol_calls_only_declared_hooks_the_handler_implements() -> None:
    """protocol.py knows its handler through the SmtpHooks Protocol only: it imports no
    handler, calls no hook the Protocol does not declare, and SmtpHandler implements
    every declared hook with the same parameters (aiosmtpd's handle_* hooks included)."""
    source = Path(protocol.__file__).read_text()
    tree = ast.parse(source)
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "proxy.smtp.handler" not in imported and "self.event_handler." not in source
    declared = {name for name, value in vars(protocol.SmtpHooks).items()
                if inspect.isfunction(value) and not name.startswith("_")}
    assert _called_hooks(tree) <= declared, _called_hooks(tree) - declared
    aiosmtpd_hooks = {name for name in dir(SmtpHandler) if name.startswith("handle_")}
    assert {"handle_EHLO", "handle_MAIL", "handle_RCPT", "handle_DATA"} <= aiosmtpd_hooks
    assert aiosmtpd_hooks <= declared
    for name in declared:
        expected = list(inspect.signature(getattr(protocol.SmtpHooks, name)).parameters)
        assert list(inspect.signature(getattr(SmtpHandler, name)).parameters) == expected


def test_handler_has_no_listener_mode_branch() -> None:
    """What differs between MX, submission and relay is one policy object per kind
    (proxy/smtp/policies.py), not comparisons of a mode in the handler."""
    tree = ast.parse(Path(handler_module.__file__).read_text())
    compared = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Compare)
                for side in (node.left, *node.comparators)
                if isinstance(side, ast.Attribute) and side.attr == "mode"]
    assert compared == []
    assert "mode ==" not in Path(handler_module.__file__).read_text()


def _author_message(from_: str, sender: str | None = None) -> bytes:
    head = f"From: {from_}\r\n" + (f"Sender: {sender}\r\n" if sender else "")
    return (head + "To: bob@example.test\r\nSubject: x\r\n\r\nbody\r\n").encode()


async def test_listener_policies_decide_per_kind(db_engine: Engine) -> None:
    """Each kind's checks, as values: the author rule of submission (the login's own
    address) and relay (its domains), none on the MX; the recipient rule; the throttle
    identity; and MX and relay refuse to exist without a certificate verifier."""
    engine = db_engine
    session = MssSession(asyncio.get_running_loop())
    session.login, session.may_send_as = ALICE, frozenset({ALICE})
    submission_policy = policies.listener_policy("submission", engine, None,
                                                 LiveWhitelist(engine))
    assert submission_policy.data_refusal(session, _author_message(ALICE)) is None
    refused = submission_policy.data_refusal(session, _author_message(BOB))
    assert refused is not None and refused.reply.startswith("550 5.7.1 From")
    assert refused.reason.startswith("header_sender_not_allowed: From:")
    refused = submission_policy.data_refusal(session, _author_message(ALICE, BOB))
    assert refused is not None and refused.reply.startswith("550 5.7.1 Sender")
    assert submission_policy.checks_directory and submission_policy.adds_message_id
    assert submission_policy.throttle_name(b" Alice@" + DOMAIN.encode()) == ALICE

    relay = policies.RelayPolicy(engine, certificates=None)  # type: ignore[arg-type]
    session.relay = Relay("hopital", None, None, frozenset({DOMAIN}))
    assert relay.data_refusal(session, _author_message(BOB)) is None  # any of its domains
    refused = relay.data_refusal(session, _author_message(REMOTE))
    assert refused is not None and "relay hopital may not send as" in refused.reason
    assert not relay.may_send_as(session, "").accepted  # null reverse-path
    assert relay.throttle_name(b"hopital") == "relay:hopital"

    mx_policy = policies.MxPolicy(certificates=None)  # type: ignore[arg-type]
    assert mx_policy.data_refusal(session, _author_message(REMOTE)) is None
    assert not mx_policy.checks_directory and not mx_policy.adds_message_id
    remote = RecipientFacts(address=REMOTE, domain=REMOTE.split("@")[1],
                            domain_hosted=False, mailbox_exists=False,
                            mailbox_enabled=False)
    assert not mx_policy.recipient(remote, Whitelist.empty()).accepted  # no relaying
    for kind in ("mx", "relay"):
        with pytest.raises(ValueError, match="needs an PeerVerifier"):
            policies.listener_policy(kind, engine, None, LiveWhitelist(engine))  # type: ignore[arg-type]


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """One SMTP reply, its last line (RFC 5321 §4.2.1: "code SP" ends it)."""
    while True:
        line = await asyncio.wait_for(reader.readline(), 10)
        assert line, "connection closed"
        if line[3:4] != b"-":
            return line


# submissions is TLS from the first byte (RFC 8314 §3), which aiosmtpd cannot see
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_drain_finishes_data_in_progress_then_421(tmp_path: Path) -> None:
    """SmtpListeners.stop (shutdown): a DATA transaction in progress finishes and gets
    its 250; then every session left, idle or not, gets 421 4.3.2 and is closed."""
    node = make_node(tmp_path)
    app = open_app(node.config)
    runtime = Runtime.build(app)
    await runtime.committer.start()
    listeners = SmtpListeners(runtime)
    await listeners.start()
    try:
        port, context = node.ports["submissions"], node.client_context()
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        busy_r, busy_w = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        for reader, writer in ((idle_r, idle_w), (busy_r, busy_w)):
            assert (await _reply(reader)).startswith(b"220")
            writer.write(b"EHLO client.example\r\n")
            assert (await _reply(reader)).startswith(b"250 ")
        plain = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
        for command, code in ((b"AUTH PLAIN " + plain, b"235"),
                              (f"MAIL FROM:<{ALICE}>".encode(), b"250"),
                              (f"RCPT TO:<{BOB}>".encode(), b"250"), (b"DATA", b"354")):
            busy_w.write(command + b"\r\n")
            assert (await _reply(busy_r)).startswith(code), command
        data = message(ALICE, BOB)
        busy_w.write(data[:40])  # part of the message: DATA in progress
        for _ in range(200):
            if any(s.busy for s in listeners.protocols):
                break
            await asyncio.sleep(0.05)
        assert any(s.busy for s in listeners.protocols)
        drain = asyncio.ensure_future(listeners.stop(time.monotonic() + 20))
        await asyncio.sleep(0.3)
        assert not drain.done()  # waits for the transaction
        with pytest.raises(TimeoutError):  # and the idle session is not closed yet
            await asyncio.wait_for(idle_r.readline(), 0.2)
        busy_w.write(data[40:] + b".\r\n")
        assert (await _reply(busy_r)).startswith(b"250 2.0.0 OK queued as")
        for reader in (busy_r, idle_r):
            assert (await _reply(reader)).startswith(b"421 4.3.2")
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed
        for writer in (busy_w, idle_w):
            writer.close()
        await asyncio.wait_for(drain, 10)
        assert not any(s.transport is not None and not s.transport.is_closing()
                       for s in listeners.protocols)
    finally:
        await listeners.stop(time.monotonic() + 5)
        await runtime.committer.stop(time.monotonic() + 10)
        app.close()
    assert inbox_count(node, BOB) == 1
