"""SASL EXTERNAL (RFC 4422 appendix A) on the certificate fronts, with client certificates
of a test PKI shaped like IGC-Santé, over real sockets: smtplib and imaplib over a
client-certificate TLS context, curl --cert (IMAP), openssl s_client (SMTP). A revoked,
expired, other-CA or unbound certificate is refused (``535 5.7.8``, ``NO
[AUTHENTICATIONFAILED]``) with its precise audit reason; the mechanisms each front offers;
the AUTH line bound of RFC 4954 §4; throttling by certificate."""

from __future__ import annotations

import base64
import imaplib
import shutil
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.node import Node, make_node
from trustspace.testpki import DEFAULT_SERVERS, ServerSpec, init_test_pki

pytestmark = pytest.mark.timeout(180)

DOMAIN = "b.mssante.test"
SERVER_NAME = "mx.operator-b.test"  # the node's certificate (test PKI operator-b)
LPS = ServerSpec("lps", "lps.editeur.test", "1750000011", "EDITEUR LPS TEST", "Paris (75)")
UNBOUND = ServerSpec("unbound", "lps2.editeur.test", "1750000012", "EDITEUR NON LIE",
                     "Paris (75)")
LOCKED = ServerSpec("locked", "lps3.editeur.test", "1750000013", "EDITEUR BLOQUE",
                    "Paris (75)")
SUBJECTS = {s.name: s.subject for s in (*DEFAULT_SERVERS, LPS, UNBOUND, LOCKED)}
APP = f"lps@{DOMAIN}"
SOURCES = iter(f"127.0.22.{n}" for n in range(10, 250))  # CONTRACTS.md: sasl's loopback


@dataclass
class Setup:
    node: Node
    pki: Path
    other: Path  # another test PKI: the same LPS subject under another root


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("external")
    pki, other = base / "pki", base / "other-pki"
    init_test_pki(pki, (*DEFAULT_SERVERS, LPS, UNBOUND, LOCKED))
    init_test_pki(other, (LPS,))
    tls = {"cert_file": pki / "operator-b.crt", "key_file": pki / "operator-b.key",
           "ca_file": pki / "root.crt"}
    node = make_node(base / "b", with_whitelist=False, domain=DOMAIN, tls=tls,
                     extra_config=f'\n[pki]\ncrl_files = ["{pki / "organisations.crl.pem"}"]\n')
    node.cli("mailbox", "add", APP, "--type", "APP", "--cert", str(pki / "lps.crt"))
    for name in ("expired", "revoked", "locked"):  # bound: refused for the certificate itself
        node.cli("mailbox", "add", f"{name}@{DOMAIN}", "--type", "APP",
                 "--cert-dn", SUBJECTS[name])
    node.start()
    yield Setup(node, pki, other)
    node.stop()


def context(s: Setup, name: str | None, pki: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(s.pki / "root.crt"))
    ctx.check_hostname = False  # 127.0.0.1; curl and s_client below check the name
    if name is not None:
        where = pki or s.pki
        ctx.load_cert_chain(where / f"{name}.crt", where / f"{name}.key")
    return ctx


def smtp(s: Setup, listener: str, ctx: ssl.SSLContext) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", s.node.ports[listener], timeout=30,
                          source_address=(next(SOURCES), 0))
    client.ehlo("lps.test")
    client.starttls(context=ctx)
    client.ehlo("lps.test")
    return client


class _Imap(imaplib.IMAP4):
    """imaplib from a source address of its own (one throttle key per test)."""

    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=30)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))


def imap(s: Setup, listener: str, ctx: ssl.SSLContext) -> imaplib.IMAP4:
    client = _Imap(s.node.ports[listener], next(SOURCES))
    client.starttls(ssl_context=ctx)
    return client


# ------------------------------------------------------------------------------ fronts

