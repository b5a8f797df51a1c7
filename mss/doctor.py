"""``mss doctor [DOMAIN ...]``: the node checked as an MSSanté auditor would (docs/doctor.md).

Each check is a :class:`Finding` (check, status ``ok``/``warn``/``fail``, fix). The node
checks always run: our certificate (its subject DN listed in the national whitelist for each
hosted domain, its chain to the anchors, expiry, key usage for a TLS server and client, its
key), the CRLs, the anchors, the whitelist's age, the audit destinations and the directory
reached over verified TLS, the modes of the key files and of the data directory, the schema
version, each enabled listener answering as ours, the token issuers' discovery documents.
The DNS checks of :mod:`mss.dns_cli` run for each DOMAIN given (``--dns``: every hosted
domain). Network checks are bounded by ``--timeout`` each. Exit 0 without a ``fail``, 1
with one, 2 on bad input. Nothing is written: no audit record, no state.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import stat
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from mss.cli_output import Column, emit
from mss.config import Config, ListenerConfig

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from trustspace.whitelist import Whitelist

EXPIRY_WARN_DAYS = 30  # a certificate or an anchor expiring sooner: warn
WHITELIST_MAX_AGE = 7 * 86400.0  # seconds: an older list (no fetch configured) is stale
SMTP_LISTENERS = ("mx", "submission", "submissions", "relay", "submission-cert")
IMAP_LISTENERS = ("imap", "imaps", "imap-cert")
IMPLICIT_TLS = ("submissions", "imaps", "portal")  # RFC 8314 §3.3; the portal is HTTPS


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok | warn | fail
    fix: str = ""  # what to do (fail, warn), or what was seen (ok)

    def row(self) -> dict[str, object]:
        return {"check": self.check, "status": self.status, "fix": self.fix}


def ok(check: str, seen: str = "") -> Finding:
    return Finding(check, "ok", seen)


def warn(check: str, fix: str) -> Finding:
    return Finding(check, "warn", fix)


def fail(check: str, fix: str) -> Finding:
    return Finding(check, "fail", fix)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _day(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


# --------------------------------------------------------------------------- certificate

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
                             f"{_day(expired[0].not_valid_after_utc)}: remove it from "
                             f"{path}, install its successor")
    soon = [a for a in anchors
            if a.not_valid_after_utc < now + dt.timedelta(days=EXPIRY_WARN_DAYS)]
    if soon:
        return anchors, warn("anchors", f"{soon[0].subject.rfc4514_string()} expires on "
                             f"{_day(soon[0].not_valid_after_utc)}: install its successor")
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
                        f"{_day(cert.not_valid_after_utc)}: {renew}")
        if cert.not_valid_before_utc > now:
            return fail("certificate expiry", f"{name} not valid before "
                        f"{_day(cert.not_valid_before_utc)}: check the clock, or {renew}")
    first = min(ours.chain, key=lambda c: c.not_valid_after_utc)
    days = (first.not_valid_after_utc - now).days
    if days < EXPIRY_WARN_DAYS:
        return warn("certificate expiry", f"expires in {days} days "
                    f"({_day(first.not_valid_after_utc)}): {renew}")
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
            findings.append(fail(label, f"stale: nextUpdate {_day(nxt)} passed; fetch the "
                                 f"issuer's new CRL ({crl.issuer.rfc4514_string()})"))
        else:
            findings.append(ok(label, f"next update {_day(nxt)}" if nxt else "current"))

    def lookup(issuer: x509.Certificate) -> x509.CertificateRevocationList | None:
        for crl in loaded:
            current = crl.next_update_utc is None or crl.next_update_utc >= now
            if crl.issuer == issuer.subject and current:
                try:
                    if crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                        return crl
                except TypeError:
                    continue
        return None

    return findings, lookup


# --------------------------------------------------------------------------- whitelist

def check_whitelist(config: Config, conn: Connection, ours: Ours | None,
                    domains: Sequence[str], now: float) -> list[Finding]:
    from trustspace.dn import canonical_name
    from trustspace.registry import active_version_info, load_active

    info = active_version_info(conn)
    if info is None:
        return [fail("whitelist", "no national whitelist imported: mss whitelist import FILE, "
                     "or set whitelist.fetch.url")]
    fetch = config.whitelist.fetch
    limit = 3 * fetch.interval if fetch.url and fetch.interval else WHITELIST_MAX_AGE
    age = now - float(info["imported_at"])
    checked = _last_check(conn, fetch.url)
    if checked is not None:
        age = min(age, now - checked)  # an unchanged list fetched again is fresh
    findings = [(warn("whitelist age", f"{age / 3600:.0f} h since the list was last "
                      "updated: " + ("check the fetch (mss whitelist status)" if fetch.url
                                     else "import the agency's latest list"))
                 if age > limit else ok("whitelist age", f"version {info['id']}, "
                                        f"{age / 3600:.1f} h old"))]
    if ours is None:
        return findings
    whitelist: Whitelist = load_active(conn)
    dn = canonical_name(ours.leaf.subject)
    subject = ours.leaf.subject.rfc4514_string()
    for domain in domains:
        label = f"whitelist DN {domain}"
        if whitelist.dn_listed(domain, dn):
            findings.append(ok(label, subject))
        else:
            listed = sorted(whitelist.dns_for(domain))
            seen = f"the list names {'; '.join(listed)}" if listed else "the list lacks it"
            findings.append(fail(label, f"{seen}: ask the agency (ANS) to list {subject} for "
                                 f"{domain}, then import the new list (peers refuse our mail "
                                 "until then)"))
    return findings


def _last_check(conn: Connection, url: str) -> float | None:
    if not url:
        return None
    from sqlalchemy import select

    from mss import db

    s = db.whitelist_sources
    row = conn.execute(select(s.c.checked_at, s.c.last_error).where(s.c.url == url)).first()
    if row is None or row.checked_at is None or row.last_error:
        return None
    return float(row.checked_at)


# --------------------------------------------------------------------------- files

def check_modes(config: Config) -> list[Finding]:
    """Files 0600, the data directory 0700 (docs/keys.md): nobody else reads a key."""
    findings: list[Finding] = []
    data_dir = config.server.data_dir
    try:
        mode = stat.S_IMODE(data_dir.stat().st_mode)
    except OSError as exc:
        return [fail("data dir", f"{data_dir}: {exc.strerror or exc}")]
    findings.append(fail("data dir", f"{data_dir} is mode {mode:04o}: chmod 700 {data_dir}")
                    if mode & 0o077 else ok("data dir", f"{mode:04o}"))
    for label, path, required in _key_files(config):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            if required:
                findings.append(fail(f"key file {label}", f"{path} missing"))
            continue
        except OSError as exc:
            findings.append(fail(f"key file {label}", f"{path}: {exc.strerror or exc}"))
            continue
        findings.append(fail(f"key file {label}", f"{path} is mode {mode:04o}: chmod 600 {path}")
                        if mode & 0o077 else ok(f"key file {label}", f"{mode:04o}"))
    return findings


def _key_files(config: Config) -> Iterator[tuple[str, Path, bool]]:
    """(config key, path, must exist) of every secret the node reads."""
    yield "tls.key_file", config.tls.key_file, True
    if config.keys.provider == "file":
        yield "keys.master_key_file", config.keys.master_key_file, True
    if config.keys.pin_file:
        yield "keys.pin_file", config.keys.pin_file, True
    yield "audit.signing_key_file", config.audit.signing_key_file, False  # made on first use
    yield "audit.pseudonym_key_file", config.audit.pseudonym_key_file, False
    for i, dest in enumerate(config.audit.destinations):
        if dest.key_file and dest.key_file != config.tls.key_file:
            yield f"audit.destinations[{i}].key_file", dest.key_file, True
    directory = config.directory
    if directory is not None and directory.password_file:
        yield "directory.password_file", directory.password_file, True
    if directory is not None and directory.publish and directory.publish.password_file:
        yield "directory.publish.password_file", directory.publish.password_file, True
    for i, issuer in enumerate(config.auth.oidc):
        if issuer.client_secret_file:
            yield f"auth.oidc[{i}].client_secret_file", issuer.client_secret_file, True
    if config.portal.client_secret_file:
        yield "portal.client_secret_file", config.portal.client_secret_file, True


# --------------------------------------------------------------------------- database

def check_schema(conn: Connection) -> Finding:
    from mss.schema import HEAD, current

    revision = current(conn)
    if revision == HEAD:
        return ok("schema", HEAD)
    return fail("schema", f"database at {revision or 'no revision'}, this mss reads {HEAD}: "
                "mss db upgrade")


# --------------------------------------------------------------------------- network

def _connect_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def check_audit(config: Config, timeout: float) -> list[Finding]:
    """RFC 5425 §5.2: each TLS receiver reached and verified as the shipper does."""
    findings = []
    for i, dest in enumerate(config.audit.destinations):
        label = f"audit destination {dest.name}"
        where = f"{dest.host}:{dest.port}"
        key = f"audit.destinations[{i}]"
        if dest.transport == "udp":
            findings.append(warn(label, f"udp to {where}: no TLS, records can be lost "
                                 "(RFC 5426); set transport = \"tls\""))
            continue
        name = dest.server_name or dest.host
        try:
            ctx = ssl.create_default_context(cafile=str(dest.ca_file) if dest.ca_file else None)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if dest.cert_file and dest.key_file:
                ctx.load_cert_chain(str(dest.cert_file), str(dest.key_file))
            with socket.create_connection((dest.host, dest.port), timeout=timeout) as sock, \
                    ctx.wrap_socket(sock, server_hostname=name):
                pass
        except ssl.SSLCertVerificationError as exc:
            findings.append(fail(label, f"{where}: certificate not verified for {name} "
                                 f"({exc.verify_message}): set {key}.ca_file / server_name"))
        except (OSError, ssl.SSLError) as exc:
            findings.append(fail(label, f"{where} unreachable ({_why(exc)}): start the "
                                 f"receiver or fix {key}.host / port"))
        else:
            findings.append(ok(label, f"{where}, verified as {name}"))
    return findings


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def check_directory(config: Config, timeout: float) -> list[Finding]:
    """The LDAP servers reached and bound to over verified TLS (RFC 4513 §3.1.3)."""
    directory = config.directory
    if directory is None:
        return []
    from ldap3.core.exceptions import LDAPException

    from directory.sync import ldap_connection
    from mss.config import read_secret

    targets = [("directory", url, directory.tls, directory.ca_file, directory.bind_dn,
                directory.password) for url in directory.urls]
    if directory.publish is not None:
        p = directory.publish

        def secret() -> str | None:
            return read_secret("directory.publish", p.password_env, p.password_file)

        targets.append(("directory publish", p.url, p.tls, p.ca_file, p.bind_dn, secret))
    findings = []
    for label, url, tls, ca_file, bind_dn, password in targets:
        secure = url.startswith("ldaps://") or tls in ("ldaps", "starttls")
        try:
            bounded = max(1.0, min(timeout, directory.timeout))  # ldap3 takes whole seconds
            conn = ldap_connection(url, tls, ca_file, bounded, bind_dn, password(),
                                   read_only=True)
            conn.unbind()
        except (LDAPException, OSError) as exc:
            findings.append(fail(f"{label} {url}", f"unreachable or refused "
                                 f"({type(exc).__name__}): check the URL, ca_file, bind_dn"))
            continue
        findings.append(ok(f"{label} {url}", "verified TLS, bound") if secure else
                        warn(f"{label} {url}", "not over TLS: use ldaps:// or "
                             "tls = \"starttls\""))
    return findings


def check_issuers(config: Config, timeout: float) -> list[Finding]:
    """Each token issuer's discovery document over verified TLS (OIDC Discovery §4)."""
    from mss.identity.fetch import FetchError, tls_context
    from mss.identity.issuer import IssuerMetadata

    findings = []
    for issuer in config.auth.oidc:
        label = f"issuer {issuer.name}"
        url = issuer.discovery_url or \
            issuer.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            request = urllib.request.Request(url, headers={"Accept": "application/json"})
            with urllib.request.urlopen(request, timeout=min(timeout, issuer.timeout),  # noqa: S310
                                        context=tls_context(issuer.ca_file)) as response:
                document = json.loads(response.read(1024 * 1024))
            IssuerMetadata.parse(document, issuer.issuer)
        except (OSError, ValueError, FetchError) as exc:
            findings.append(fail(label, f"{url}: {_why(exc)}: check the issuer URL, ca_file"))
        else:
            findings.append(ok(label, url))
    if config.portal.enabled and config.auth.issuer(config.portal.issuer) is None:
        findings.append(fail("portal issuer", f"portal.issuer {config.portal.issuer!r} names "
                             "no [[auth.oidc]] issuer"))
    return findings


