"""Peer certificate path validation (RFC 5280 §6), done in Python after the handshake:
client certificates on the MX and relay listeners, server certificates of the peers our
queue delivers to.

:func:`validate` builds a path from the leaf to a configured trust anchor through the
certificates the peer presented and the configured intermediates, then checks, in this
order, so that the audit reason names the first real problem:

1. a path exists: issuer name match and signature at every step, every issuer a CA
   (basicConstraints cA, keyUsage keyCertSign when present, pathLenConstraint), no
   unknown critical extension, the leaf not a CA, when it has an extendedKeyUsage usable
   for the purpose (clientAuth or serverAuth, RFC 5280 §4.2.1.12) and, when it has a
   keyUsage, allowing digitalSignature or keyAgreement (§4.2.1.3)
                                                          -> ``untrusted_chain``
2. every certificate of the path inside its validity period (§6.1.3 (a)(2))
                                                          -> ``expired`` / ``not_yet_valid``
3. revocation of every certificate below the anchor from the CRL of its issuer
   (§6.3): listed -> ``revoked``; no current CRL for the leaf's issuer while revocation is
   configured -> ``crl_unavailable``. Intermediates are checked when a CRL of their issuer
   is known.

The result is a value; the caller turns it into an SMTP reply and an audit record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

MAX_DEPTH = 8
Purpose = Literal["client", "server"]  # the TLS role the leaf plays
_USAGE = MappingProxyType({"client": ExtendedKeyUsageOID.CLIENT_AUTH,
                           "server": ExtendedKeyUsageOID.SERVER_AUTH})


class PkiCheck(Enum):
    OK = "ok"
    NO_CERTIFICATE = "no_certificate"
    UNTRUSTED_CHAIN = "untrusted_chain"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    REVOKED = "revoked"
    CRL_UNAVAILABLE = "crl_unavailable"


@dataclass(frozen=True)
class ChainResult:
    check: PkiCheck
    detail: str  # private: for the audit record
    subject: str = ""  # leaf subject, RFC 4514
    fingerprint: str = ""  # SHA-256 of the leaf, hex
    leaf: x509.Certificate | None = None
    path: tuple[x509.Certificate, ...] = ()  # leaf .. anchor when a path was built

    @property
    def ok(self) -> bool:
        return self.check is PkiCheck.OK

    @property
    def reason(self) -> str:
        return f"{self.check.value}: {self.detail}"


# CRL lookup: issuer certificate -> a current CRL signed by it, or None
CrlLookup = Callable[[x509.Certificate], x509.CertificateRevocationList | None]

_KNOWN_CRITICAL = frozenset({
    ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.CERTIFICATE_POLICIES,
    ExtensionOID.POLICY_CONSTRAINTS, ExtensionOID.INHIBIT_ANY_POLICY,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.CRL_DISTRIBUTION_POINTS, ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    ExtensionOID.POLICY_MAPPINGS,
})


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _extension(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


def _unknown_critical(cert: x509.Certificate) -> str | None:
    for ext in cert.extensions:
        if ext.critical and ext.oid not in _KNOWN_CRITICAL:
            return str(ext.oid.dotted_string)
    return None


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _issuer_problem(issuer: x509.Certificate, below: int, anchor: bool) -> str | None:
    """Why *issuer* may not issue (RFC 5280 §6.1.4 (k)(l)(m)(n)); *below* counts the
    non-self-issued intermediates under it."""
    constraints = _extension(issuer, ExtensionOID.BASIC_CONSTRAINTS)
    if not anchor or constraints is not None:
        if not isinstance(constraints, x509.BasicConstraints) or not constraints.ca:
            return f"issuer {_name(issuer)} is not a CA (basicConstraints)"
        if constraints.path_length is not None and below > constraints.path_length:
            return f"path length constraint of {_name(issuer)} exceeded"
    usage = _extension(issuer, ExtensionOID.KEY_USAGE)
    if isinstance(usage, x509.KeyUsage) and not usage.key_cert_sign:
        return f"issuer {_name(issuer)} may not sign certificates (keyUsage)"
    if not anchor and (oid := _unknown_critical(issuer)):
        return f"unknown critical extension {oid} in {_name(issuer)}"
    return None


def _leaf_problem(leaf: x509.Certificate, purpose: Purpose) -> str | None:
    constraints = _extension(leaf, ExtensionOID.BASIC_CONSTRAINTS)
    if isinstance(constraints, x509.BasicConstraints) and constraints.ca:
        return f"the {purpose} certificate is a CA certificate"
    usage = _extension(leaf, ExtensionOID.EXTENDED_KEY_USAGE)
    if isinstance(usage, x509.ExtendedKeyUsage) and not (
            _USAGE[purpose] in usage or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usage):
        return f"extendedKeyUsage does not allow {purpose}Auth"
    key_usage = _extension(leaf, ExtensionOID.KEY_USAGE)
    if isinstance(key_usage, x509.KeyUsage) and not (
            key_usage.digital_signature or key_usage.key_agreement):
        return "keyUsage allows neither digitalSignature nor keyAgreement"
    if oid := _unknown_critical(leaf):
        return f"unknown critical extension {oid}"
    return None


def _build_path(leaf: x509.Certificate, candidates: Sequence[x509.Certificate],
                anchors: Sequence[x509.Certificate]) -> tuple[list[x509.Certificate], str]:
    """Leaf .. anchor, or ([], why not). Depth-first over issuer-name matches."""
    best_error = f"issuer {leaf.issuer.rfc4514_string()} not found among the trust anchors"

    def extend(path: list[x509.Certificate], below: int) -> list[x509.Certificate] | None:
        nonlocal best_error
        cert = path[-1]
        if len(path) > MAX_DEPTH:
            best_error = "certificate path too long"
            return None
        for anchor in anchors:
            if anchor.subject == cert.issuer and _signed_by(cert, anchor):
                problem = _issuer_problem(anchor, below, anchor=True)
                if problem is None:
                    return [*path, anchor]
                best_error = problem
        for issuer in candidates:
            if issuer.subject != cert.issuer or issuer in path:
                continue
            if not _signed_by(cert, issuer):
                best_error = f"bad signature by {_name(issuer)} on {_name(cert)}"
                continue
            problem = _issuer_problem(issuer, below, anchor=False)
            if problem is not None:
                best_error = problem
                continue
            self_issued = issuer.subject == issuer.issuer
            found = extend([*path, issuer], below + (0 if self_issued else 1))
            if found is not None:
                return found
        return None

    return extend([leaf], 0) or [], best_error


def validate(chain_der: Sequence[bytes], anchors: Sequence[x509.Certificate],
             intermediates: Sequence[x509.Certificate], crl_for: CrlLookup,
             revocation_configured: bool, now: dt.datetime | None = None,
             purpose: Purpose = "client") -> ChainResult:
    """Validate the presented chain (leaf first, DER) of a TLS client or server."""
    if not chain_der:
        return ChainResult(PkiCheck.NO_CERTIFICATE, f"no {purpose} certificate presented")
    try:
        leaf = x509.load_der_x509_certificate(chain_der[0])
        presented = [x509.load_der_x509_certificate(d) for d in chain_der[1:]]
    except ValueError as exc:
        return ChainResult(PkiCheck.UNTRUSTED_CHAIN, f"unparsable certificate: {exc}",
                           fingerprint=fingerprint(chain_der[0]))
    found: list[x509.Certificate] = []

    def done(check: PkiCheck, detail: str) -> ChainResult:
        return ChainResult(check, detail, _name(leaf), fingerprint(chain_der[0]), leaf,
                           tuple(found))

    problem = _leaf_problem(leaf, purpose)
    if problem is not None:
        return done(PkiCheck.UNTRUSTED_CHAIN, problem)
    path, why = _build_path(leaf, [*presented, *intermediates], anchors)
    if not path:
        return done(PkiCheck.UNTRUSTED_CHAIN, why)
    found.extend(path)
    now = now or dt.datetime.now(dt.UTC)
    for cert in path:  # RFC 5280 §6.1.3 (a)(2)
        if now > cert.not_valid_after_utc:
            return done(PkiCheck.EXPIRED, f"{_name(cert)} expired on "
                        f"{cert.not_valid_after_utc.isoformat()}")
        if now < cert.not_valid_before_utc:
            return done(PkiCheck.NOT_YET_VALID, f"{_name(cert)} not valid before "
                        f"{cert.not_valid_before_utc.isoformat()}")
    if revocation_configured:  # RFC 5280 §6.3
        for index, cert in enumerate(path[:-1]):
            issuer = path[index + 1]
            crl = crl_for(issuer)
            if crl is None:
                if index == 0:
                    return done(PkiCheck.CRL_UNAVAILABLE, f"no current CRL of {_name(issuer)}")
                continue
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is not None:
                return done(PkiCheck.REVOKED, f"{_name(cert)} (serial {cert.serial_number:x}) "
                            f"revoked on {entry.revocation_date_utc.isoformat()}")
    return done(PkiCheck.OK, f"verified up to {_name(path[-1])}")