def test_each_front_offers_its_mechanisms(setup: Setup) -> None:
    with smtp(setup, "submission", context(setup, None)) as client:
        # no [[auth.oidc]] issuer in this module: no token mechanism
        assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
    with smtp(setup, "submission-cert", context(setup, "lps")) as client:
        assert client.esmtp_features["auth"].split() == ["EXTERNAL"]
        assert client.docmd("AUTH", "PLAIN AGFwcABw")[0] == 504  # no passwords there
    plain = imap(setup, "imap", context(setup, None))
    caps = plain.capability()[1][0].decode().split()
    assert "AUTH=PLAIN" in caps and "AUTH=EXTERNAL" not in caps
    assert "LOGINDISABLED" not in caps
    plain.logout()
    cert = imap(setup, "imap-cert", context(setup, "lps"))
    caps = cert.capability()[1][0].decode().split()
    assert "AUTH=EXTERNAL" in caps and "LOGINDISABLED" in caps and "AUTH=PLAIN" not in caps
    with pytest.raises(imaplib.IMAP4.error, match=r"\[CANNOT\]"):
        cert.login(APP, "whatever")
    cert.logout()


# ------------------------------------------------------------------------------ accepted

def test_smtplib_external_sends_as_the_bound_mailbox(setup: Setup) -> None:
    with smtp(setup, "submission-cert", context(setup, "lps")) as client:
        code, text = client.docmd("AUTH", "EXTERNAL =")  # RFC 4954: "=" empty response
        assert (code, text[:5]) == (235, b"2.7.0")
        refused = client.sendmail(APP, [APP], f"From: {APP}\r\nTo: {APP}\r\nSubject: t\r\n"
                                  "\r\nbody\r\n")
        assert refused == {}
        assert client.mail(f"expired@{DOMAIN}")[0] == 553  # only the bound mailbox
    row = setup.node.wait_audit(lambda r: r["event"] == "smtp.auth" and r["outcome"] == 0
                                and r["actor"] == APP)[-1]
    detail = row["detail"]
    assert isinstance(detail, dict)
    assert detail["method"] == "external" and detail["mechanism"] == "EXTERNAL"
    assert detail["cert_dn"].startswith("CN=lps.editeur.test") and len(detail["sha256"]) == 64
    assert row["listener"] == "submission-cert" and row["mailbox"] == APP


def test_imaplib_external_with_authzid(setup: Setup) -> None:
    client = imap(setup, "imap-cert", context(setup, "lps"))
    status, _ = client.authenticate("EXTERNAL", lambda _: APP.encode())
    assert status == "OK"
    assert client.select("INBOX")[0] == "OK"
    client.logout()
    rows = setup.node.wait_audit(lambda r: r["event"] == "imap.login" and r["outcome"] == 0
                                 and r["actor"] == APP)
    assert rows[-1]["detail"]["method"] == "external"  # type: ignore[index]


def test_curl_external_over_imap(setup: Setup) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    port = setup.node.ports["imap-cert"]
    out = subprocess.run(
        ["curl", "-sS", "--ssl-reqd", "--cacert", str(setup.pki / "root.crt"),
         "--cert", str(setup.pki / "lps.crt"), "--key", str(setup.pki / "lps.key"),
         "--resolve", f"{SERVER_NAME}:{port}:127.0.0.1", "--login-options", "AUTH=EXTERNAL",
         "-u", f"{APP}:", f"imap://{SERVER_NAME}:{port}/"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "INBOX" in out.stdout


def test_openssl_s_client_external_over_smtp(setup: Setup) -> None:
    port = setup.node.ports["submission-cert"]
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-starttls", "smtp",
         "-name", "lps.test", "-servername", SERVER_NAME, "-verify_hostname", SERVER_NAME,
         "-verify_return_error", "-CAfile", str(setup.pki / "root.crt"),
         "-cert", str(setup.pki / "lps.crt"), "-key", str(setup.pki / "lps.key"),
         "-crlf", "-quiet"],
        input="EHLO lps.test\nAUTH EXTERNAL =\nQUIT\n", capture_output=True, text=True,
        timeout=60)
    assert "250-AUTH EXTERNAL" in out.stdout, out.stdout + out.stderr
    assert "235 2.7.0" in out.stdout, out.stdout + out.stderr