def served(config: Config) -> list[ListenerConfig]:
    return [lc for name, lc in config.listeners.items()
            if lc.enabled and (name != "portal" or config.portal.enabled)]


def check_listeners(config: Config, ours: Ours | None, timeout: float) -> list[Finding]:
    """Each enabled listener answers where the config says, as ours: the protocol's greeting,
    then TLS (RFC 3207, RFC 2595 §3.1, RFC 8314) with our certificate."""
    findings = []
    leaf = ours.der()[0] if ours else None
    for lc in served(config):
        label = f"listener {lc.name}"
        where = f"{lc.host}:{lc.port}"
        try:
            presented = _probe(lc, timeout)
        except (OSError, ssl.SSLError, ProtocolMismatch) as exc:
            if isinstance(exc, ConnectionRefusedError):
                fix = f"nothing listens on {where}: start mss serve (or check listeners." \
                      f"{lc.name}.host / port)"
            elif isinstance(exc, ProtocolMismatch):
                fix = f"{where} answers, but not as the {lc.name} listener ({exc}): stop " \
                      f"that service or move listeners.{lc.name}.port"
            else:
                fix = f"{where}: {_why(exc)}: is mss serve running and healthy?"
            findings.append(fail(label, fix))
            continue
        if leaf is not None and presented != leaf:
            findings.append(fail(label, f"{where} presents another certificate than "
                                 f"{config.tls.cert_file}: restart mss serve (or stop the "
                                 "other service)"))
        else:
            findings.append(ok(label, where))
    return findings


