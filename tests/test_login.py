"""Logins and their throttles across protocols: one identity per login, whatever its
spelling (issue 20 #2), for SMTP AUTH (submission) and IMAP LOGIN / AUTHENTICATE."""

from __future__ import annotations

import base64
import imaplib
import smtplib
import socket
import ssl
from collections.abc import Iterator

import pytest

from mss.login import login_address, throttle_name
from tests.node import DOMAIN, PASSWORD, Node, make_node

ALICE = f"alice@{DOMAIN}"
# spellings of alice's login that name her mailbox (issue 20 #2): trailing dot, leading
# space, full-width letter, ideographic full stops
SPELLINGS = [f"{ALICE}.", f" {ALICE}", "alice@\uff44emo.mssante.fr",
             "alice@demo\u3002mssante\u3002fr"]


def test_login_address_one_identity_per_spelling() -> None:
    for spelling in [*SPELLINGS, ALICE.upper(), f"{ALICE}  ", f"\uff41lice@{DOMAIN}"]:
        assert login_address(spelling) == ALICE, spelling
        assert throttle_name(spelling) == ALICE, spelling
    assert login_address("alice") is None
    assert login_address(f"al ice@{DOMAIN}") is None
    assert throttle_name(" Relay-\uff21 ") == "relay-a"  # no address: NFKC, folded


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = make_node(tmp_path_factory.mktemp("login"), in_process=True,
                  extra_config="\n[imap]\nlogin_failures = 3\nlogin_lockout = 120.0\n")
    n.config.write_text(n.config.read_text().replace(
        "[smtp]\n", "[smtp]\nauth_failures = 3\nauth_lockout = 120.0\n", 1))
    n.start()
    yield n
    if n.running:
        n.stop()


def smtp_from(node: Node, source: str) -> smtplib.SMTP:
    """A submission session from *source* (a loopback address: the per-address throttle
    stays out of the way, only the per-login one is under test)."""
    client = smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=10,
                          source_address=(source, 0))
    client.starttls(context=node.client_context())
    client.ehlo("client.example")
    return client


def smtp_plain(client: smtplib.SMTP, login: str, password: str) -> int:
    blob = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
    return client.docmd("AUTH", f"PLAIN {blob}")[0]


def test_smtp_lockout_holds_for_every_spelling(node: Node) -> None:
    for spelling in SPELLINGS:  # these spellings are alice's login
        with smtp_from(node, "127.0.0.20") as client:
            assert smtp_plain(client, spelling, PASSWORD) == 235, spelling
    # three failures, three spellings, three client addresses: one budget, now spent
    for n, spelling in enumerate(SPELLINGS[:3]):
        with smtp_from(node, f"127.0.0.{21 + n}") as client:
            assert smtp_plain(client, spelling, "wrong password") == 535, spelling
    with smtp_from(node, "127.0.0.30") as client:
        for spelling in [ALICE, *SPELLINGS]:
            assert smtp_plain(client, spelling, PASSWORD) == 454, spelling  # RFC 4954 §6
    rows = node.wait_audit(lambda r: r["event"] == "smtp.auth"
                           and r.get("reason") == "throttled", count=5)
    assert len(rows) == 5 and {r["actor"] for r in rows} == {ALICE}


class SourcedIMAP(imaplib.IMAP4_SSL):
    """IMAP over TLS from a chosen loopback source address."""

    def __init__(self, node: Node, source: str) -> None:
        self.source = source
        super().__init__("127.0.0.1", node.ports["imaps"], ssl_context=node.client_context(),
                         timeout=10)

    def _create_socket(self, timeout: float | None) -> ssl.SSLSocket:
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def imap_attempt(node: Node, source: str, login: str, password: str,
                 sasl: bool = False) -> str:
    """'OK', or the text of the NO reply."""
    client = SourcedIMAP(node, source)
    try:
        if sasl:  # RFC 4616 PLAIN, UTF-8 (LOGIN's quoted strings are 7-bit)
            client.authenticate("PLAIN",
                                lambda _: f"\0{login}\0{password}".encode())
        else:
            client.login(f'"{login}"', password)  # imaplib leaves the user unquoted
        return "OK"
    except imaplib.IMAP4.error as exc:
        return str(exc)
    finally:
        client.shutdown()


def test_imap_lockout_holds_for_every_spelling(node: Node) -> None:
    imap_spellings = [(SPELLINGS[0], False), (SPELLINGS[1], False), (SPELLINGS[2], True),
                      (SPELLINGS[3], True)]
    for spelling, sasl in imap_spellings:
        assert imap_attempt(node, "127.0.0.40", spelling, PASSWORD, sasl) == "OK", spelling
    for n, (spelling, sasl) in enumerate(imap_spellings[:3]):
        reply = imap_attempt(node, f"127.0.0.{41 + n}", spelling, "wrong password", sasl)
        assert "AUTHENTICATIONFAILED" in reply, (spelling, reply)
    for spelling, sasl in [(ALICE, False), *imap_spellings]:
        reply = imap_attempt(node, "127.0.0.50", spelling, PASSWORD, sasl)
        assert "[UNAVAILABLE]" in reply, (spelling, reply)
    rows = node.wait_audit(lambda r: r["event"] == "imap.login"
                           and r.get("reason") == "throttled", count=5)
    assert len(rows) == 5 and {r["actor"] for r in rows} == {ALICE}