# ------------------------------------------------------------------------------ refused

CASES = [  # (certificate, from the other PKI, audit reason prefix)
    ("revoked", False, "revoked: "),
    ("expired", False, "expired: "),
    ("lps", True, "untrusted_chain: "),
    ("unbound", False, "dn_not_bound: "),
    (None, False, "no_certificate: "),
]


@pytest.mark.parametrize("name,other,reason", CASES)
def test_refused_certificates_smtp(setup: Setup, name: str | None, other: bool,
                                   reason: str) -> None:
    ctx = context(setup, name, setup.other if other else None)
    with smtp(setup, "submission-cert", ctx) as client:
        assert client.docmd("AUTH", "EXTERNAL =") == (535, b"5.7.8 Authentication "
                                                      b"credentials invalid")
        assert client.mail(APP)[0] == 530  # still not authenticated
        source = client.sock.getsockname()[0]
    rows = setup.node.wait_audit(lambda r: r["event"] == "smtp.auth"
                                 and r["remote_addr"] == source)
    assert rows and rows[-1]["outcome"] == 8
    assert str(rows[-1]["reason"]).startswith(reason), rows[-1]["reason"]


@pytest.mark.parametrize("name,other,reason", CASES)
def test_refused_certificates_imap(setup: Setup, name: str | None, other: bool,
                                   reason: str) -> None:
    client = imap(setup, "imap-cert", context(setup, name, setup.other if other else None))
    source = client.sock.getsockname()[0]
    with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
        client.authenticate("EXTERNAL", lambda _: b"")
    client.logout()
    rows = setup.node.wait_audit(lambda r: r["event"] == "imap.login"
                                 and r["remote_addr"] == source)
    assert rows and rows[-1]["outcome"] == 8
    assert str(rows[-1]["reason"]).startswith(reason), rows[-1]["reason"]


def test_authzid_of_another_mailbox_refused(setup: Setup) -> None:
    with smtp(setup, "submission-cert", context(setup, "lps")) as client:
        other = base64.b64encode(f"revoked@{DOMAIN}".encode()).decode()
        assert client.docmd("AUTH", f"EXTERNAL {other}")[0] == 535
        source = client.sock.getsockname()[0]
    rows = setup.node.wait_audit(lambda r: r["event"] == "smtp.auth"
                                 and r["remote_addr"] == source)
    assert "is not lps@b.mssante.test" in str(rows[-1]["reason"])


def test_failures_of_one_certificate_are_throttled(setup: Setup) -> None:
    # smtp.auth_failures (5) failures of one DN, from five addresses: the DN is locked
    wrong = base64.b64encode(APP.encode()).decode()  # not the mailbox bound to "locked"
    for _ in range(5):
        with smtp(setup, "submission-cert", context(setup, "locked")) as client:
            assert client.docmd("AUTH", f"EXTERNAL {wrong}")[0] == 535
    with smtp(setup, "submission-cert", context(setup, "locked")) as client:
        code, text = client.docmd("AUTH", "EXTERNAL =")  # right this time, but locked
        assert (code, text[:5]) == (454, b"4.7.0")
        source = client.sock.getsockname()[0]
    rows = setup.node.wait_audit(lambda r: r["event"] == "smtp.auth"
                                 and r["remote_addr"] == source)
    assert rows[-1]["reason"] == "throttled" and rows[-1]["outcome"] == 4


# ------------------------------------------------------------------------------ line bound

def _auth_plain_line(extra_spaces: int) -> bytes:
    """An AUTH PLAIN line of 12288 + *extra_spaces* - 3 octets with its CRLF."""
    blob = base64.b64encode(b"\0" + APP.encode() + b"\0" + b"x" * (9204 - 2 - len(APP)))
    assert len(blob) == 12272
    return b"AUTH PLAIN " + blob + b" " * extra_spaces + b"\r\n"


