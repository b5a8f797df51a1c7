"""Where to send mail for a domain: MX lookup with dnspython's async resolver.

RFC 5321 §5.1: MX records in preference order (random among equal preferences); no MX
record at all means the domain itself is the single host (implicit MX, its A record); a
domain that does not exist is a permanent failure. RFC 7505: a single "0 ." MX is a null
MX, the domain accepts no mail: permanent failure (556 5.1.10).

Answers are cached for their TTL (RFC 1035 §3.2.1; negative answers for their SOA minimum,
RFC 2308 §5): at a steady flow of mail to one operator, the MX and address lookups of each
message (three round trips to the resolver) would otherwise sit on every delivery's path.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from mss.config import DeliveryConfig
from proxy.outbound.result import DeliveryFailure

CACHE_SIZE = 4096  # names x types kept (LRU): far more than the trust space's MX hosts


@dataclass(frozen=True)
class Hop:
    host: str  # name to connect to (also the TLS server name)
    port: int
    verify_dn: bool  # check the peer DN against the whitelist (False: our own next hop)


def parse_next_hop(text: str) -> tuple[str, int]:
    """``host:port`` of a per-domain next hop; ValueError when malformed."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]").lower()
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 \
            or any(ch in host for ch in " /@"):
        raise ValueError(f"next hop {text!r}: expected HOST:PORT")
    return host, int(port)


def make_resolver(cfg: DeliveryConfig) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=not cfg.nameservers)
    if cfg.nameservers:
        resolver.nameservers = list(cfg.nameservers)
    resolver.port = cfg.dns_port
    resolver.lifetime = cfg.dns_timeout
    resolver.cache = dns.resolver.LRUCache(CACHE_SIZE)  # per answer TTL
    return resolver


async def mx_hosts(resolver: dns.asyncresolver.Resolver, domain: str, port: int,
                   rng: random.Random | None = None) -> list[Hop]:
    """The hosts to try for *domain*, best first; raises DeliveryFailure."""
    try:
        answer = await resolver.resolve(domain, "MX")
    except dns.resolver.NXDOMAIN:
        raise DeliveryFailure(f"domain {domain} does not exist (NXDOMAIN)",
                              permanent=True) from None
    except dns.resolver.NoAnswer:
        return [Hop(domain, port, True)]  # RFC 5321 §5.1 implicit MX
    except dns.exception.DNSException as exc:
        raise DeliveryFailure(f"MX lookup for {domain} failed: {type(exc).__name__}",
                              permanent=False) from None
    records = [(r.preference, r.exchange) for r in answer]
    if any(exchange == dns.name.root for _, exchange in records):
        # RFC 7505 §3: a null MX; §4.1: the sender treats it as a permanent failure
        raise DeliveryFailure(f"domain {domain} accepts no mail (null MX, RFC 7505)",
                              permanent=True, reply="556 5.1.10 null MX")
    pick = rng or random
    records.sort(key=lambda r: (r[0], pick.random()))
    return [Hop(exchange.to_text(omit_final_dot=True), port, True) for _, exchange in records]


async def addresses(resolver: dns.asyncresolver.Resolver, host: str) -> list[str]:
    """Addresses of *host*, IPv4 first then IPv6 (an IP literal is returned as is); []
    when none resolve (RFC 5321 §5.1: every address of a host is tried in turn)."""
    if host.replace(".", "").isdigit() or ":" in host:
        return [host]
    found: list[str] = []
    for rtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(host, rtype)
        except dns.exception.DNSException:
            continue
        found += [r.to_text() for r in answer]
    return found
