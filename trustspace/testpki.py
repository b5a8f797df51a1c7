"""A test PKI shaped like IGC-Santé: a root, an "ORGANISATIONS" intermediate, operator
server certificates whose subject has the real form
``CN=<fqdn>,OU=<1+FINESS or 3+SIRET>,O=<organisation>,ST=<Département (nn)>,C=FR``,
and a CRL. For tests and interoperability trials only: every name says TEST.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from trustspace.pki import write_private_key

ROOT_SUBJECT = "CN=TEST AC RACINE IGC-SANTE ELEMENTAIRE,OU=TEST IGC-SANTE,O=mss test PKI,C=FR"
ORGANISATIONS_SUBJECT = ("CN=TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS,OU=TEST IGC-SANTE,"
                         "O=mss test PKI,C=FR")


@dataclass(frozen=True)
class ServerSpec:
    name: str  # file stem
    fqdn: str
    ou: str  # 1+FINESS or 3+SIRET
    organisation: str
    state: str  # "Département (nn)"
    not_before_days: int = -1  # relative to now
    not_after_days: int = 365
    revoked: bool = False

    @property
    def subject(self) -> str:
        return f"CN={self.fqdn},OU={self.ou},O={self.organisation},ST={self.state},C=FR"


DEFAULT_SERVERS = (
    ServerSpec("operator-a", "mx.operator-a.test", "1750000001", "OPERATEUR A", "Paris (75)"),
    ServerSpec("operator-b", "mx.operator-b.test", "332315971500305", "OPERATEUR B",
               "Gironde (33)"),
    ServerSpec("expired", "mx.expired.test", "1330000003", "OPERATEUR EXPIRE",
               "Bouches-du-Rhône (13)", not_before_days=-400, not_after_days=-30),
    ServerSpec("revoked", "mx.revoked.test", "1690000004", "OPERATEUR REVOQUE",
               "Rhône (69)", revoked=True),
)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca(subject: str, key: rsa.RSAPrivateKey, issuer: x509.Name, signer: rsa.RSAPrivateKey,
        now: dt.datetime, path_length: int) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string(subject)).issuer_name(issuer)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(signer, hashes.SHA256())
    )


def init_test_pki(directory: Path, servers: tuple[ServerSpec, ...] = DEFAULT_SERVERS
                  ) -> dict[str, Path]:
    """Write the hierarchy under *directory*; returns the paths by role/name."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = dt.datetime.now(dt.UTC)
    root_key, inter_key = _key(), _key()
    root_name = x509.Name.from_rfc4514_string(ROOT_SUBJECT)
    root = _ca(ROOT_SUBJECT, root_key, root_name, root_key, now, 1)
    inter = _ca(ORGANISATIONS_SUBJECT, inter_key, root.subject, root_key, now, 0)
    paths = {"root": directory / "root.crt", "organisations": directory / "organisations.crt",
             "chain": directory / "chain.pem", "crl": directory / "organisations.crl.pem"}
    paths["root"].write_bytes(_pem(root))
    paths["organisations"].write_bytes(_pem(inter))
    paths["chain"].write_bytes(_pem(inter) + _pem(root))
    write_private_key(directory / "root.key", root_key)
    write_private_key(directory / "organisations.key", inter_key)
    revoked: list[x509.RevokedCertificate] = []
    for spec in servers:
        key = _key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name.from_rfc4514_string(spec.subject))
            .issuer_name(inter.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=spec.not_before_days))
            .not_valid_after(now + dt.timedelta(days=spec.not_after_days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(spec.fqdn)]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                inter_key.public_key()), critical=False)
            .sign(inter_key, hashes.SHA256())
        )
        cert_path, key_path = directory / f"{spec.name}.crt", directory / f"{spec.name}.key"
        cert_path.write_bytes(_pem(cert) + _pem(inter))  # leaf + intermediate, as served
        write_private_key(key_path, key)
        paths[spec.name] = cert_path
        paths[f"{spec.name}.key"] = key_path
        if spec.revoked:
            revoked.append(x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
                           .revocation_date(now - dt.timedelta(hours=1)).build())
    crl = x509.CertificateRevocationListBuilder().issuer_name(inter.subject) \
        .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=7))
    for entry in revoked:
        crl = crl.add_revoked_certificate(entry)
    paths["crl"].write_bytes(crl.sign(inter_key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM))
    (directory / "README").write_text(
        "TEST PKI shaped like IGC-Santé (root, ORGANISATIONS intermediate, SERV SSL-like "
        "server certificates, CRL). Never use outside tests.\n")
    return paths