def test_auth_line_of_12288_octets_is_read(setup: Setup) -> None:
    """RFC 4954 §4: the AUTH line may hold 12288 octets; one more is too long."""
    with smtp(setup, "submission", context(setup, None)) as client:
        line = _auth_plain_line(3)
        assert len(line) == 12288
        client.send(line)
        assert client.getreply()[0] == 535  # read whole, checked, wrong password
        client.send(_auth_plain_line(4))
        code, text = client.getreply()
        assert code == 500 and b"too long" in text
        client.send(b"AUTH PLAIN\r\n")
        assert client.getreply()[0] == 334
        client.send(b"A" * 12300 + b"\r\n")  # a response line past the bound
        assert client.getreply() == (500, b"5.5.6 Authentication Exchange line is too long")
        assert client.noop()[0] == 250  # the session goes on


# ------------------------------------------------------------------------------ CLI

def test_cli_bindings(setup: Setup) -> None:
    node = setup.node
    listed = node.cli_json("mailbox", "cert", "list", APP)
    assert listed[0]["mailbox"] == APP
    assert str(listed[0]["cert_dn"]).startswith("CN=lps.editeur.test,")
    bad = node.cli("mailbox", "add", f"per@{DOMAIN}", "--type", "PER", "--cert-dn",
                   SUBJECTS["unbound"], check=False)
    assert bad.returncode == 2 and "only APP mailboxes" in bad.stderr
    # the same DN written another way is the same DN: already bound
    variant = ",".join(reversed(SUBJECTS["lps"].lower().split(",")))
    taken = node.cli("mailbox", "cert", "add", f"expired@{DOMAIN}", "--cert-dn", variant,
                     check=False)
    assert taken.returncode == 2 and f"already bound to {APP}" in taken.stderr
    garbage = node.cli("mailbox", "cert", "add", APP, "--cert-dn", "not a dn", check=False)
    assert garbage.returncode == 2 and "--cert-dn" in garbage.stderr
    both = node.cli("mailbox", "cert", "add", APP, check=False)
    assert both.returncode == 2 and "exactly one of --cert FILE or --cert-dn DN" in both.stderr
    node.cli("mailbox", "cert", "add", APP, "--cert", str(setup.pki / "unbound.crt"))
    node.cli("mailbox", "cert", "remove", APP, "--cert-dn", SUBJECTS["unbound"])
    events = [r["event"] for r in node.audit("--mailbox", APP)]
    assert "admin.mailbox.cert.bind" in events and "admin.mailbox.cert.unbind" in events
    bound = node.cli_json("mailbox", "show", APP)["cert_dns"]
    assert bound[0].startswith("CN=lps.editeur.test,")


def test_no_current_crl_is_a_temporary_failure(setup: Setup) -> None:
    """The last test (it restarts the node): revocation configured from a URL that does
    not answer, pki.crl_unavailable = "fail-closed": 454 4.7.0 / NO [UNAVAILABLE]."""
    node = setup.node
    node.stop()
    text = node.config.read_text()
    node.config.write_text(text.replace(
        f'crl_files = ["{setup.pki / "organisations.crl.pem"}"]',
        'crl_urls = ["http://127.0.22.1:9/organisations.crl"]\ncrl_fetch_timeout = 2'))
    node.start()
    try:
        with smtp(setup, "submission-cert", context(setup, "lps")) as client:
            code, text_ = client.docmd("AUTH", "EXTERNAL =")
            assert (code, text_[:5]) == (454, b"4.7.0")
            source = client.sock.getsockname()[0]
        rows = node.wait_audit(lambda r: r["event"] == "smtp.auth"
                               and r["remote_addr"] == source)
        assert rows[-1]["outcome"] == 4
        assert str(rows[-1]["reason"]).startswith("crl_unavailable: ")
        client2 = imap(setup, "imap-cert", context(setup, "lps"))
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            client2.authenticate("EXTERNAL", lambda _: b"")
        client2.logout()
    finally:
        node.stop()
        node.config.write_text(text)
        node.start()
