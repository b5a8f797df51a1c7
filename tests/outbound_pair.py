"""Two independent mss operators on 127.0.0.2 and 127.0.0.3 with test-PKI certificates,
each other's domain on their whitelists, and a real DNS server serving their MX records.
Shared by tests/test_outbound.py, tests/test_relay.py, tests/test_postfix_interop.py
and bench/relay.py."""

from __future__ import annotations

import dataclasses
import smtplib
import ssl
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mss.config import DeliveryConfig, load_config
from proxy.outbound.backoff import retry_delay
from tests.dnsserver import DnsServer
from tests.node import MSS, PASSWORD, REPO, Node, free_port, make_node
from tests.whitelist_fixtures import make_whitelist_xml
from trustspace.testpki import DEFAULT_SERVERS

A_DOMAIN, B_DOMAIN = "a.mssante.test", "b.mssante.test"
WRONG_DN_DOMAIN = "wrong-dn.test"  # MX is B, but the whitelist lists another DN for it
RELAYED_DOMAIN = "clinique.test"  # hosted by A, relayed to the clinic's server (B here)
HOSPITAL_DOMAIN = "hopital.test"  # hosted by A, relayed to the hospital's server, 127.0.0.6
LOOP_DOMAIN = "loop.test"  # hosted by A with a next hop pointing back to A: a mail loop
NULL_MX_DOMAIN = "null-mx.test"  # RFC 7505 "0 ."
IMPLICIT_DOMAIN = "implicit.test"  # no MX, an A record: B's address (RFC 5321 §5.1)
PLAIN_DOMAIN = "plain.test"  # MX on 127.0.0.4: a server without STARTTLS
UNTRUSTED_DOMAIN = "untrusted.test"  # MX on 127.0.0.5: STARTTLS with a certificate of another CA
REVOKED_DOMAIN = "revoked-peer.test"  # MX on 127.0.0.7: the test PKI's revoked certificate
SUBJECTS = {s.name: s.subject for s in DEFAULT_SERVERS}
MARGIN = 30.0  # seconds of scheduling slack on 2 shared cores (CLI polls, TLS, commits)


@dataclass(frozen=True)
class Schedule:
    """Upper bounds on queue events, derived from a node's configured [delivery] retry
    schedule (proxy/outbound/backoff.py) plus MARGIN: never a guessed wall-clock bound."""

    cfg: DeliveryConfig

    @classmethod
    def of(cls, node: Node) -> Schedule:
        return cls(load_config(node.config).delivery)

    def attempt(self) -> float:
        """One attempt, failed or not: claimed within a poll, DNS (MX then A), connect."""
        return self.cfg.poll_interval + 2 * self.cfg.dns_timeout + self.cfg.connect_timeout

    def gap(self, attempts: int) -> float:
        """Longest wait after the *attempts*-th failure: its delay plus full jitter."""
        plain = dataclasses.replace(self.cfg, jitter=0.0)
        return retry_delay(attempts, plain) * (1 + self.cfg.jitter)

    def first_try(self) -> float:
        """A queued row tried and settled (delivered, deferred, bounced)."""
        return self.attempt() + MARGIN

    def next_try(self, attempts: int) -> float:
        """A row deferred *attempts* times tried again and settled."""
        return self.gap(attempts) + self.attempt() + MARGIN

    def expiry(self) -> float:
        """A row that fails every time: all max_attempts tried, expired, DSN written."""
        gaps = sum(self.gap(n) for n in range(1, self.cfg.max_attempts))
        return gaps + self.cfg.max_attempts * self.attempt() + MARGIN

    def reclaim(self, attempts: int) -> float:
        """A row leased by a killed worker: the lease runs out, then tried again."""
        return self.cfg.lease + self.next_try(attempts)


@dataclass
class Pair:
    a: Node
    b: Node
    dns: DnsServer
    pki: Path
    mx_port: int

    def nodes(self) -> tuple[Node, Node]:
        return self.a, self.b

    @property
    def schedule(self) -> Schedule:
        """Node A's retry schedule (both nodes are configured alike)."""
        return Schedule.of(self.a)

    def close(self, *, graceful: bool = False) -> None:
        """Stop both nodes (killed unless *graceful*) and the DNS server."""
        close_all(self.nodes(), self.dns, graceful=graceful)


def delivery_config(dns_port: int, mx_port: int, **overrides: object) -> str:
    values: dict[str, object] = {
        "nameservers": '["127.0.0.1"]', "dns_port": dns_port, "dns_timeout": 2.0,
        "port": mx_port, "connect_timeout": 2.0, "command_timeout": 30.0,
        "max_attempts": 8, "retry_base": 0.5, "retry_factor": 1.5, "retry_max": 5.0,
        "jitter": 0.1, "lease": 10.0, "poll_interval": 0.2, **overrides}
    return "\n[delivery]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())


