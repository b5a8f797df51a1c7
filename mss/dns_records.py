"""The DNS records a hosted domain publishes, computed from the configuration
(``mss dns records DOMAIN`` prints them, ``mss doctor DOMAIN`` checks them; docs/dns.md).

- MX: the domain's mail exchanger, the MX listener's public name (RFC 5321 §5.1).
- SRV of the client services (RFC 6186 §3.1, RFC 8314 §5.1): ``_submission._tcp`` and
  ``_imap._tcp`` for the STARTTLS listeners, ``_submissions._tcp`` and ``_imaps._tcp`` for
  the implicit TLS ones; a service no listener offers gets the "not available" record
  ``0 0 0 .`` (RFC 6186 §3.4, RFC 2782). The EX_LPS_0300 fronts of the "API LPS" are these
  names: a front offering tokens or passwords has priority 10, a client-certificate front
  (auth = ["external"] only) priority 20; weight 100.
- Autoconfiguration, when the portal is served: ``autoconfig.DOMAIN`` (Thunderbird) and
  ``autodiscover.DOMAIN`` (Outlook) CNAMEs to the portal's host, and Outlook's
  ``_autodiscover._tcp`` SRV (MS-OXDISCO §3.1.5.2).

Targets are the listeners' ``public_name`` ("" = ``smtp.hostname``); ports the listeners'
``port`` (what clients connect to: bind the standard ports, or forward them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mss.config import Config, ListenerConfig
from proxy.imap.listeners import IMAP_LISTENERS
from proxy.smtp.listeners import LISTENER_KINDS

TTL = 3600
PSC_PRIORITY = 10  # EX_LPS_0300: the front of Pro Santé Connect tokens (and passwords)
CERT_PRIORITY = 20  # EX_LPS_0300: the client-certificate front
WEIGHT = 100
CERT_ONLY = frozenset({"external"})


@dataclass(frozen=True)
class RRset:
    """The records of one name and type, as published (rdata in presentation form)."""

    name: str  # absolute, lower case, trailing dot
    type: str  # MX | SRV | CNAME
    values: tuple[str, ...]  # sorted
    why: str  # what it is for: the zone file's comment

    def lines(self) -> list[str]:
        return [f"{self.name} {TTL} IN {self.type} {value}" for value in self.values]


@dataclass(frozen=True)
class Front:
    """A client listener: which SRV service it is, where clients reach it."""

    listener: str
    service: str  # "_submission._tcp" ...
    target: str  # absolute host name
    port: int
    certificate_only: bool


def absolute(name: str) -> str:
    return name.strip().rstrip(".").lower() + "."


def host_of(config: Config, listener: ListenerConfig | None) -> str:
    return absolute(listener.public_name if listener and listener.public_name
                    else config.smtp.hostname)


def _service(name: str) -> str | None:
    """The SRV service of a listener name (RFC 6186 §3.1, RFC 8314 §5.1), None for the MX,
    the relay and any listener that is no mail client's."""
    if name in IMAP_LISTENERS:
        return "_imaps._tcp" if IMAP_LISTENERS[name] else "_imap._tcp"
    mode, implicit = LISTENER_KINDS.get(name, ("", False))
    if mode == "submission":
        return "_submissions._tcp" if implicit else "_submission._tcp"
    return None


def fronts(config: Config) -> list[Front]:
    """The enabled client listeners, in the configuration's order."""
    found = []
    for name, listener in config.listeners.items():
        service = _service(name)
        if service is None or not listener.enabled:
            continue
        found.append(Front(name, service, host_of(config, listener), listener.port,
                           frozenset(listener.auth) <= CERT_ONLY))
    return found


@dataclass(frozen=True)
class Portal:
    """Where browsers and autoconfiguring clients reach the portal."""

    host: str  # absolute
    port: int


def portal_of(config: Config) -> Portal | None:
    """The portal when it is served (portal.enabled and its listener enabled), else None."""
    section: Any = getattr(config, "portal", None)  # [portal] (proxy/portal, issue 15)
    listener = config.listeners.get("portal")
    if section is None or listener is None or not section.enabled or not listener.enabled:
        return None
    url = urlsplit(section.public_url) if section.public_url else None
    if url is not None and url.hostname:
        return Portal(absolute(url.hostname), url.port or 443)
    return Portal(host_of(config, listener), listener.port)


def expected(config: Config, domain: str, portal: Portal | None = None) -> list[RRset]:
    """The RRsets *domain* (normalised, hosted here) publishes for this configuration;
    the autoconfig names when *portal* (:func:`portal_of`) is given."""
    zone = absolute(domain)
    sets: list[RRset] = []
    mx = config.listeners.get("mx")
    if mx is not None and mx.enabled:
        sets.append(RRset(zone, "MX", (f"10 {host_of(config, mx)}",),
                          "mail from other operators (RFC 5321 §5.1)"))
    by_service: dict[str, list[Front]] = {}
    for front in fronts(config):
        by_service.setdefault(front.service, []).append(front)
    for service in ("_submission._tcp", "_submissions._tcp", "_imap._tcp", "_imaps._tcp"):
        offered = by_service.get(service, [])
        values = tuple(sorted(
            f"{CERT_PRIORITY if f.certificate_only else PSC_PRIORITY} {WEIGHT} {f.port} "
            f"{f.target}" for f in offered)) or ("0 0 0 .",)
        names = ", ".join(f"listeners.{f.listener}" for f in offered) or "not offered"
        sets.append(RRset(f"{service}.{zone}", "SRV", values,
                          f"RFC 6186/8314, EX_LPS_0300: {names}"))
    if portal is not None:
        sets.append(RRset(f"autoconfig.{zone}", "CNAME", (portal.host,),
                          "Thunderbird autoconfig (the portal)"))
        sets.append(RRset(f"autodiscover.{zone}", "CNAME", (portal.host,),
                          "Outlook autodiscover (the portal)"))
        sets.append(RRset(f"_autodiscover._tcp.{zone}", "SRV",
                          (f"0 0 {portal.port} {portal.host}",),
                          "Outlook autodiscover, MS-OXDISCO"))
    return sets


def targets(sets: list[RRset]) -> list[str]:
    """The host names the records point at (each needs an address), in order, once."""
    seen: dict[str, None] = {}
    for rrset in sets:
        for value in rrset.values:
            host = value.split()[-1]
            if host != ".":
                seen.setdefault(host, None)
    return list(seen)


def zone_text(config: Config, domain: str) -> str:
    """The zone file lines of *domain*, each group after a comment."""
    portal = portal_of(config)
    sets = expected(config, domain, portal)
    out: list[str] = []
    for rrset in sets:
        out.append(f"; {rrset.why}")
        out.extend(rrset.lines())
    if portal is None:
        out.append("; autoconfig/autodiscover: the portal is not served (portal.enabled)")
    hosts = ", ".join(h.rstrip(".") for h in targets(sets))
    out.append(f"; and an A/AAAA record for each target: {hosts}")
    return "\n".join(out) + "\n"