class ProtocolMismatch(Exception):
    """The listener's port answers something else than our protocol."""


def _probe(lc: ListenerConfig, timeout: float) -> bytes | None:
    """Greet, start TLS, return the certificate the listener presents (DER)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False  # compared with our certificate byte for byte instead
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((_connect_host(lc.host), lc.port), timeout=timeout) as raw:
        sock: socket.socket = raw
        if lc.name in IMPLICIT_TLS:
            sock = ctx.wrap_socket(raw)
        reader = sock.makefile("rb")
        if lc.name in SMTP_LISTENERS:
            _expect(reader.readline(1024), b"220", "no SMTP greeting")
            if lc.name not in IMPLICIT_TLS:
                sock.sendall(b"EHLO doctor.invalid\r\n")
                while (line := reader.readline(1024)).startswith(b"250-"):
                    pass
                _expect(line, b"250 ", "no EHLO answer")
                sock.sendall(b"STARTTLS\r\n")
                _expect(reader.readline(1024), b"220", "STARTTLS refused")
        elif lc.name in IMAP_LISTENERS:
            _expect(reader.readline(1024), b"* OK", "no IMAP greeting")
            if lc.name not in IMPLICIT_TLS:
                sock.sendall(b"d1 STARTTLS\r\n")
                _expect(reader.readline(1024), b"d1 OK", "STARTTLS refused")
        if lc.name not in IMPLICIT_TLS:
            sock = ctx.wrap_socket(raw)
        try:
            return sock.getpeercert(binary_form=True)  # type: ignore[attr-defined,no-any-return]
        finally:
            sock.close()


def _expect(line: bytes, prefix: bytes, what: str) -> None:
    if not line.startswith(prefix):
        raise ProtocolMismatch(f"{what} ({line[:40]!r})")


# --------------------------------------------------------------------------- all

def node_checks(config: Config, engine: Engine, timeout: float) -> list[Finding]:
    """Every node check, in the order an auditor reads them."""
    import time

    from sqlalchemy.exc import SQLAlchemyError

    from mss.mailstore.domains import list_domains

    now = _now()
    ours, first = load_ours(config)
    findings = [first]
    anchors, anchor_row = check_anchors(config, now)
    crl_rows, crl_lookup = check_crls(config, now)
    if ours is not None:
        revocation = bool(config.pki.crl_files or config.pki.crl_urls)
        findings += [check_chain(config, ours, anchors, crl_lookup, revocation, now),
                     check_expiry(ours, now), check_usage(ours, "server"),
                     check_usage(ours, "client"), check_key_pair(config, ours)]
    findings += [anchor_row, *crl_rows]
    try:
        with engine.connect() as conn:
            findings.append(schema := check_schema(conn))
            if schema.status == "ok":
                domains = list_domains(conn)
                if not domains:
                    findings.append(warn("hosted domains", "none: mss domain add DOMAIN"))
                findings += check_whitelist(config, conn, ours, domains, time.time())
    except SQLAlchemyError as exc:
        findings.append(fail("database", f"{type(exc).__name__}: check database.url, "
                             "is the server up?"))
    findings += check_modes(config)
    findings += check_audit(config, timeout)
    findings += check_directory(config, timeout)
    findings += check_issuers(config, timeout)
    findings += check_listeners(config, ours, timeout)
    return findings


def dns_findings(config: Config, domains: Sequence[str], nameserver: str | None,
                 timeout: float) -> list[Finding]:
    """The DNS checks of docs/dns.md for each domain: missing, wrong, error are fails."""
    from mss.dns_cli import diagnose, make_resolver
    from mss.dns_records import expected, portal_of

    resolver = make_resolver(nameserver, timeout)
    findings = []
    for domain in domains:
        for c in diagnose(resolver, expected(config, domain, portal_of(config))):
            findings.append(Finding(c.check, "ok" if c.status == "ok" else "fail",
                                    "\n".join(c.fix) if c.status != "ok" else ""))
    return findings


def hosted_domains(engine: Engine, asked: Sequence[str], every: bool) -> list[str]:
    """The domains whose DNS to check: *asked* normalised (each hosted, else CliError), or
    every hosted domain with *every*."""
    from sqlalchemy.exc import SQLAlchemyError

    from mss.addresses import normalize_domain
    from mss.cli_support import fail as cli_fail
    from mss.mailstore.domains import is_hosted_domain, list_domains

    names = []
    for domain in asked:
        try:
            names.append(normalize_domain(domain))
        except ValueError as exc:
            cli_fail(f"invalid domain {domain!r}: {exc}")
    if not names and not every:
        return names
    try:
        with engine.connect() as conn:
            for name in names:
                if not is_hosted_domain(conn, name):
                    cli_fail(f"domain {name} is not hosted here (mss domain add {name})")
            if every:
                names += [d for d in list_domains(conn) if d not in names]
    except SQLAlchemyError:  # the "database" row says it; the DNS needs no database
        pass
    return names


def run(config_path: Path, domains: Sequence[str], *, every_domain: bool,
        nameserver: str | None, timeout: float, json_out: bool) -> int:
    """``mss doctor``: print the findings, return the exit status (0 no fail, 1 a fail)."""
    from mss.config import load_config
    from mss.db import make_engine
    from mss.dns_cli import make_resolver

    config = load_config(config_path)
    make_resolver(nameserver, timeout)  # bad --nameserver: exit 2 before any check
    engine = make_engine(config.database_url, writer=False)
    try:
        names = hosted_domains(engine, domains, every_domain)
        findings = node_checks(config, engine, timeout)
        findings += dns_findings(config, names, nameserver, timeout)
    finally:
        engine.dispose()
    show(findings, json_out=json_out)
    return 1 if any(f.status == "fail" for f in findings) else 0


COLUMNS = (Column("check", min_width=12), Column("status"), Column("fix", min_width=20))


def show(findings: Sequence[Finding], *, json_out: bool) -> None:
    """The table (check, status, fix; for an ok check, what was seen) fitting the terminal,
    or with --json a list of {check, status, fix} (mss/cli_output.py)."""
    failed = sum(f.status == "fail" for f in findings)
    warned = sum(f.status == "warn" for f in findings)
    summary = f"{len(findings)} checks: " + (f"{failed} fail, {warned} warn"
                                             if failed or warned else "all ok")
    emit([f.row() for f in findings], COLUMNS, json_out=json_out, caption=summary)
