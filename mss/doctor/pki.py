"""The node's own certificate, its anchors and CRLs, as its peers check them (RFC 5280)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from mss.config import Config
from mss.doctor.findings import EXPIRY_WARN_DAYS, Finding, day, fail, ok, warn
from trustspace.crl import current_crl


@dataclass(frozen=True)
class Ours:
    """Our certificate chain as configured ([tls] cert_file), leaf first."""

    chain: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    def der(self) -> list[bytes]:
        return [c.public_bytes(serialization.Encoding.DER) for c in self.chain]


def load_ours(config: Config) -> tuple[Ours | None, Finding]:
    path = config.tls.cert_file
    try:
        chain = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        return None, fail("certificate", f"tls.cert_file {path}: {exc.strerror or exc}")
    except ValueError:
        return None, fail("certificate", f"tls.cert_file {path}: no PEM certificate")
    leaf = chain[0]
    return Ours(tuple(chain)), ok("certificate", leaf.subject.rfc4514_string())


def _bundle(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def check_anchors(config: Config, now: dt.datetime) -> tuple[list[x509.Certificate], Finding]:
    path = config.pki.anchors
    try:
        anchors = _bundle(path)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "no PEM certificate"
        return [], fail("anchors", f"pki.anchors {path}: {why}: install the IGC-Santé roots "
                        "(or the development CA) there")
    expired = [a for a in anchors if a.not_valid_after_utc < now]
    if expired:
        return anchors, fail("anchors", f"{expired[0].subject.rfc4514_string()} expired on "
                             f"{day(expired[0].not_valid_after_utc)}: remove it from "
                             f"{path}, install its successor")
    soon = [a for a in anchors
            if a.not_valid_after_utc < now + dt.timedelta(days=EXPIRY_WARN_DAYS)]
    if soon:
        return anchors, warn("anchors", f"{soon[0].subject.rfc4514_string()} expires on "
                             f"{day(soon[0].not_valid_after_utc)}: install its successor")
    return anchors, ok("anchors", f"{len(anchors)} in {path}")


def check_chain(config: Config, ours: Ours, anchors: Sequence[x509.Certificate],
                crls: Callable[[x509.Certificate], x509.CertificateRevocationList | None],
                revocation: bool, now: dt.datetime) -> Finding:
    """A path from our leaf to an anchor (RFC 5280 §6), as our peers build it."""
    from trustspace.chain import PkiCheck, validate

    intermediates: list[x509.Certificate] = []
    if config.pki.intermediates:
        try:
            intermediates = _bundle(config.pki.intermediates)
        except (OSError, ValueError):
            return fail("certificate chain", f"pki.intermediates {config.pki.intermediates}: "
                        "unreadable")
    result = validate(ours.der(), anchors, intermediates, crls, revocation, now=now,
                      purpose="server")
    if result.check in (PkiCheck.OK, PkiCheck.EXPIRED, PkiCheck.NOT_YET_VALID):
        top = result.path[-1].subject.rfc4514_string() if result.path else "?"
        return ok("certificate chain", f"up to {top}")  # validity: "certificate expiry"
    if result.check is PkiCheck.CRL_UNAVAILABLE:
        return warn("certificate chain", f"{result.detail}: add its CRL to pki.crl_files "
                    "or pki.crl_urls (peers check it)")
    if result.check is PkiCheck.REVOKED:
        return fail("certificate chain", f"{result.detail}: get a new certificate from the "
                    "IGC-Santé, install it in tls.cert_file / tls.key_file")
    return fail("certificate chain", f"{result.detail}: put the intermediate CAs after the "
                f"leaf in {config.tls.cert_file} (or pki.intermediates), the root in "
                "pki.anchors")


def check_expiry(ours: Ours, now: dt.datetime) -> Finding:
    renew = "renew it (IGC-Santé SERV SSL), install it in tls.cert_file / tls.key_file, " \
            "restart mss serve"
    for cert in ours.chain:
        name = "our certificate" if cert is ours.leaf else cert.subject.rfc4514_string()
        if cert.not_valid_after_utc < now:
            return fail("certificate expiry", f"{name} expired on "
                        f"{day(cert.not_valid_after_utc)}: {renew}")
        if cert.not_valid_before_utc > now:
            return fail("certificate expiry", f"{name} not valid before "
                        f"{day(cert.not_valid_before_utc)}: check the clock, or {renew}")
    first = min(ours.chain, key=lambda c: c.not_valid_after_utc)
    days = (first.not_valid_after_utc - now).days
    if days < EXPIRY_WARN_DAYS:
        return warn("certificate expiry", f"expires in {days} days "
                    f"({day(first.not_valid_after_utc)}): {renew}")
    return ok("certificate expiry", f"{days} days left")


def _extension(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


def check_usage(ours: Ours, purpose: str) -> Finding:
    """RFC 5280 §4.2.1.3, §4.2.1.12: the leaf usable as a TLS *purpose* (mutual TLS between
    operators: our MX serves as a server and delivers as a client)."""
    label = f"certificate usage {purpose}"
    wanted = ExtendedKeyUsageOID.SERVER_AUTH if purpose == "server" \
        else ExtendedKeyUsageOID.CLIENT_AUTH
    constraints = _extension(ours.leaf, ExtensionOID.BASIC_CONSTRAINTS)
    if isinstance(constraints, x509.BasicConstraints) and constraints.ca:
        return fail(label, "tls.cert_file is a CA certificate: install the server's own")
    eku = _extension(ours.leaf, ExtensionOID.EXTENDED_KEY_USAGE)
    if isinstance(eku, x509.ExtendedKeyUsage) and not (
            wanted in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku):
        return fail(label, f"extendedKeyUsage lacks {purpose}Auth: ask for a SERV SSL "
                    "certificate with serverAuth and clientAuth")
    usage = _extension(ours.leaf, ExtensionOID.KEY_USAGE)
    if isinstance(usage, x509.KeyUsage) and not (
            usage.digital_signature or usage.key_agreement or usage.key_encipherment):
        return fail(label, "keyUsage allows neither digitalSignature, keyEncipherment nor "
                    "keyAgreement: ask for a SERV SSL certificate")
    return ok(label, f"{purpose}Auth")


def check_key_pair(config: Config, ours: Ours) -> Finding:
    path = config.tls.key_file
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except OSError as exc:
        return fail("certificate key", f"tls.key_file {path}: {exc.strerror or exc}")
    except (ValueError, TypeError):
        return fail("certificate key", f"tls.key_file {path}: not an unencrypted PEM key")
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    mine = key.public_key().public_bytes(serialization.Encoding.DER, raw)
    if mine != ours.leaf.public_key().public_bytes(serialization.Encoding.DER, raw):
        return fail("certificate key", f"tls.key_file {path} is not the key of "
                    f"{config.tls.cert_file}: install the matching pair")
    return ok("certificate key", "matches the certificate")


# --------------------------------------------------------------------------- CRLs

def check_crls(config: Config, now: dt.datetime) -> tuple[
        list[Finding], Callable[[x509.Certificate], x509.CertificateRevocationList | None]]:
    """Each configured CRL present and current (RFC 5280 §5.1.2.5 nextUpdate)."""
    from trustspace.crl import CrlError, CrlStore, parse_crl

    pki = config.pki
    loaded: list[x509.CertificateRevocationList] = []
    findings: list[Finding] = []
    if not (pki.crl_files or pki.crl_urls):
        findings.append(warn("crl", "no CRL configured: revoked peer certificates are "
                             "accepted; set pki.crl_urls to the IGC-Santé distribution points"))
    sources: list[tuple[str, x509.CertificateRevocationList | None, str]] = []
    for path in pki.crl_files:
        try:
            sources.append((str(path), parse_crl(path.read_bytes()), ""))
        except OSError as exc:
            sources.append((str(path), None, f"{exc.strerror or exc}: put the CRL there"))
        except CrlError as exc:
            sources.append((str(path), None, f"{exc}: download it again from its issuer"))
    if pki.crl_urls:
        store = CrlStore((), pki.crl_urls, pki.crl_cache_dir)  # the copies mss serve fetched
        for url in pki.crl_urls:
            crl = store.urls[url].crl
            sources.append((url, crl, "" if crl else
                            "never fetched: mss serve fetches it (is the URL reachable?)"))
    for name, crl, why in sources:
        label = f"crl {name}"
        if crl is None:
            findings.append(fail(label, why))
            continue
        loaded.append(crl)
        nxt = crl.next_update_utc
        if nxt is not None and nxt < now:
            findings.append(fail(label, f"stale: nextUpdate {day(nxt)} passed; fetch the "
                                 f"issuer's new CRL ({crl.issuer.rfc4514_string()})"))
        else:
            findings.append(ok(label, f"next update {day(nxt)}" if nxt else "current"))

    def lookup(issuer: x509.Certificate) -> x509.CertificateRevocationList | None:
        return current_crl(loaded, issuer, now)

    return findings, lookup
