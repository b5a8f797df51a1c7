"""Citizen messaging (issue 18 part 4): professionals writing to patients at
``<INS>@patient.mssante.fr`` (Mon espace santé), and patients writing to professionals
through their operator's MX.

One node with a real directory (slapd, synchronised: the professional directory check is
on) and a whitelist listing the patients' domain with its operator's certificate DN; the
tests drive the node's submission and MX listeners with smtplib.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mss.citizen import ins_key, ins_problem
from tests import slapd
from tests.node import DOMAIN, PASSWORD, REMOTE_DOMAINS, Node, free_port, make_node, read_all
from tests.whitelist_fixtures import make_whitelist_xml

CITIZEN = "patient.mssante.fr"
CITIZEN_DN = ("CN=mx.patient.mssante.fr,OU=180092041,O=Mon espace sante,ST=Paris (75),C=FR")
PEOPLE = f"ou=people,{slapd.SUFFIX}"
# valid INS (13 characters and 97 - n mod 97), worked out by hand: a NIR, Corsica's 2A and
# 2B (read 19 and 18 for the key), a NIA (starts with 7)
VALID = ("185057800608491", "269052A00401228", "269052B00401255", "790019912345677")
ALICE, BOB, SECRETARIAT = (f"{u}@{DOMAIN}" for u in ("alice", "bob", "secretariat"))
APP = f"logiciel@{DOMAIN}"


# --------------------------------------------------------------------------- the INS check

def test_valid_ins_pass() -> None:
    for ins in VALID:
        assert ins_problem(ins) is None, ins
        assert ins_problem(ins.lower()) is None  # 2a / 2b in an address's local part
    assert ins_key("1850578006084") == 91


@pytest.mark.parametrize("local, why", [
    ("18505780060849", "14 characters"),
    ("1850578006084911", "16 characters"),
    ("185057800608492", "control key 92"),
    ("269052A00401255", "control key 55"),  # 2B's key on a 2A number
    ("585057800608491", "first character"),
    ("1850578X0608491", "not digits"),
    ("18505780060849A", "key is not 2 digits"),
    ("185057８00608491", "not digits"),  # a full-width digit is no ASCII digit
    ("dr.martin", "9 characters"),
])
def test_malformed_ins_refused(local: str, why: str) -> None:
    problem = ins_problem(local)
    assert problem is not None and why in problem, problem


# --------------------------------------------------------------------------- over SMTP

@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    slapd.require()
    base = tmp_path_factory.mktemp("citizen")
    ldap = slapd.Slapd(base / "ldap", free_port())
    ldap.configure()
    ldap.load([slapd.person_ldif(1, mail="dr.martin@operator-a.mssante.fr")])
    ldap.start()
    n = make_node(base / "mss", with_whitelist=False)
    secret = n.data_dir / "keys" / "ldap.password"
    secret.write_text(slapd.PASSWORD)
    secret.chmod(0o600)
    # (make_node turns the queue off: nothing leaves for the patients' operator)
    n.config.write_text(n.config.read_text() + f"""
[directory]
urls = ["{ldap.url}"]
base_dn = "{PEOPLE}"
bind_dn = "{slapd.READER_DN}"
password_file = "keys/ldap.password"
interval = 0