def make_pair(base: Path, *, sending_limits: bool = True,
              hosts: tuple[str, str] = ("127.0.0.2", "127.0.0.3"), **delivery: object) -> Pair:
    """*hosts*: the addresses A and B listen on (a test module's own loopback range)."""
    pki = base / "pki"
    subprocess.run([*MSS, "pki", "init-test", "--dir", str(pki)], check=True, cwd=REPO,
                   capture_output=True, timeout=120)
    dns = DnsServer().start()
    # A and B listen on it, and the test peers on 127.0.0.4-7
    mx_port = free_port(hosts[0], hosts[1], *(f"127.0.0.{n}" for n in range(4, 8)))
    for name, host in (("a", hosts[0]), ("b", hosts[1])):
        dns.set(f"{name}.mssante.test", "MX", [f"10 mx.{name}.mssante.test."])
        dns.set(f"mx.{name}.mssante.test", "A", [host])
    dns.set(WRONG_DN_DOMAIN, "MX", ["10 mx.b.mssante.test."])
    dns.set(NULL_MX_DOMAIN, "MX", ["0 ."])
    dns.set(HOSPITAL_DOMAIN, "MX", ["10 mx.a.mssante.test."])
    dns.set(IMPLICIT_DOMAIN, "A", [hosts[1]])
    dns.set(PLAIN_DOMAIN, "MX", [f"10 mx.{PLAIN_DOMAIN}."])
    dns.set(f"mx.{PLAIN_DOMAIN}", "A", ["127.0.0.4"])
    dns.set(UNTRUSTED_DOMAIN, "MX", [f"10 mx.{UNTRUSTED_DOMAIN}."])
    dns.set(f"mx.{UNTRUSTED_DOMAIN}", "A", ["127.0.0.5"])
    dns.set(REVOKED_DOMAIN, "MX", [f"10 mx.{REVOKED_DOMAIN}."])
    dns.set(f"mx.{REVOKED_DOMAIN}", "A", ["127.0.0.7"])
    whitelist = base / "whitelist.xml"
    whitelist.write_bytes(make_whitelist_xml([
        (A_DOMAIN, SUBJECTS["operator-a"]), (B_DOMAIN, SUBJECTS["operator-b"]),
        (WRONG_DN_DOMAIN, SUBJECTS["revoked"]), (REVOKED_DOMAIN, SUBJECTS["revoked"]),
        (HOSPITAL_DOMAIN, SUBJECTS["operator-a"]),
        *((d, SUBJECTS["operator-b"]) for d in (NULL_MX_DOMAIN, IMPLICIT_DOMAIN, PLAIN_DOMAIN,
                                                 UNTRUSTED_DOMAIN))]))
    nodes = []
    for name, host, domain in (("a", hosts[0], A_DOMAIN), ("b", hosts[1], B_DOMAIN)):
        (base / name).mkdir()
        tls = {"cert_file": pki / f"operator-{name}.crt", "key_file": pki / f"operator-{name}.key",
               "ca_file": pki / "root.crt"}
        node = make_node(base / name, with_whitelist=False, domain=domain, host=host,
                         ports={"mx": mx_port}, tls=tls, sending_limits=sending_limits,
                         extra_config=delivery_config(dns.port, mx_port, **delivery)
                         # revocation checked both ways, as in production
                         + f'\n[pki]\ncrl_files = ["{pki / "organisations.crl.pem"}"]\n')
        node.cli("whitelist", "import", str(whitelist))
        nodes.append(node)
    a, b = nodes
    # A hosts clinique.test but relays it to the clinic's own server (played by B)
    a.cli("domain", "add", RELAYED_DOMAIN, "--relay-to", f"{hosts[1]}:{mx_port}")
    a.cli("domain", "add", HOSPITAL_DOMAIN, "--relay-to", f"127.0.0.6:{mx_port}")
    a.cli("domain", "add", LOOP_DOMAIN, "--relay-to", f"{hosts[0]}:{mx_port}")
    b.cli("domain", "add", RELAYED_DOMAIN)
    b.cli("mailbox", "add", f"dr.house@{RELAYED_DOMAIN}", "--type", "PER", "--rpps",
          "10000000009", "--no-password")
    return Pair(a, b, dns, pki, mx_port)


def submit(node: Node, pki: Path, rcpts: list[str], data: bytes,
           sender: str | None = None) -> None:
    ctx = ssl.create_default_context(cafile=str(pki / "root.crt"))
    ctx.check_hostname = False
    sender = sender or f"alice@{node.domain}"
    with smtplib.SMTP(node.host, node.ports["submission"], timeout=30) as client:
        client.starttls(context=ctx)
        client.login(sender, PASSWORD)
        assert client.sendmail(sender, rcpts, data) == {}


def message(sender: str, rcpt: str, tag: str, size: int = 0) -> bytes:
    body = ("x" * 70 + "\r\n") * (size // 72) if size else "Bonjour.\r\n"
    return (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: test {tag}\r\n"
            f"Message-ID: <{tag}@test.example>\r\nDate: Mon, 23 Nov 2026 05:00:00 +0000\r\n"
            f"\r\n{body}").encode()


def with_tag(messages: list[bytes], tag: str) -> list[bytes]:
    """The messages carrying *message*()'s Message-ID for *tag*."""
    return [m for m in messages if f"<{tag}@test.example>".encode() in m]


def close_all(nodes: Iterable[Node], dns: DnsServer, *, graceful: bool = False) -> None:
    """Teardown: every node still serving killed (SIGKILL; SIGTERM and a wait for an
    orderly exit when *graceful*), then the DNS server stopped, even if a node fails to."""
    try:
        for node in nodes:
            if node.process is None:
                continue
            if graceful:
                node.stop()
            else:
                node.process.kill()
                node.process.wait()
                node.process = None
    finally:
        dns.stop()
