"""What the node reaches and serves: the audit receivers, the directory, the token issuers
over verified TLS, and its own listeners (each answering as ours)."""

from __future__ import annotations

import json
import socket
import ssl
import urllib.request

from mss.config import Config, ListenerConfig
from mss.doctor.findings import Finding, fail, ok, warn, why
from mss.doctor.pki import Ours

SMTP_LISTENERS = ("mx", "submission", "submissions", "relay", "submission-cert")
IMAP_LISTENERS = ("imap", "imaps", "imap-cert")
IMPLICIT_TLS = ("submissions", "imaps", "portal")  # RFC 8314 §3.3; the portal is HTTPS


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
            findings.append(fail(label, f"{where} unreachable ({why(exc)}): start the "
                                 f"receiver or fix {key}.host / port"))
        else:
            findings.append(ok(label, f"{where}, verified as {name}"))
    return findings


def check_directory(config: Config, timeout: float) -> list[Finding]:
    """The LDAP servers reached and bound to over verified TLS (RFC 4513 §3.1.3)."""
    directory = config.directory
    if directory is None:
        return []
    from ldap3.core.exceptions import LDAPException

    from directory.ldap_source import ldap_connection
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
            findings.append(fail(label, f"{url}: {why(exc)}: check the issuer URL, ca_file"))
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
                fix = f"{where}: {why(exc)}: is mss serve running and healthy?"
            findings.append(fail(label, fix))
            continue
        if leaf is not None and presented is not None and presented != leaf:
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
        if lc.name == "admin":  # plain HTTP on loopback (docs/metrics.md): no certificate
            raw.sendall(b"GET /healthz HTTP/1.0\r\nHost: doctor.invalid\r\n\r\n")
            _expect(raw.makefile("rb").readline(1024), b"HTTP/1.", "no HTTP answer")
            return None
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
