"""Client settings of the node's mail listeners, and the two autoconfiguration formats that
carry them: Thunderbird autoconfig (config-v1.1.xml) and Outlook autodiscover POX (the
2006/2006a schemas). Pure functions of the configuration: no I/O, no database."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from types import MappingProxyType

from mss.config import Config

# (listener, protocol, implicit TLS): what a mail client is told about, best first
MAIL_LISTENERS = (("imaps", "imap", True), ("imap", "imap", False),
                  ("submissions", "smtp", True), ("submission", "smtp", False),
                  # the client-certificate fronts of professional software (EX_LPS_0300)
                  ("imap-cert", "imap", False), ("submission-cert", "smtp", False))
# listeners.<n>.auth -> Thunderbird's <authentication> values (config-v1.1 documentation)
THUNDERBIRD_AUTH = MappingProxyType({
    "password": "password-cleartext", "app-password": "password-cleartext",
    "oauthbearer": "OAuth2", "xoauth2": "OAuth2", "external": "TLS-client-cert"})
PASSWORD_METHODS = frozenset({"password", "app-password"})
AUTODISCOVER_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
REQUEST_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
MAX_REQUEST = 8192  # octets of an autodiscover request body


@dataclass(frozen=True)
class ServerSetting:
    listener: str
    protocol: str  # "imap" | "smtp"
    host: str
    port: int
    implicit_tls: bool  # False: STARTTLS (RFC 8314 §3.3 prefers implicit TLS)
    auth: tuple[str, ...]  # listeners.<n>.auth

    @property
    def socket_type(self) -> str:
        return "SSL" if self.implicit_tls else "STARTTLS"

    @property
    def takes_password(self) -> bool:
        """A standard client (password or app password) can log in here."""
        return bool(PASSWORD_METHODS & set(self.auth))


def client_settings(config: Config) -> list[ServerSetting]:
    """The enabled IMAP and submission listeners, by the names clients reach them at."""
    out = []
    for name, protocol, implicit in MAIL_LISTENERS:
        lc = config.listeners.get(name)
        if lc is None or not lc.enabled:
            continue
        out.append(ServerSetting(name, protocol, lc.public_name or config.smtp.hostname,
                                 lc.port, implicit, lc.auth))
    return out


def _xml(root: ET.Element) -> bytes:
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = text
    return element


def thunderbird(settings: list[ServerSetting], domain: str) -> bytes:
    """config-v1.1.xml for *domain*: each server once per authentication it offers, the
    password ones first (Thunderbird tries them in order)."""
    root = ET.Element("clientConfig", version="1.1")
    provider = _sub(root, "emailProvider", None)
    provider.set("id", domain)
    _sub(provider, "domain", domain)
    _sub(provider, "displayName", f"MSSanté {domain}")
    _sub(provider, "displayShortName", domain)
    for kind in ("imap", "smtp"):
        for s in (s for s in settings if s.protocol == kind):
            methods = list(dict.fromkeys(THUNDERBIRD_AUTH[a] for a in s.auth))
            for method in methods:
                server = _sub(provider, "incomingServer" if kind == "imap" else "outgoingServer")
                server.set("type", kind)
                _sub(server, "hostname", s.host)
                _sub(server, "port", str(s.port))
                _sub(server, "socketType", s.socket_type)
                _sub(server, "authentication", method)
                _sub(server, "username", "%EMAILADDRESS%")
    return _xml(root)


class AutodiscoverError(ValueError):
    """A request body that is no autodiscover POX request."""


def autodiscover_address(body: bytes) -> str:
    """The EMailAddress of an Outlook POX request (bounded; no DTD, no entity)."""
    if len(body) > MAX_REQUEST:
        raise AutodiscoverError("request too large")
    if b"<!" in body:  # DOCTYPE/ENTITY: no DTD processing (entity expansion)
        raise AutodiscoverError("DTD not allowed")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise AutodiscoverError(f"not XML: {exc}") from None
    found = root.find(f"{{{REQUEST_SCHEMA}}}Request/{{{REQUEST_SCHEMA}}}EMailAddress")
    address = (found.text or "").strip() if found is not None else ""
    if not address:
        raise AutodiscoverError("no Request/EMailAddress")
    return address


def autodiscover(settings: list[ServerSetting], address: str) -> bytes:
    """The POX response: one IMAP and one SMTP protocol, the first of each that takes a
    password (Outlook logs in with a password: an app password)."""
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE)
    response = _sub(root, "Response")
    response.set("xmlns", OUTLOOK_SCHEMA)
    account = _sub(response, "Account")
    _sub(account, "AccountType", "email")
    _sub(account, "Action", "settings")
    for kind in ("imap", "smtp"):
        s = next((s for s in settings if s.protocol == kind and s.takes_password), None)
        if s is None:
            continue
        protocol = _sub(account, "Protocol")
        _sub(protocol, "Type", kind.upper())
        _sub(protocol, "Server", s.host)
        _sub(protocol, "Port", str(s.port))
        _sub(protocol, "DomainRequired", "off")
        _sub(protocol, "LoginName", address)
        _sub(protocol, "SPA", "off")
        _sub(protocol, "SSL", "on")
        _sub(protocol, "Encryption", "SSL" if s.implicit_tls else "TLS")
        _sub(protocol, "AuthRequired", "on")
    return _xml(root)


def autodiscover_error(code: str, message: str) -> bytes:
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE)
    response = _sub(root, "Response")
    error = _sub(response, "Error")
    _sub(error, "ErrorCode", code)
    _sub(error, "Message", message)
    return _xml(root)
