"""The relay listener: an institution's mail server authenticated by a registered client
certificate or by SMTP AUTH, sending as its domains, with submission's recipient checks."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node import DOMAIN, Node, make_node
from trustspace.pki import issue_certificate

CLINIC = "clinique.test"
CLINIC_DN = "CN=smtp.clinique.test,OU=1750000099,O=CLINIQUE TEST,ST=Paris (75),C=FR"
CLINIC_DN_VARIANT = "c=fr,st=paris (75), o=Clinique  Test,ou=1750000099,cn=SMTP.clinique.test"
LAB_PASSWORD = "lab relay secret 2026"
BOB = f"bob@{DOMAIN}"
REMOTE = "dr.martin@operator-a.mssante.fr"  # whitelisted remote domain


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = make_node(tmp_path_factory.mktemp("relay"))
    n.cli("domain", "add", CLINIC)
    n.cli("relay", "add", "clinic", "--cert-dn", CLINIC_DN_VARIANT, "--domains", CLINIC)
    n.cli("relay", "add", "lab", "--password-stdin", "--domains", f"{CLINIC},{DOMAIN}",
          input=LAB_PASSWORD + "\n")
    n.start()
    yield n
    if n.process is not None:
        n.stop()


def certificate(node: Node, name: str, subject: str) -> tuple[Path, Path]:
    pki = node.data_dir / "pki"
    if not (pki / f"{name}.crt").exists():
        issue_certificate(pki, name, [f"{name}.test"], subject=subject)
    return pki / f"{name}.crt", pki / f"{name}.key"


def relay_client(node: Node, cert: tuple[Path, Path] | None = None) -> smtplib.SMTP:
    ctx = node.client_context()
    if cert is not None:
        ctx.load_cert_chain(*cert)
    client = smtplib.SMTP("127.0.0.1", node.ports["relay"], timeout=30)
    client.ehlo("smtp.clinique.test")
    client.starttls(context=ctx)
    client.ehlo("smtp.clinique.test")
    return client


def message(sender: str, rcpt: str, tag: str) -> bytes:
    return (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: relay {tag}\r\n\r\n"
            "Bonjour.\r\n").encode()


def test_relay_by_certificate_sends_as_its_domain(node: Node) -> None:
    cert = certificate(node, "clinic", CLINIC_DN)
    sender = f"dr.house@{CLINIC}"
    with relay_client(node, cert) as client:
        assert "auth" in client.esmtp_features  # offered, but the certificate suffices
        assert client.mail(sender)[0] == 250
        assert client.rcpt(BOB)[0] == 250  # hosted mailbox: stored
        assert client.rcpt(REMOTE)[0] == 250  # trust space: queued for the operator
        code, reply = client.rcpt("someone@gmail.com")  # outside: never leaves
        assert (code, reply[:5]) == (550, b"5.7.1")
        code, reply = client.data(message(sender, BOB, "cert"))
        assert code == 250, reply
        client.rset()
        # an address outside the relay's domains, even a hosted one
        code, reply = client.mail(f"alice@{DOMAIN}")
        assert (code, reply[:5]) == (550, b"5.7.1")
    auth = node.wait_audit(lambda r: r["event"] == "smtp.auth" and r["listener"] == "relay"
                           and r["detail"].get("mechanism") == "certificate")  # type: ignore[union-attr]
    assert auth and auth[-1]["actor"] == "relay:clinic"
    assert node.wait_audit(lambda r: r["event"] == "delivery.local" and r["mail_from"] == sender)
    queued = node.wait_audit(lambda r: r["event"] == "delivery.queued"
                             and r["mail_from"] == sender)
    assert queued and queued[-1]["rcpt"] == REMOTE
    refused = node.wait_audit(lambda r: r["event"] == "smtp.sender.refused"
                              and r["mail_from"] == f"alice@{DOMAIN}")
    assert refused and "relay clinic may not send as" in str(refused[-1]["reason"])


def test_relay_by_password(node: Node) -> None:
    with smtplib.SMTP("127.0.0.1", node.ports["relay"], timeout=30) as client:
        client.ehlo("lab.test")
        assert "auth" not in client.esmtp_features  # TLS before credentials
        assert client.mail(f"x@{CLINIC}")[0] == 530
    with relay_client(node) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("lab", "wrong password")
        client.login("lab", LAB_PASSWORD)
        for sender in (f"robot@{CLINIC}", f"robot@{DOMAIN}"):
            assert client.sendmail(sender, [BOB], message(sender, BOB, "pw")) == {}
        code, reply = client.mail("robot@other.test")
        assert (code, reply[:5]) == (550, b"5.7.1")
    rows = node.wait_audit(lambda r: r["event"] == "smtp.auth" and r["actor"] == "relay:lab")
    assert {r["outcome"] for r in rows} >= {0, 8}


def test_relay_requires_an_identity(node: Node) -> None:
    with relay_client(node) as client:  # TLS, no certificate, no AUTH
        code, reply = client.mail(f"x@{CLINIC}")
        assert (code, reply[:5]) == (530, b"5.7.0")
    stranger = certificate(node, "stranger",
                           "CN=smtp.stranger.test,OU=1750000098,O=STRANGER,C=FR")
    with relay_client(node, stranger) as client:  # valid chain, DN not registered
        code, reply = client.mail(f"y@{CLINIC}")
        assert (code, reply[:5]) == (530, b"5.7.0")
    rows = node.wait_audit(lambda r: r["event"] == "smtp.sender.refused"
                           and r["mail_from"] == f"y@{CLINIC}")
    assert rows and rows[-1]["detail"]["check"] == "dn_not_registered"  # type: ignore[index]


def test_relay_cli(node: Node) -> None:
    listing = {r["name"]: r for r in node.cli_json("relay", "list")}
    assert listing["clinic"]["method"] == "certificate"
    assert listing["clinic"]["domains"] == ["clinique.test"]
    assert listing["lab"]["method"] == "password" and listing["lab"]["cert_dn"] is None
    for args, error in (
            (("relay", "add", "x", "--domains", CLINIC), "exactly one of"),
            (("relay", "add", "x", "--domains", CLINIC, "--cert-dn", "CN=a",
              "--password-stdin"), "exactly one of"),
            (("relay", "add", "x", "--domains", CLINIC, "--password-stdin"),
             "shorter than 12"),
            (("relay", "add", "x", "--domains", "nowhere.test", "--cert-dn", "CN=a"),
             "not hosted here"),
            (("relay", "add", "x", "--domains", CLINIC, "--cert-dn", "no equals sign"),
             "--cert-dn"),
            (("relay", "add", "clinic", "--domains", CLINIC, "--cert-dn", "CN=b"),
             "already exists"),
            (("relay", "add", "bad name", "--domains", CLINIC, "--cert-dn", "CN=b"),
             "relay name"),
            (("relay", "remove", "nobody"), "no relay nobody")):
        out = node.cli(*args, check=False, input="short\n")
        assert out.returncode == 2, out
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mss: error: ") and error in lines[0]
    node.cli("relay", "add", "temp", "--cert-dn", "CN=temp.test,C=FR", "--domains", CLINIC)
    node.cli("relay", "remove", "temp")
    assert "temp" not in [r["name"] for r in node.cli_json("relay", "list")]
    events = {r["event"] for r in node.audit()}
    assert {"admin.relay.add", "admin.relay.remove"} <= events


def test_relay_mail_reaches_another_operator_over_mtls(tmp_path: Path) -> None:
    """An institution's server sends through operator A's relay listener; A's queue
    delivers to operator B, whose MX accepts A's certificate for the institution's domain
    (listed with A's DN) and stores the message."""
    from tests.node import read_all, wait_for
    from tests.outbound_pair import B_DOMAIN, SUBJECTS, make_pair
    from tests.whitelist_fixtures import make_whitelist_xml
    from trustspace.whitelist import parse_whitelist

    pair = make_pair(tmp_path)
    try:
        labo = "labo.test"
        listed = [(e.domain, e.dn) for e in
                  parse_whitelist((tmp_path / "whitelist.xml").read_bytes()).entries]
        wl = tmp_path / "whitelist-labo.xml"
        wl.write_bytes(make_whitelist_xml([*listed, (labo, SUBJECTS["operator-a"])]))
        for n in pair.nodes():
            n.cli("whitelist", "import", str(wl))
        pair.a.cli("domain", "add", labo)
        pair.a.cli("relay", "add", "labo", "--password-stdin", "--domains", labo,
                   input=LAB_PASSWORD + "\n")
        for n in pair.nodes():
            n.start()
        ctx = ssl.create_default_context(cafile=str(pair.pki / "root.crt"))
        ctx.check_hostname = False
        rcpt, sender = f"bob@{B_DOMAIN}", f"automate@{labo}"
        with smtplib.SMTP(pair.a.host, pair.a.ports["relay"], timeout=30) as client:
            client.starttls(context=ctx)
            client.login("labo", LAB_PASSWORD)
            assert client.sendmail(sender, [rcpt], message(sender, rcpt, "e2e")) == {}
        assert wait_for(lambda: any(b"relay e2e" in m for m in read_all(pair.b, rcpt)))
        accepted = pair.b.wait_audit(lambda r: r["event"] == "smtp.message.accepted"
                                     and r["mail_from"] == sender)
        assert accepted and accepted[-1]["listener"] == "mx"
    finally:
        pair.close()


def test_relay_header_from_must_be_of_its_domains(node: Node) -> None:
    """RFC 6409 §8 on the relay listener: From: / Sender: may be any address of the
    institution's domains (its envelope rule), nothing else (issue 20 #6)."""
    with relay_client(node) as client:
        client.login("lab", LAB_PASSWORD)
        sender = f"robot@{CLINIC}"
        for from_, expected in ((f"Labo <accueil@{CLINIC}>", 250), (f"x@{DOMAIN}", 250),
                                (f"Dr Martin <{REMOTE}>", 550), ("dg@ars.sante.fr", 550)):
            assert client.mail(sender)[0] == 250 and client.rcpt(BOB)[0] == 250
            code, reply = client.data(f"From: {from_}\r\nSubject: h\r\n\r\nok\r\n".encode())
            assert code == expected, (from_, reply)
            if code == 550:
                assert reply.startswith(b"5.7.1")
    rows = node.wait_audit(lambda r: r["event"] == "smtp.message.refused"
                           and r["actor"] == "relay:lab", count=2)
    assert any("dg@ars.sante.fr" in str(r["reason"]) for r in rows)
