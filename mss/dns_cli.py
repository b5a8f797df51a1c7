"""``mss dns records DOMAIN`` (the zone lines to publish) and the DNS checks of ``mss doctor
DOMAIN`` (are they published? :mod:`mss.doctor` prints them), from the records
:mod:`mss.dns_records` computes (docs/dns.md).

The doctor asks the system resolver (/etc/resolv.conf) or ``--nameserver IP[:PORT]`` with
dnspython, one query per name and type; each check is ``ok``, ``missing`` (NXDOMAIN or no
record of that type), ``wrong`` (other values: what to publish and what to remove) or
``error`` (no answer: timeout, SERVFAIL); the doctor shows the last three as ``fail``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.exception
import dns.resolver
import typer

from mss.cli_output import JSON_OPTION, print_json
from mss.cli_support import fail, node
from mss.config import Config
from mss.dns_records import RRset, expected, portal_of, targets, zone_text

dns_app = typer.Typer(no_args_is_help=True, help="DNS records of the hosted domains.")
NOT_OFFERED = "0 0 0 ."  # RFC 6186 §3.4: the service is not available here


@dataclass(frozen=True)
class Check:
    check: str  # "SRV _imap._tcp.example.org."
    status: str  # ok | missing | wrong | error
    fix: tuple[str, ...] = ()  # zone lines to publish, "remove: ..." lines


@dataclass(frozen=True)
class Lookup:
    status: str  # "found" | "missing" | "error"
    values: frozenset[str] = frozenset()  # presentation form, lower case
    error: str = ""


def lookup(resolver: dns.resolver.Resolver, name: str, rtype: str) -> Lookup:
    try:
        answer = resolver.resolve(name, rtype, search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return Lookup("missing")
    except dns.exception.DNSException as exc:  # timeout, SERVFAIL, no nameserver
        return Lookup("error", error=type(exc).__name__)
    if answer.rrset is None:
        return Lookup("missing")
    return Lookup("found", frozenset(rdata.to_text().lower() for rdata in answer.rrset))


def _error(label: str, found: Lookup) -> Check:
    return Check(label, "error", (f"lookup failed ({found.error}): check again",))


def check_rrset(resolver: dns.resolver.Resolver, rrset: RRset) -> Check:
    label = f"{rrset.type} {rrset.name}"
    found = lookup(resolver, rrset.name, rrset.type)
    if found.status == "error":
        return _error(label, found)
    want = frozenset(rrset.values)
    if rrset.type == "MX":  # the exchanges matter, their preferences are the operator's
        want = frozenset(v.split()[-1] for v in rrset.values)
        have = frozenset(v.split()[-1] for v in found.values)
    else:
        have = found.values
    if have == want:
        return Check(label, "ok")
    if rrset.values == (NOT_OFFERED,) and found.status == "missing":
        return Check(label, "ok")  # no record at all also says "not here" (RFC 6186 §3.4)
    if rrset.type == "CNAME" and found.status == "missing" \
            and same_addresses(resolver, rrset.name, rrset.values[0]):
        return Check(label, "ok")  # addresses of their own, the target's
    if found.status == "missing":
        return Check(label, "missing", tuple(rrset.lines()))
    extra = sorted(found.values - frozenset(rrset.values)) if rrset.type != "MX" else \
        sorted(v for v in found.values if v.split()[-1] not in want)
    return Check(label, "wrong", (*rrset.lines(),
                                  *(f"remove: {rrset.name} {rrset.type} {v}" for v in extra)))


def addresses(resolver: dns.resolver.Resolver, name: str) -> Lookup:
    values: set[str] = set()
    for rtype in ("A", "AAAA"):
        found = lookup(resolver, name, rtype)
        if found.status == "error":
            return found
        values |= found.values
    return Lookup("found" if values else "missing", frozenset(values))


def same_addresses(resolver: dns.resolver.Resolver, name: str, target: str) -> bool:
    mine, theirs = addresses(resolver, name), addresses(resolver, target)
    return mine.status == theirs.status == "found" and mine.values == theirs.values


def check_target(resolver: dns.resolver.Resolver, host: str) -> Check:
    label = f"A/AAAA {host}"
    found = addresses(resolver, host)
    if found.status == "error":
        return _error(label, found)
    if found.status == "missing":
        return Check(label, "missing", (f"{host} 3600 IN A <the address clients reach>",))
    return Check(label, "ok")


def diagnose(resolver: dns.resolver.Resolver, sets: list[RRset]) -> list[Check]:
    return [*(check_rrset(resolver, rrset) for rrset in sets),
            *(check_target(resolver, host) for host in targets(sets))]


def parse_nameserver(text: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` (port 53 by default)."""
    host, port = text.strip(), "53"
    if host.startswith("["):
        host, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            fail(f"--nameserver {text!r}: expected IP[:PORT]")
        port = rest[1:] or port
    elif host.count(":") == 1:
        host, port = host.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        fail(f"--nameserver {text!r}: expected IP[:PORT] (an address, not a name)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"--nameserver {text!r}: port must be between 1 and 65535")
    return host, int(port)


def make_resolver(nameserver: str | None, timeout: float) -> dns.resolver.Resolver:
    if nameserver is None:
        resolver = dns.resolver.Resolver()  # /etc/resolv.conf
    else:
        host, port = parse_nameserver(nameserver)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.lifetime = timeout
    resolver.timeout = timeout
    return resolver


def hosted(ctx: typer.Context, domain: str) -> tuple[Config, str]:
    """(the node's config, *domain* normalised), or one line when it is not hosted here."""
    from mss.addresses import normalize_domain
    from mss.mailstore.domains import is_hosted_domain

    try:
        name = normalize_domain(domain)
    except ValueError as exc:
        fail(f"invalid domain {domain!r}: {exc}")
    with node(ctx) as node_app, node_app.reader.connect() as conn:
        if not is_hosted_domain(conn, name):
            fail(f"domain {name} is not hosted here (mss domain add {name})")
        return node_app.config, name


@dns_app.command("records")
def records(ctx: typer.Context, domain: str, json_out: JSON_OPTION = False) -> None:
    """Print the zone lines DOMAIN publishes: MX, the SRV records of the client fronts
    (RFC 6186/8314, EX_LPS_0300), the autoconfig names when the portal is served (--json:
    a list of record sets: name, type, values, why)."""
    config, name = hosted(ctx, domain)
    if json_out:
        print_json([{"name": s.name, "type": s.type, "values": list(s.values), "why": s.why}
                    for s in expected(config, name, portal_of(config))])
        return
    print(zone_text(config, name), end="")

