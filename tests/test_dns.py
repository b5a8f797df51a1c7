"""``mss dns records`` and ``mss doctor`` (issue 15): the zone lines computed from the
listeners, then checked by the real CLI against a real DNS server on loopback
(tests/dnsserver.py) holding the right records, none, or wrong ones."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator

import pytest

from mss.config import load_config
from mss.dns_records import Portal, expected, portal_of, zone_text
from tests.dnsserver import DnsServer
from tests.node import DOMAIN, Node, free_port, make_node

DNS_HOST = "127.0.23.53"  # this branch's loopback block (CONTRACTS.md)
MX = "mx.demo.mssante.fr"
IMAP = "imap.demo.mssante.fr"
IMAP_CERT = "imap-cert.demo.mssante.fr"


def _set(text: str, listener: str, lines: str) -> str:
    text, count = re.subn(rf"(\[listeners\.{listener}\]\nhost = .*\nport = \d+\n)",
                          rf"\g<1>{lines}", text)
    assert count == 1, listener
    return text


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Node:
    n = make_node(tmp_path_factory.mktemp("dns"))
    text = n.config.read_text()
    assert f'hostname = "{MX}"' in text  # mss init's smtp.hostname
    text = _set(text, "imap", f'public_name = "{IMAP}"\n')
    # a client-certificate front (EX_LPS_0300 priority 20) and a disabled service
    text = _set(text, "imaps", f'public_name = "{IMAP_CERT}"\nauth = ["external"]\n')
    text = _set(text, "submissions", "enabled = false\n")
    text = _set(text, "imap-cert", f'public_name = "{IMAP_CERT}"\n')
    n.config.write_text(text)
    return n


def zone(node: Node) -> dict[tuple[str, str], list[str]]:
    """What the right zone holds, as tests/dnsserver.py takes it."""
    p = node.ports
    return {
        (DOMAIN, "MX"): [f"10 {MX}."],
        # EX_LPS_0300: the PSC front (10) and the client-certificate front (20)
        (f"_submission._tcp.{DOMAIN}", "SRV"): [f"10 100 {p['submission']} {MX}.",
                                                f"20 100 {p['submission-cert']} {MX}."],
        (f"_submissions._tcp.{DOMAIN}", "SRV"): ["0 0 0 ."],
        (f"_imap._tcp.{DOMAIN}", "SRV"): [f"10 100 {p['imap']} {IMAP}.",
                                          f"20 100 {p['imap-cert']} {IMAP_CERT}."],
        (f"_imaps._tcp.{DOMAIN}", "SRV"): [f"20 100 {p['imaps']} {IMAP_CERT}."],
        (MX, "A"): ["192.0.2.25"],
        (IMAP, "A"): ["192.0.2.143"],
        (IMAP_CERT, "AAAA"): ["2001:db8::993"],
    }


@pytest.fixture
def dns_server(node: Node) -> Iterator[DnsServer]:
    server = DnsServer(DNS_HOST).start()
    for (name, rtype), values in zone(node).items():
        server.set(name, rtype, values)
    yield server
    server.stop()


def test_records_are_the_zone_lines(node: Node) -> None:
    out = node.cli("dns", "records", DOMAIN).stdout
    lines = [line for line in out.splitlines() if not line.startswith(";")]
    want = [f"{name}. 3600 IN {rtype} {value}" for (name, rtype), values in zone(node).items()
            if rtype in ("MX", "SRV") for value in values]
    assert lines == want
    assert "; RFC 6186/8314, EX_LPS_0300: listeners.imaps" in out
    assert "; RFC 6186/8314, EX_LPS_0300: listeners.imap, listeners.imap-cert" in out
    assert "; RFC 6186/8314, EX_LPS_0300: not offered" in out
    assert out.splitlines()[-1] == (f"; and an A/AAAA record for each target: {MX}, {IMAP}, "
                                    f"{IMAP_CERT}")
    sets = node.cli_json("dns", "records", DOMAIN)  # the same records, one object per set
    assert [f"{s['name']} 3600 IN {s['type']} {v}" for s in sets if s["type"] in ("MX", "SRV")
            for v in s["values"]] == want
    # the same domain spelt otherwise; a domain not hosted here; no domain at all
    assert node.cli("dns", "records", DOMAIN.upper() + ".").stdout == out
    for bad, error in (("other.example", "mss: error: domain other.example is not hosted "
                        "here (mss domain add other.example)"),
                       ("bad domain!", "mss: error: invalid domain 'bad domain!': ")):
        proc = node.cli("dns", "records", bad, check=False)
        assert proc.returncode == 2 and proc.stderr.startswith(error), proc


def test_autoconfig_names_point_at_the_portal(node: Node) -> None:
    config = load_config(node.config)
    portal = Portal("portal.demo.mssante.fr.", 443)
    sets = {(s.name, s.type): s.values for s in expected(config, DOMAIN, portal)}
    assert sets[(f"autoconfig.{DOMAIN}.", "CNAME")] == ("portal.demo.mssante.fr.",)
    assert sets[(f"autodiscover.{DOMAIN}.", "CNAME")] == ("portal.demo.mssante.fr.",)
    assert sets[(f"_autodiscover._tcp.{DOMAIN}.", "SRV")] == ("0 0 443 portal.demo.mssante.fr.",)
    assert portal_of(config) is None  # mss init: the portal is off
    assert "the portal is not served" in zone_text(config, DOMAIN)
    if hasattr(config, "portal"):  # [portal] (proxy/portal, issue 15): on, at its public URL
        section = dataclasses.replace(config.portal, enabled=True, issuer="psc",
                                      public_url="https://Portal.demo.mssante.fr:8443")
        served = dataclasses.replace(config, portal=section)
        assert portal_of(served) == Portal("portal.demo.mssante.fr.", 8443)
        assert f"autoconfig.{DOMAIN}. 3600 IN CNAME portal.demo.mssante.fr." in \
            zone_text(served, DOMAIN).splitlines()


def doctor(node: Node, *args: str) -> tuple[int, list[list[str]]]:
    """``mss doctor DOMAIN --json``: its DNS rows as [type, name, status, fix] (the node
    checks that run too are tests/test_doctor.py's); the exit status says whether any row,
    node checks included, failed."""
    proc = node.cli("doctor", DOMAIN, "--json", *args, check=False)
    assert proc.stderr == "", proc.stderr
    found = json.loads(proc.stdout)
    assert proc.returncode == (1 if any(r["status"] == "fail" for r in found) else 0)
    rows = [[*r["check"].split(None, 1), r["status"], r["fix"]] for r in found
            if r["check"].split()[0] in ("MX", "SRV", "CNAME", "A/AAAA")]
    return proc.returncode, rows


def status(rows: list[list[str]]) -> dict[str, str]:
    """check -> status of the DNS rows."""
    return {f"{row[0]} {row[1]}": row[2] for row in rows}


def test_doctor_all_right(node: Node, dns_server: DnsServer) -> None:
    code, rows = doctor(node, "--nameserver", f"{DNS_HOST}:{dns_server.port}")
    assert set(status(rows).values()) == {"ok"} and len(status(rows)) == 8, rows
    every = node.cli("doctor", "--dns", "--json", "--nameserver", f"{DNS_HOST}:{dns_server.port}",
                     check=False)  # every hosted domain: this one
    assert {r["check"]: r["status"] for r in json.loads(every.stdout)
            if r["check"].split()[0] in ("MX", "SRV", "A/AAAA")} == status(rows)


def test_doctor_missing_and_wrong(node: Node, dns_server: DnsServer) -> None:
    p = node.ports
    dns_server.set(f"_imap._tcp.{DOMAIN}", "SRV", [])  # missing
    dns_server.set(f"_imaps._tcp.{DOMAIN}", "SRV", [f"10 100 {p['imaps']} {IMAP_CERT}."])
    dns_server.set(DOMAIN, "MX", [f"10 {MX}.", "20 mx.elsewhere.example."])
    dns_server.set(f"_submissions._tcp.{DOMAIN}", "SRV", [])  # absent: also "not offered"
    dns_server.set(IMAP, "A", [])
    code, rows = doctor(node, "--nameserver", f"{DNS_HOST}:{dns_server.port}")
    assert code == 1
    checks = status(rows)
    assert checks == {  # missing, wrong: the fix says which
        f"MX {DOMAIN}.": "fail", f"SRV _submission._tcp.{DOMAIN}.": "ok",
        f"SRV _submissions._tcp.{DOMAIN}.": "ok", f"SRV _imap._tcp.{DOMAIN}.": "fail",
        f"SRV _imaps._tcp.{DOMAIN}.": "fail", f"A/AAAA {MX}.": "ok",
        f"A/AAAA {IMAP}.": "fail", f"A/AAAA {IMAP_CERT}.": "ok"}, rows
    text = "\n".join(" ".join(r) for r in rows)
    # the fix: the line to publish, what to remove
    assert f"_imap._tcp.{DOMAIN}. 3600 IN SRV 10 100 {p['imap']} {IMAP}." in text
    assert f"_imaps._tcp.{DOMAIN}. 3600 IN SRV 20 100 {p['imaps']} {IMAP_CERT}." in text
    assert f"remove: _imaps._tcp.{DOMAIN}. SRV 10 100 {p['imaps']} {IMAP_CERT}." in text
    assert f"remove: {DOMAIN}. MX 20 mx.elsewhere.example." in text
    fixes = {f"{r[0]} {r[1]}": r[3] for r in rows}
    assert "remove:" not in fixes[f"SRV _imap._tcp.{DOMAIN}."]  # missing: publish only
    assert fixes[f"A/AAAA {IMAP}."] == f"{IMAP}. 3600 IN A <the address clients reach>"


def test_doctor_without_an_answer_and_bad_input(node: Node) -> None:
    silent = DnsServer(DNS_HOST).start()  # a server that knows nothing: NXDOMAIN everywhere
    try:
        code, rows = doctor(node, "--nameserver", f"{DNS_HOST}:{silent.port}")
    finally:
        silent.stop()
    checks = status(rows)
    assert code == 1 and checks.pop(f"SRV _submissions._tcp.{DOMAIN}.") == "ok"  # not offered
    assert set(checks.values()) == {"fail"}
    assert all("remove:" not in r[3] for r in rows)  # all missing
    port = free_port(DNS_HOST)  # nobody answers there: each lookup times out, bounded
    started = time.monotonic()
    code, rows = doctor(node, "--nameserver", f"{DNS_HOST}:{port}", "--timeout", "0.3")
    assert code == 1 and set(status(rows).values()) == {"fail"}
    assert all(r[3].startswith("lookup failed") for r in rows)
    assert time.monotonic() - started < 30
    for bad, error in (("dns.example", "an address, not a name"),
                       (f"{DNS_HOST}:0", "port must be between 1 and 65535"),
                       ("[::1", "expected IP[:PORT]")):
        proc = node.cli("doctor", DOMAIN, "--nameserver", bad, check=False)
        assert proc.returncode == 2 and error in proc.stderr, proc
        assert len(proc.stderr.splitlines()) == 1