[citizen]
senders = ["PER", "ORG"]
""")
    whitelist = base / "whitelist.xml"
    whitelist.write_bytes(make_whitelist_xml([*REMOTE_DOMAINS, (CITIZEN, CITIZEN_DN)]))
    n.cli("whitelist", "import", str(whitelist))
    n.cli("directory", "sync", "--full")
    n.cli("mailbox", "add", APP, "--type", "APP", "--password-stdin", input=PASSWORD + "\n")
    n.start()
    try:
        yield n
    finally:
        n.stop()
        ldap.stop()


def _submission(node: Node, login: str) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=10)
    client.starttls(context=node.client_context())
    client.login(login, PASSWORD)
    return client


def test_professional_writes_to_a_patient_exempt_from_the_directory(node: Node) -> None:
    """A PER mailbox writes to <INS>@patient.mssante.fr: accepted though the patient is in
    no professional directory (which still refuses an unknown professional), queued with
    X-MSS-MES: FIN unchanged."""
    client = _submission(node, ALICE)
    try:
        assert client.mail(ALICE)[0] == 250
        for ins in VALID:
            assert client.rcpt(f"{ins}@{CITIZEN}") == (250, b"2.1.5 Recipient OK")
        assert client.rcpt("dr.martin@operator-a.mssante.fr")[0] == 250  # in the directory
        code, reply = client.rcpt("nobody@operator-a.mssante.fr")  # the check is on
        assert (code, reply[:5]) == (550, b"5.1.1")
        tag = f"cit{time.time_ns()}"
        code, _ = client.data(
            f"From: <{ALICE}>\r\nTo: <{VALID[0]}@{CITIZEN}>\r\nSubject: t\r\n"
            f"Message-ID: <{tag}@test.example>\r\nX-MSS-MES: FIN\r\n\r\nBonjour.\r\n".encode())
        assert code == 250
    finally:
        client.quit()
    rows = node.wait_audit(lambda r: r["event"] == "delivery.queued"
                           and r["rcpt"] == f"{VALID[0]}@{CITIZEN}")
    assert rows


def test_malformed_ins_gets_550_5_1_3(node: Node) -> None:
    client = _submission(node, ALICE)
    try:
        assert client.mail(ALICE)[0] == 250
        for local in ("185057800608492", "dr.martin", "269052A00401255"):
            assert client.rcpt(f"{local}@{CITIZEN}") == (550, b"5.1.3 Invalid patient address")
        assert client.rcpt(f"{VALID[1]}@{CITIZEN}")[0] == 250  # the session goes on
    finally:
        client.quit()
    rows = node.wait_audit(lambda r: r["event"] == "smtp.recipient.refused"
                           and r["rcpt"] == f"dr.martin@{CITIZEN}")
    assert rows and "is not <INS>@patient.mssante.fr" in str(rows[-1]["reason"])
    assert rows[-1]["detail"] == {"check": "patient-address-invalid"}


def test_only_configured_mailbox_types_write_to_patients(node: Node) -> None:
    """citizen.senders = PER, ORG: an APP mailbox (software) is refused 550 5.7.1, and
    may still write to professionals."""
    client = _submission(node, APP)
    try:
        assert client.mail(APP)[0] == 250
        assert client.rcpt(f"{VALID[0]}@{CITIZEN}") == (
            550, b"5.7.1 This mailbox may not write to patients")
        assert client.rcpt(BOB)[0] == 250
    finally:
        client.quit()
    rows = node.wait_audit(lambda r: r["event"] == "smtp.recipient.refused"
                           and r["actor"] == APP)
    assert rows and "a APP mailbox may not write to patients" in str(rows[-1]["reason"])


def _mx(node: Node, certificate: tuple[Path, Path]) -> smtplib.SMTP:
    ctx = node.client_context()
    ctx.load_cert_chain(*certificate)
    client = smtplib.SMTP("127.0.0.1", node.ports["mx"], timeout=10)
    client.starttls(context=ctx)
    client.ehlo("mx.patient.mssante.fr")
    return client


def test_patient_writes_to_a_pharmacist_through_the_listed_operator(node: Node) -> None:
    """Inbound from the citizen domain: accepted from the certificate the whitelist lists
    for it (X-MSS-MES passes unchanged), refused 550 5.7.1 from another operator's."""
    patient = f"{VALID[2]}@{CITIZEN}"
    listed = _mx(node, node.operator_certificate("citizen-operator", CITIZEN_DN))
    tag = f"pat{time.time_ns()}"
    try:
        assert listed.mail(patient)[0] == 250
        assert listed.rcpt(BOB)[0] == 250
        code, _ = listed.data(
            f"From: <{patient}>\r\nTo: <{BOB}>\r\nSubject: ordonnance\r\n"
            f"Message-ID: <{tag}@test.example>\r\nX-MSS-MES: FIN\r\n\r\nBonjour.\r\n".encode())
        assert code == 250
    finally:
        listed.quit()
    stored = [m for m in read_all(node, BOB) if f"<{tag}@test.example>".encode() in m]
    assert len(stored) == 1 and b"\r\nX-MSS-MES: FIN\r\n" in stored[0]
    other = _mx(node, node.operator_certificate())  # operator A's DN: not the patients'
    try:
        code, reply = other.mail(patient)
        assert (code, reply[:5]) == (550, b"5.7.1")
    finally:
        other.quit()
    rows = node.wait_audit(lambda r: r["event"] == "smtp.sender.refused"
                           and r.get("mail_from") == patient)
    assert rows and str(rows[-1]["reason"]).startswith("dn_not_listed")
