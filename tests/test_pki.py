"""The IGC-Santé-shaped test PKI written by 'mss pki init-test'."""

from __future__ import annotations

import datetime as dt
import ssl
import subprocess
from pathlib import Path

from cryptography import x509

from tests.node import MSS, REPO
from trustspace.dn import canonical_name, parse_dn


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def test_init_test_pki_hierarchy_dn_form_and_crl(tmp_path: Path) -> None:
    out = subprocess.run([*MSS, "pki", "init-test", "--dir", str(tmp_path / "pki")],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    pki = tmp_path / "pki"
    root, inter = load(pki / "root.crt"), load(pki / "organisations.crt")
    inter.verify_directly_issued_by(root)
    assert "ORGANISATIONS" in inter.subject.rfc4514_string()
    now = dt.datetime.now(dt.UTC)
    crl = x509.load_pem_x509_crl((pki / "organisations.crl.pem").read_bytes())
    assert crl.is_signature_valid(inter.public_key())  # type: ignore[arg-type]
    for name in ("operator-a", "operator-b", "expired", "revoked"):
        leaf = load(pki / f"{name}.crt")
        leaf.verify_directly_issued_by(inter)
        # CN=<fqdn>,OU=<1+FINESS or 3+SIRET>,O=<organisation>,ST=<Département (nn)>,C=FR
        rdns = [a.oid._name for a in reversed(list(leaf.subject))]
        assert rdns == ["commonName", "organizationalUnitName", "organizationName",
                        "stateOrProvinceName", "countryName"]
        assert canonical_name(leaf.subject) == parse_dn(leaf.subject.rfc4514_string())
        revoked = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
        assert (revoked is not None) == (name == "revoked")
        assert (leaf.not_valid_after_utc < now) == (name == "expired")
    # the served chain (leaf + intermediate) is accepted by a TLS stack trusting the root
    ctx = ssl.create_default_context(cafile=str(pki / "root.crt"))
    ctx.load_cert_chain(pki / "operator-a.crt", pki / "operator-a.key")
    again = subprocess.run([*MSS, "pki", "init-test", "--dir", str(pki)],
                           capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 2 and "already holds a test PKI" in again.stderr
