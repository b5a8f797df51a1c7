"""``mss doctor [DOMAIN ...]``: the node checked as an MSSanté auditor would (docs/doctor.md):
the checks (:mod:`.pki`, :mod:`.local`, :mod:`.network`) in order, the DNS ones, the table.

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

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mss.cli_output import Column, emit
from mss.config import Config
from mss.doctor.findings import Finding, fail, now_utc, warn
from mss.doctor.local import check_modes, check_schema, check_whitelist
from mss.doctor.network import check_audit, check_directory, check_issuers, check_listeners
from mss.doctor.pki import (
    check_anchors,
    check_chain,
    check_crls,
    check_expiry,
    check_key_pair,
    check_usage,
    load_ours,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine


def node_checks(config: Config, engine: Engine, timeout: float) -> list[Finding]:
    """Every node check, in the order an auditor reads them."""
    import time

    from sqlalchemy.exc import SQLAlchemyError

    from mss.mailstore.domains import list_domains

    now = now_utc()
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
