"""Inbound PKI on the MX: every refusal reason proven with a real TLS client certificate over
a real socket, with its SMTP reply and its audit reason (docs/trust-space.md "Inbound")."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import re
import smtplib
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.node import MSS, REPO, Node, free_port, make_node
from tests.whitelist_fixtures import make_whitelist_xml
from trustspace.chain import PkiCheck, Purpose, validate
from trustspace.testpki import DEFAULT_SERVERS, ServerSpec, init_test_pki

A_DOMAIN, B_DOMAIN = "a.mssante.test", "b.mssante.test"
VARIANT_DOMAIN = "variant.mssante.test"
SUBJECTS = {s.name: s.subject for s in DEFAULT_SERVERS}
FUTURE = ServerSpec("future", "mx.future.test", "1440000005", "OPERATEUR FUTUR",
                    "Loire-Atlantique (44)", not_before_days=10, not_after_days=400)
# operator-a's DN as another publication writes it: other order, case, spacing
A_VARIANT = "c=FR, st=PARIS  (75) ,o=operateur a,  OU=1750000001 ,cn=MX.Operator-A.test"


@dataclass
class Setup:
    node: Node
    pki: Path
    other: Path  # a second, independent test PKI: same DNs, another root
    base_config: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("inbound")
    pki, other = base / "pki", base / "other-pki"
    init_test_pki(pki, (*DEFAULT_SERVERS, FUTURE))
    subprocess.run([*MSS, "pki", "init-test", "--dir", str(other)], check=True, cwd=REPO,
                   capture_output=True, timeout=120)
    # a certificate sent without its intermediate (leaf only)
    leaf_only = x509.load_pem_x509_certificates((pki / "operator-a.crt").read_bytes())[0]
    (pki / "leaf-only.crt").write_bytes(leaf_only.public_bytes(serialization.Encoding.PEM))
    (pki / "leaf-only.key").write_bytes((pki / "operator-a.key").read_bytes())
    (base / "b").mkdir()
    tls = {"cert_file": pki / "operator-b.crt", "key_file": pki / "operator-b.key",
           "ca_file": pki / "root.crt"}
    node = make_node(base / "b", with_whitelist=False, domain=B_DOMAIN, tls=tls)
    wl = base / "whitelist.xml"
    wl.write_bytes(make_whitelist_xml([
        (A_DOMAIN, SUBJECTS["operator-a"]), (B_DOMAIN, SUBJECTS["operator-b"]),
        (VARIANT_DOMAIN, A_VARIANT), ("expired.test", SUBJECTS["expired"]),
        ("revoked.test", SUBJECTS["revoked"]), ("future.test", FUTURE.subject)]))
    node.cli("whitelist", "import", str(wl))
    base_config = node.config.read_text()
    s = Setup(node, pki, other, base_config)
    configure(s, f'crl_files = ["{pki / "organisations.crl.pem"}"]\n')
    yield s
    if node.process is not None:
        node.stop()


def configure(s: Setup, pki_table: str) -> None:
    """Restart the node with this [pki] table."""
    if s.node.process is not None:
        s.node.stop()
    s.node.config.write_text(s.base_config + "\n[pki]\n" + pki_table)
    s.node.start()


def context(s: Setup, name: str | None, pki: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(s.pki / "root.crt"))
    ctx.check_hostname = False
    if name is not None:
        where = pki or s.pki
        ctx.load_cert_chain(where / f"{name}.crt", where / f"{name}.key")  # leaf + chain
    return ctx


def mail_from(s: Setup, ctx: ssl.SSLContext, sender: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", s.node.ports["mx"], timeout=30) as client:
        client.ehlo("mx.peer.test")
        client.starttls(context=ctx)  # any certificate passes the handshake...
        client.ehlo("mx.peer.test")
        return client.mail(sender)  # ...and is judged here, with an SMTP reply


def refusal(s: Setup, sender: str, check: str) -> dict[str, object]:
    rows = s.node.wait_audit(lambda r: r["event"] == "smtp.sender.refused"
                             and r["mail_from"] == sender
                             and r["detail"].get("check") == check)  # type: ignore[union-attr]
    assert rows, f"no smtp.sender.refused for {sender} with check {check}"
    row = rows[-1]
    assert str(row["reason"]).startswith(f"{check}: ")
    assert row["outcome"] == 4 and row["listener"] == "mx"
    return row


@pytest.mark.parametrize("name,pki_name,sender,code,check", [
    (None, None, "dr@a.mssante.test", 550, "no_certificate"),
    ("operator-a", "other", "dr2@a.mssante.test", 550, "untrusted_chain"),
    ("leaf-only", None, "dr3@a.mssante.test", 550, "untrusted_chain"),
    ("expired", None, "dr@expired.test", 550, "expired"),
    ("future", None, "dr@future.test", 550, "not_yet_valid"),
    ("revoked", None, "dr@revoked.test", 550, "revoked"),
    ("operator-a", None, "someone@gmail.com", 550, "domain_not_whitelisted"),
    ("operator-a", None, "dr@b.mssante.test", 550, "dn_not_listed"),
])
def test_each_refusal_reason(setup: Setup, name: str | None, pki_name: str | None,
                             sender: str, code: int, check: str) -> None:
    ctx = context(setup, name, setup.other if pki_name == "other" else None)
    got, reply = mail_from(setup, ctx, sender)
    assert (got, reply[:5]) == (code, b"5.7.1"), reply
    # the public text names nothing: no DN, domain, CA or reason code
    assert b"operat" not in reply.lower() and b"_" not in reply
    row = refusal(setup, sender, check)
    detail = row["detail"]
    assert isinstance(detail, dict)
    if name is not None:
        assert detail["peer_dn"] and len(str(detail["sha256"])) == 64
    if check == "untrusted_chain" and pki_name == "other":
        assert "not found among the trust anchors" in str(row["reason"])
    if check == "dn_not_listed":
        assert "CN=mx.operator-a.test" in str(row["reason"])


def test_listed_dn_in_another_form_is_accepted_and_mail_stored(setup: Setup) -> None:
    ctx = context(setup, "operator-a")
    rcpt = f"bob@{B_DOMAIN}"
    with smtplib.SMTP("127.0.0.1", setup.node.ports["mx"], timeout=30) as client:
        client.starttls(context=ctx)
        for sender in (f"dr@{A_DOMAIN}", f"dr@{VARIANT_DOMAIN}"):
            body = f"From: <{sender}>\r\nSubject: t\r\n\r\nBonjour.\r\n".encode()
            assert client.sendmail(sender, [rcpt], body) == {}
        # a delivery report from a listed operator: null reverse-path accepted
        assert client.sendmail("", [rcpt], b"Subject: dsn\r\n\r\nreport\r\n") == {}
    rows = setup.node.wait_audit(lambda r: r["event"] == "delivery.local"
                                 and r["mail_from"] == f"dr@{VARIANT_DOMAIN}")
    assert rows


def test_intermediates_bundle_completes_a_leaf_sent_alone(setup: Setup) -> None:
    pki = setup.pki
    configure(setup, f'crl_files = ["{pki / "organisations.crl.pem"}"]\n'
                     f'intermediates = "{pki / "organisations.crt"}"\n')
    try:
        code, reply = mail_from(setup, context(setup, "leaf-only"), f"dr4@{A_DOMAIN}")
        assert code == 250, reply
    finally:
        configure(setup, f'crl_files = ["{pki / "organisations.crl.pem"}"]\n')


class _CrlHandler(http.server.BaseHTTPRequestHandler):
    crl = b""
    hits = 0

    def do_GET(self) -> None:  # noqa: N802
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/pkix-crl")
        self.send_header("Content-Length", str(len(self.crl)))
        self.end_headers()
        self.wfile.write(self.crl)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def crl_server(crl: bytes) -> Iterator[tuple[str, type[_CrlHandler]]]:
    handler = type("Handler", (_CrlHandler,), {"crl": crl, "hits": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/organisations.crl", handler
    finally:
        server.shutdown()
        server.server_close()


def test_crl_from_url_revokes_and_is_cached_on_disk(setup: Setup) -> None:
    pki = setup.pki
    der = x509.load_pem_x509_crl((pki / "organisations.crl.pem").read_bytes()).public_bytes(
        serialization.Encoding.DER)
    with crl_server(der) as (url, handler):
        configure(setup, f'crl_urls = ["{url}"]\n')
        try:
            code, reply = mail_from(setup, context(setup, "revoked"), "dr2@revoked.test")
            assert (code, reply[:5]) == (550, b"5.7.1")
            refusal(setup, "dr2@revoked.test", "revoked")
            assert mail_from(setup, context(setup, "operator-a"), f"dr5@{A_DOMAIN}")[0] == 250
            assert 1 <= handler.hits <= 2  # fetched once per process, not per session
            cached = list((setup.node.data_dir / "crl-cache").glob("*.crl"))
            assert len(cached) == 1 and cached[0].read_bytes() == der
        finally:
            configure(setup, f'crl_files = ["{pki / "organisations.crl.pem"}"]\n')


@pytest.mark.parametrize("policy", ["fail-closed", "fail-open"])
def test_crl_url_unreachable(setup: Setup, policy: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}/nothing-listens-here.crl"
    configure(setup, f'crl_urls = ["{dead}"]\ncrl_unavailable = "{policy}"\n'
                     'crl_fetch_timeout = 2.0\ncrl_cache_dir = "crl-cache-dead"\n')
    sender = f"dr-{policy}@{A_DOMAIN}"
    try:
        code, reply = mail_from(setup, context(setup, "operator-a"), sender)
        if policy == "fail-closed":
            assert (code, reply[:5]) == (454, b"4.7.0"), reply  # temporary: retried later
            refusal(setup, sender, "crl_unavailable")
        else:
            assert code == 250, reply
            rows = setup.node.wait_audit(lambda r: r["event"] == "smtp.certificate.fail_open")
            assert rows and str(rows[-1]["reason"]).startswith("crl_unavailable: ")
    finally:
        configure(setup, f'crl_files = ["{setup.pki / "organisations.crl.pem"}"]\n')


def test_starttls_still_required(setup: Setup) -> None:
    with smtplib.SMTP("127.0.0.1", setup.node.ports["mx"], timeout=30) as client:
        client.ehlo("mx.peer.test")
        assert client.mail(f"dr@{A_DOMAIN}")[0] == 530


def test_verification_cached_per_chain_and_crl_generation(setup: Setup,
                                                           tmp_path: Path) -> None:
    import asyncio

    from mss.config import PkiConfig
    from trustspace.verifier import PeerVerifier

    crl = tmp_path / "crl.pem"
    crl.write_bytes((setup.pki / "organisations.crl.pem").read_bytes())
    verifier = PeerVerifier(PkiConfig(anchors=setup.pki / "root.crt", crl_files=(crl,),
                                         crl_cache_dir=tmp_path / "cache"))
    chain = [c.public_bytes(serialization.Encoding.DER) for c in
             x509.load_pem_x509_certificates((setup.pki / "operator-a.crt").read_bytes())]

    async def run() -> list[PkiCheck]:
        return [(await verifier.verify(chain)).check for _ in range(3)]

    assert asyncio.run(run()) == [PkiCheck.OK] * 3
    assert (verifier.misses, verifier.hits) == (1, 2)
    # a resumed TLS session presents the leaf alone: the intermediate seen in a verified
    # chain completes its path
    assert asyncio.run(verifier.verify(chain[:1])).check is PkiCheck.OK
    # a new CRL (here: the same list re-signed later) invalidates cached verdicts
    other = init_test_pki(tmp_path / "again")["crl"]  # another issuer: no CRL for ours
    crl.write_bytes(other.read_bytes())
    verifier.crls.reload_files()
    assert asyncio.run(run())[0] is PkiCheck.CRL_UNAVAILABLE


# --------------------------------------------------------------------------- pure checks

def _ca(name: str, key: rsa.RSAPrivateKey, issuer: tuple[x509.Name, rsa.RSAPrivateKey] | None,
        path_length: int | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name.from_rfc4514_string(name)
    issuer_name, signer = issuer or (subject, key)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), True)
            .sign(signer, hashes.SHA256()))


def _leaf(issuer: x509.Certificate, signer: rsa.RSAPrivateKey,
          usages: list[x509.ObjectIdentifier]) -> bytes:
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string("CN=leaf"))
            .issuer_name(issuer.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage(usages), False)
            .sign(signer, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def test_chain_rules_eku_and_path_length() -> None:
    root_key, inter_key, sub_key = (rsa.generate_private_key(65537, 2048) for _ in range(3))
    root = _ca("CN=root", root_key, None, path_length=1)
    inter = _ca("CN=inter", inter_key, (root.subject, root_key))
    sub = _ca("CN=sub", sub_key, (inter.subject, inter_key))
    client = [ExtendedKeyUsageOID.CLIENT_AUTH]

    def check(chain: list[bytes], intermediates: list[x509.Certificate],
              purpose: Purpose = "client") -> PkiCheck:
        return validate(chain, [root], intermediates, lambda _: None, False,
                        purpose=purpose).check

    assert check([_leaf(inter, inter_key, client)], [inter]) is PkiCheck.OK
    # server-only EKU: not a client certificate (RFC 5280 §4.2.1.12) ...
    server_only = _leaf(inter, inter_key, [ExtendedKeyUsageOID.SERVER_AUTH])
    assert check([server_only], [inter]) is PkiCheck.UNTRUSTED_CHAIN
    # ... but a server one (the peers our queue delivers to), and the reverse
    assert check([server_only], [inter], "server") is PkiCheck.OK
    assert check([_leaf(inter, inter_key, client)], [inter], "server") \
        is PkiCheck.UNTRUSTED_CHAIN
    # root pathLen 1 forbids a second intermediate (RFC 5280 §4.2.1.9)
    assert check([_leaf(sub, sub_key, client)], [inter, sub]) is PkiCheck.UNTRUSTED_CHAIN
    assert check([], []) is PkiCheck.NO_CERTIFICATE
    assert check([b"not a certificate"], []) is PkiCheck.UNTRUSTED_CHAIN


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    from mss.config import ConfigError, parse_config

    for table, key in (({"crl_unavailable": "maybe"}, "pki.crl_unavailable"),
                       ({"crl_urls": ["ftp://x"]}, "pki.crl_urls"),
                       ({"crl_fetch_timeout": 0}, "pki.crl_fetch_timeout")):
        with pytest.raises(ConfigError, match=re.escape(key)):
            parse_config({"pki": table}, tmp_path / "mss.toml")
    config = parse_config({}, tmp_path / "mss.toml")
    assert config.pki is not None and config.pki.anchors == config.tls.ca_file
    assert config.pki.crl_unavailable == "fail-closed" and "relay" in config.listeners


def test_pki_verify_and_crl_status_cli(setup: Setup) -> None:
    pki, node = setup.pki, setup.node
    out = node.cli("pki", "verify", str(pki / "revoked.crt"), check=False)
    assert out.returncode == 1 and "chain:   revoked: " in out.stdout
    out = node.cli("pki", "verify", str(pki / "operator-a.crt"), "--sender", f"dr@{A_DOMAIN}")
    assert out.stdout.strip().endswith(f"accepted for dr@{A_DOMAIN}")
    out = node.cli("pki", "verify", str(pki / "operator-a.crt"), "--sender", f"dr@{B_DOMAIN}",
                   check=False)
    assert out.returncode == 1 and "550 5.7.1" in out.stdout and "dn_not_listed" in out.stdout
    out = node.cli("pki", "verify", str(pki / "operator-a.key"), check=False)
    assert out.returncode == 2 and out.stderr.startswith("mss: error: ")
    assert len(out.stderr.strip().splitlines()) == 1
    # --sender is read as the MX reads MAIL FROM: "<>" and "" are the null sender
    for null in ("<>", ""):
        out = node.cli("pki", "verify", str(pki / "operator-a.crt"), "--sender", null)
        assert out.stdout.strip().endswith("accepted for <>")
    out = node.cli("pki", "verify", str(pki / "operator-a.crt"), "--sender", "nobody",
                   check=False)
    assert out.returncode == 2 and out.stderr.startswith("mss: error: invalid address")
    assert len(out.stderr.strip().splitlines()) == 1 and not out.stdout
    status = {Path(row["source"]).name: row for row in node.cli_json("pki", "crl-status")}
    crl = status["organisations.crl.pem"]
    assert crl["loaded"] and crl["entries"] == 1
    assert str(crl["issuer"]).startswith("CN=TEST AC IGC-SANTE")


def test_crl_store_refresh_schedule_and_retry(setup: Setup, tmp_path: Path) -> None:
    import asyncio

    from trustspace.crl import CrlStore

    crl = (setup.pki / "organisations.crl.pem").read_bytes()
    issuer = x509.load_pem_x509_certificate((setup.pki / "organisations.crt").read_bytes())
    with crl_server(crl) as (url, handler):
        dead = f"http://127.0.0.1:{free_port()}/x.crl"
        store = CrlStore([], [url, dead], tmp_path / "cache", fetch_timeout=2,
                         refresh_interval=600, retry_interval=30)
        assert store.due_urls() == [url, dead]
        asyncio.run(store.refresh())
        assert handler.hits == 1 and store.lookup(issuer) is not None
        now = time.time()
        assert store.due_urls(now) == []  # fetched, and the dead one failed just now
        assert store.due_urls(now + 31) == [dead]  # retried after crl_retry_interval
        assert set(store.due_urls(now + 601)) == {url, dead}  # refreshed at the interval
        # a restart reads the disk cache: the CRL is there before any fetch
        again = CrlStore([], [url], tmp_path / "cache")
        assert again.lookup(issuer) is not None and handler.hits == 1
    # past its nextUpdate a CRL is not current (RFC 5280 §6.3.3 (a))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)
    assert again.lookup(issuer, later) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=3))
def test_garbage_chains_are_refused_never_raise(chain: list[bytes]) -> None:
    """Whatever a peer sends as certificates, the answer is a refusal value."""
    result = validate(chain, [], [], lambda _: None, True)
    assert result.check is PkiCheck.UNTRUSTED_CHAIN
