"""The development certificate's names (issue 17): ``mss init --hostname/--ip`` and ``mss pki
dev-cert``, checked by real TLS clients (Python's ssl with check_hostname, openssl
s_client -verify_hostname) against ``openssl s_server`` and the node's own listeners."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.node import CHILD_ENV, DOMAIN, MSS, REPO, Node, free_port, make_node

HOST = "127.0.31.7"  # loopback addresses of this branch (CONTRACTS17.md: 127.0.31.0/24)
OTHER_IP = "127.0.31.5"


def leaf(cert_file: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(cert_file.read_bytes())[0]


def names(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (san.get_values_for_type(x509.DNSName),
            [str(a) for a in san.get_values_for_type(x509.IPAddress)])


def handshake(address: str, port: int, ca_file: Path, server_hostname: str) -> str:
    """'ok', or why a verifying TLS client refused the server's certificate."""
    context = ssl.create_default_context(cafile=str(ca_file))  # check_hostname on
    try:
        with socket.create_connection((address, port), timeout=10) as sock, \
                context.wrap_socket(sock, server_hostname=server_hostname):
            return "ok"
    except ssl.SSLCertVerificationError as exc:
        return exc.verify_message


def s_client(address: str, port: int, ca_file: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", "s_client", "-connect", f"{address}:{port}",
                           "-servername", name, "-verify_hostname", name, "-CAfile",
                           str(ca_file), "-verify_return_error", "-brief"],
                          input="", capture_output=True, text=True, timeout=30)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mss: error: "), proc.stderr
    return lines[0]


def mss(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MSS, *args], capture_output=True, text=True, cwd=REPO,
                          env=CHILD_ENV, timeout=120)


def test_init_names_the_hostnames_and_addresses_given(tmp_path: Path) -> None:
    data = tmp_path / "node"
    for bad, error in ((["--ip", "999.1.1.1"], "--ip '999.1.1.1': not an IPv4 or IPv6"),
                       (["--hostname", "bad name!"], "--hostname 'bad name!'")):
        assert error in one_line_error(mss("init", "--data-dir", str(data), "--domain", DOMAIN,
                                           *bad))
        assert not data.exists()  # refused before anything is written
    made = mss("init", "--data-dir", str(data), "--domain", DOMAIN, "--hostname",
               "mail.clinic.test", "--hostname", "MX2.Clinic.Test.", "--ip", OTHER_IP,
               "--ip", "::1")
    assert made.returncode == 0, made.stderr
    cert = leaf(data / "pki" / "server.crt")
    assert names(cert) == ([f"mx.{DOMAIN}", "localhost", "mail.clinic.test", "mx2.clinic.test"],
                           ["127.0.0.1", OTHER_IP, "::1"])
    port = free_port(OTHER_IP)
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"{OTHER_IP}:{port}", "-cert",
                               str(data / "pki" / "server.crt"), "-key",
                               str(data / "pki" / "server.key"), "-naccept", "4", "-quiet"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection((OTHER_IP, port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        ca = data / "pki" / "ca.crt"
        assert handshake(OTHER_IP, port, ca, "mail.clinic.test") == "ok"
        assert handshake(OTHER_IP, port, ca, OTHER_IP) == "ok"  # an IP address SAN
        assert "mismatch" in handshake(OTHER_IP, port, ca, "other.clinic.test").lower()
    finally:
        server.kill()
        server.wait(timeout=10)


@pytest.fixture
def moved(tmp_path: Path) -> Node:
    """A node whose listeners moved to HOST, as the README says to serve other machines
    (here another loopback address): its mss init certificate names 127.0.0.1 only."""
    return make_node(tmp_path, host=HOST)


def test_dev_cert_reissues_for_the_moved_listeners_at_next_start(moved: Node) -> None:
    node = moved
    pki = node.data_dir / "pki"
    imaps = node.ports["imaps"]
    before_cert, before_key = (pki / "server.crt").read_bytes(), (pki / "server.key").read_bytes()
    old = leaf(pki / "server.crt")
    node.start()
    try:
        # the problem: a client reaching the node by its address refuses the certificate
        assert "mismatch" in handshake(HOST, imaps, node.ca_file, HOST).lower()
        out = node.cli("pki", "dev-cert", "--hostname", "imap.clinic.test").stdout
        assert f"reissued for mx.{DOMAIN}, localhost, imap.clinic.test, 127.0.0.1, {HOST}" in out
        assert "next start" in out
        # the running listeners keep the certificate they loaded
        assert "mismatch" in handshake(HOST, imaps, node.ca_file, "imap.clinic.test").lower()
    finally:
        node.stop()
    assert (pki / "server.crt.bak").read_bytes() == before_cert
    assert (pki / "server.key").read_bytes() == before_key  # the same key
    new = leaf(pki / "server.crt")
    assert new.serial_number != old.serial_number and new.subject == old.subject
    assert new.public_key().public_numbers() == old.public_key().public_numbers()  # type: ignore[union-attr]
    kept = [e for e in old.extensions if e.oid != x509.SubjectAlternativeName.oid]
    assert [e for e in new.extensions if e.oid != x509.SubjectAlternativeName.oid] == kept
    assert names(new) == ([f"mx.{DOMAIN}", "localhost", "imap.clinic.test"], ["127.0.0.1", HOST])
    node.start()
    try:
        assert handshake(HOST, imaps, node.ca_file, HOST) == "ok"
        assert handshake(HOST, imaps, node.ca_file, "imap.clinic.test") == "ok"
        assert "mismatch" in handshake(HOST, imaps, node.ca_file, "other.clinic.test").lower()
        verified = s_client(HOST, imaps, node.ca_file, "imap.clinic.test")
        assert verified.returncode == 0, verified.stderr
        refused = s_client(HOST, imaps, node.ca_file, "other.clinic.test")
        assert refused.returncode != 0 and "hostname mismatch" in refused.stderr.lower()
    finally:
        node.stop()
    record = node.audit("--event", "admin.pki.dev_cert")[-1]
    assert record["detail"]["hostnames"] == f"mx.{DOMAIN},localhost,imap.clinic.test"  # type: ignore[index]
    assert record["detail"]["ips"] == f"127.0.0.1,{HOST}"  # type: ignore[index]
    # --only: the names of the configuration, localhost and 127.0.0.1, no others
    node.cli("pki", "dev-cert", "--only")
    assert names(leaf(pki / "server.crt")) == ([f"mx.{DOMAIN}", "localhost"],
                                               ["127.0.0.1", HOST])


def test_dev_cert_refuses_what_it_did_not_issue(moved: Node) -> None:
    node = moved
    pki = node.data_dir / "pki"
    assert "--ip 'nope'" in one_line_error(node.cli("pki", "dev-cert", "--ip", "nope",
                                                    check=False))
    # an operator certificate from elsewhere (here self-signed) in [tls]: never reissued
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.operator.fr")])
    now = dt.datetime.now(dt.UTC)
    other = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
             .public_key(key.public_key()).serial_number(1)
             .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
             .sign(key, hashes.SHA256()))
    (pki / "server.crt").write_bytes(other.public_bytes(serialization.Encoding.PEM))
    before = (pki / "server.crt").read_bytes()
    error = one_line_error(node.cli("pki", "dev-cert", check=False))
    assert "not by the development CA" in error and "CN=mx.operator.fr" in error
    assert (pki / "server.crt").read_bytes() == before and not (pki / "server.crt.bak").exists()
    (pki / "ca.key").unlink()  # a data dir without the development CA's key
    assert "only the development PKI" in one_line_error(node.cli("pki", "dev-cert",
                                                                 check=False))
