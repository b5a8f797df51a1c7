"""``mss whitelist ...``: import, show and query the national whitelist."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mss.addresses import AddressError, normalize_address, normalize_domain
from mss.cli_output import JSON_OPTION, Column, emit, print_json, when
from mss.cli_support import actor, fail, node
from trustspace.registry import (
    WhitelistImportError,
    active_version_info,
    import_whitelist,
    list_versions,
    load_active,
    rollback_whitelist,
)

if TYPE_CHECKING:
    from mss.config import Config
    from trustspace.pki import IP

whitelist_app = typer.Typer(no_args_is_help=True, help="The national whitelist (liste blanche).")


@whitelist_app.command("import")
def whitelist_import(
    ctx: typer.Context,
    file: Path,
    force: Annotated[bool, typer.Option(
        "--force", help="Import even if more than 10% of the domains disappear.")] = False,
) -> None:
    """Import a whitelist file (national XML format) as the new version in force."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    with node(ctx) as app:
        try:
            result = import_whitelist(app.engine, data, str(file), force=force,
                                      max_shrink_ratio=app.config.whitelist.max_shrink_ratio,
                                      actor=actor())
        except WhitelistImportError as exc:
            fail(str(exc))
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if result.unchanged:
        print(f"whitelist unchanged (version {result.version_id}, sha256 {result.sha256[:16]})")
        return
    print(f"whitelist version {result.version_id} in force: {result.entries} entries, "
          f"{result.domains} domains (was {result.previous_domains}), generated "
          f"{result.generated_at or 'unknown'}, sha256 {result.sha256[:16]}")


@whitelist_app.command("fetch")
def whitelist_fetch(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Argument(
        help="The list's URL (default: whitelist.fetch.url).")] = None,
    sha256_url: Annotated[str | None, typer.Option(
        "--sha256-url", help="Its published SHA-256, verified before the import.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Fetch in full (no conditional GET) and pass the shrink guard.")
    ] = False,
) -> None:
    """Fetch the published whitelist and put it in force (conditional GET, checksum)."""
    from trustspace.fetch import WhitelistFetchError, refresh

    with node(ctx) as app:
        cfg = app.config.whitelist
        target = url or cfg.fetch.url
        if not target:
            fail("no URL given and whitelist.fetch.url is not set")
        if not target.startswith(("https://", "http://", "file://")):
            fail(f"{target}: expected an http(s):// or file:// URL")
        checksum = sha256_url if sha256_url is not None else (
            cfg.fetch.sha256_url if url is None else "")
        try:
            result = refresh(app.engine, target, sha256_url=checksum or "",
                             timeout=cfg.fetch.timeout, max_bytes=cfg.fetch.max_bytes,
                             ca_file=cfg.fetch.ca_file, max_shrink_ratio=cfg.max_shrink_ratio,
                             force=force, actor=actor())
        except WhitelistFetchError as exc:
            fail(str(exc))
    if result.status == "not_modified":
        print(f"whitelist not modified since the last fetch (version {result.version_id})")
    elif result.imported is not None and result.status == "unchanged":
        print(f"whitelist unchanged (version {result.version_id}, "
              f"sha256 {result.imported.sha256[:16]})")
    elif result.imported is not None:
        r = result.imported
        for warning in r.warnings:
            typer.echo(f"warning: {warning}", err=True)
        print(f"whitelist version {r.version_id} in force: {r.entries} entries, "
              f"{r.domains} domains (was {r.previous_domains}), generated "
              f"{r.generated_at or 'unknown'}, sha256 {r.sha256[:16]}")


@whitelist_app.command("show")
def whitelist_show(ctx: typer.Context, json_out: JSON_OPTION = False) -> None:
    """Show the version in force (--json: one object, null when none is)."""
    with node(ctx) as app, app.reader.connect() as conn:
        info = active_version_info(conn)
    if json_out:
        print_json(info)
        return
    if info is None:
        print("no whitelist imported: every remote domain is refused (default deny)")
        return
    imported = dt.datetime.fromtimestamp(info["imported_at"], dt.UTC).isoformat(
        timespec="seconds")
    print(f"version:   {info['id']}\ngenerated: {info['generated_at']}\nimported:  {imported}\n"
          f"source:    {info['source']}\nsha256:    {info['sha256']}\n"
          f"entries:   {info['entries']}\ndomains:   {info['domains']}")
    if info["warnings"]:
        for line in str(info["warnings"]).splitlines():
            print(f"warning:   {line}")


@whitelist_app.command("versions")
def whitelist_versions(ctx: typer.Context, json_out: JSON_OPTION = False) -> None:
    """Every whitelist version kept, newest first: imported (UTC), generated (by the
    publisher), source, entries, domains, in force (yes, or withdrawn by a rollback)."""
    with node(ctx) as app, app.reader.connect() as conn:
        rows = list_versions(conn)
    for row in rows:
        row["in_force"] = ("yes" if row["active"] else
                           "withdrawn" if row["withdrawn_at"] is not None else "no")
    emit(rows, (Column("id", justify="right"), Column("imported_at", header="imported",
                                                     format=when),
                Column("generated_at", header="generated"),
                Column("source", overflow="ellipsis", min_width=8),
                Column("entries", justify="right"), Column("domains", justify="right"),
                Column("in_force", header="active")),
         json_out=json_out, json_skip=("in_force",))


@whitelist_app.command("rollback")
def whitelist_rollback(
    ctx: typer.Context,
    version: Annotated[int, typer.Argument(help="The version to put back in force "
                                                "(mss whitelist versions).")],
    force: Annotated[bool, typer.Option(
        "--force", help="Roll back even if more than whitelist.max_shrink_ratio of the "
        "domains in force disappear.")] = False,
) -> None:
    """Put an older whitelist version back in force (audited); the one in force is marked
    withdrawn and is not imported again unless forced. Every node picks it up within
    whitelist.reload_interval, as after an import."""
    with node(ctx) as app:
        try:
            result = rollback_whitelist(app.engine, version, force=force,
                                        max_shrink_ratio=app.config.whitelist.max_shrink_ratio,
                                        actor=actor())
        except WhitelistImportError as exc:
            fail(str(exc))
    withdrawn = (f"; version {result.withdrawn_id} withdrawn"
                 if result.withdrawn_id is not None else "")
    print(f"whitelist version {result.version_id} in force again: {result.entries} entries, "
          f"{result.domains} domains (was {result.previous_domains}){withdrawn}")


@whitelist_app.command("check")
def whitelist_check(ctx: typer.Context, domain: str, json_out: JSON_OPTION = False) -> None:
    """Exit 0 when DOMAIN is whitelisted, 1 when not (2: not a domain name); prints the
    operator DNs (--json: one object: domain, whitelisted, version, dns; the same exit)."""
    try:
        normalize_domain(domain)
    except ValueError as exc:  # a usage error, not a "no" answer
        fail(f"invalid domain {domain!r}: {exc}")
    with node(ctx) as app, app.reader.connect() as conn:
        whitelist = load_active(conn)
    if json_out:
        listed = whitelist.is_whitelisted(domain)
        print_json({"domain": domain, "whitelisted": listed, "version": whitelist.version_id,
                    "dns": sorted(whitelist.dns_for(domain)) if listed else []})
        raise typer.Exit(0 if listed else 1)
    if whitelist.is_whitelisted(domain):
        print(f"{domain}: whitelisted (version {whitelist.version_id})")
        for dn in sorted(whitelist.dns_for(domain)):
            print(f"  {dn}")
        return
    print(f"{domain}: not whitelisted (version {whitelist.version_id})")
    raise typer.Exit(1)


pki_app = typer.Typer(no_args_is_help=True, help="PKI helpers.")


@pki_app.command("init-test")
def pki_init_test(directory: Annotated[Path, typer.Option(
        "--dir", help="Directory to write the test PKI into.")]) -> None:
    """A TEST PKI shaped like IGC-Santé: root, ORGANISATIONS CA, operator certs, CRL."""
    from trustspace.testpki import DEFAULT_SERVERS, init_test_pki

    if (directory / "root.key").exists():
        fail(f"{directory} already holds a test PKI (root.key)")
    paths = init_test_pki(directory)
    print(f"test PKI written to {directory}: root.crt, organisations.crt, chain.pem, "
          "organisations.crl.pem")
    for spec in DEFAULT_SERVERS:
        state = " (expired)" if spec.not_after_days < 0 else \
            " (revoked in the CRL)" if spec.revoked else ""
        print(f"  {paths[spec.name].name}: {spec.subject}{state}")


@pki_app.command("dev-cert")
def pki_dev_cert(
    ctx: typer.Context,
    hostname: Annotated[list[str] | None, typer.Option(
        "--hostname", help="A DNS name to add (repeatable).")] = None,
    ip: Annotated[list[str] | None, typer.Option(
        "--ip", help="An IP address to add (repeatable).")] = None,
    only: Annotated[bool, typer.Option(
        "--only", help="Drop the names of the current certificate: only the configured "
        "ones, localhost, 127.0.0.1 and those given.")] = False,
) -> None:
    """Reissue the development server certificate of [tls] (mss init's) for more names:
    the current certificate's, the configured ones (smtp.hostname, each listener's
    public_name and specific host), localhost, 127.0.0.1 and each --hostname/--ip. Same
    key and key usage; the old certificate kept as CERT.bak; listeners use the new one at
    their next start."""
    from audit.events import Event
    from audit.journal import AuditRecord, append
    from trustspace.pki import DevCertError, parse_names, reissue_dev_server_cert, san_names

    try:
        names, addresses = parse_names(hostname or [], ip or [])
    except ValueError as exc:
        fail(str(exc))
    with node(ctx) as app:
        tls = app.config.tls
        configured, listening = configured_names(app.config)
        try:
            current = current_names(tls.cert_file) if not only else ([], [])
            wanted = [*current[0], *configured, "localhost", *names]
            ips = [*current[1], ipaddress.ip_address("127.0.0.1"), *listening, *addresses]
            cert, backup = reissue_dev_server_cert(tls.ca_file, tls.cert_file, tls.key_file,
                                                   wanted, ips)
        except (DevCertError, ValueError) as exc:
            fail(str(exc))
        dns, sans_ips = san_names(cert)
        try:
            with app.engine.begin() as conn:
                append(conn, [AuditRecord(Event.ADMIN_PKI_DEV_CERT, actor=actor(), detail={
                    "hostnames": ",".join(dns), "ips": ",".join(map(str, sans_ips)),
                    "serial": f"{cert.serial_number:x}", "backup": str(backup)})])
        except BaseException:  # not audited: the previous certificate back in place
            shutil.copyfile(backup, tls.cert_file)
            raise
    print(f"development certificate {tls.cert_file} reissued for "
          f"{', '.join([*dns, *map(str, sans_ips)])}")
    print(f"  previous one kept as {backup}; key {tls.key_file} unchanged")
    print("  listeners use it at their next start (restart mss serve)")


def configured_names(config: Config) -> tuple[list[str], list[IP]]:
    """The DNS names and addresses the configuration announces: smtp.hostname, each
    enabled listener's public_name, and its host when it is a specific address or name."""
    names: list[str] = [config.smtp.hostname]
    addresses: list[IP] = []
    for listener in config.listeners.values():
        if not listener.enabled:
            continue
        if listener.public_name:
            names.append(listener.public_name)
        try:
            address = ipaddress.ip_address(listener.host)
        except ValueError:
            names.append(listener.host)  # a host name to bind: clients use it too
            continue
        if not address.is_unspecified:  # 0.0.0.0 and :: name no address of their own
            addresses.append(address)
    return [n.lower().rstrip(".") for n in names if n], addresses


def current_names(cert_file: Path) -> tuple[list[str], list[IP]]:
    """The names of the certificate in force (the first of *cert_file*)."""
    from cryptography import x509

    from trustspace.pki import san_names

    try:
        return san_names(x509.load_pem_x509_certificates(cert_file.read_bytes())[0])
    except (OSError, ValueError) as exc:
        fail(f"tls.cert_file {cert_file}: {exc}")


@pki_app.command("verify")
def pki_verify(
    ctx: typer.Context,
    file: Path,
    sender: Annotated[str | None, typer.Option(
        "--sender", help="Also check the DN against the whitelist for this MAIL FROM.")] = None,
) -> None:
    """Judge a client certificate (PEM, leaf first, then its chain) as the MX would, with
    this node's [pki] and whitelist: prints the check and reason; exit 0 accepted, 1 not."""
    import asyncio

    from cryptography.hazmat.primitives import serialization

    from trustspace import policy
    from trustspace.dn import canonical_name
    from trustspace.verifier import PeerVerifier, read_pem_certificates

    mail_from = None
    if sender is not None:  # as the MX reads MAIL FROM: "" or "<>" is the null sender
        try:
            mail_from = normalize_address(sender) if sender not in ("", "<>") else ""
        except AddressError as exc:
            fail(str(exc))
    try:
        certs = read_pem_certificates(file)
    except ValueError as exc:
        fail(str(exc))
    chain = [c.public_bytes(serialization.Encoding.DER) for c in certs]
    with node(ctx) as app:
        assert app.config.pki is not None
        verifier = PeerVerifier(app.config.pki)
        result = asyncio.run(verifier.verify(chain))
        decision = policy.certificate_check(result, None, verifier.fail_open)
        if decision is None and mail_from is not None:
            with app.reader.connect() as conn:
                whitelist = load_active(conn)
            peer = policy.PeerCertificate(certs[0].subject.rfc4514_string(),
                                          canonical_name(certs[0].subject))
            decision = policy.mx_sender(mail_from, whitelist, peer)
            if decision.accepted:
                decision = None
    print(f"subject: {result.subject}\nsha256:  {result.fingerprint}\n"
          f"chain:   {result.reason}")
    if decision is not None:
        print(f"refused: {decision.reply} ({decision.reason})")
        raise typer.Exit(1)
    print("accepted" + ("" if mail_from is None else f" for {mail_from or '<>'}"))


@pki_app.command("crl-status")
def pki_crl_status(ctx: typer.Context, json_out: JSON_OPTION = False) -> None:
    """Fetch the due CRL URLs of [pki] now and show every CRL source."""
    import asyncio

    from trustspace.verifier import PeerVerifier

    with node(ctx) as app:
        assert app.config.pki is not None
        verifier = PeerVerifier(app.config.pki)
        asyncio.run(verifier.crls.refresh())
    rows = verifier.crls.status()
    if not rows and not json_out:
        print("no CRL configured: revocation is not checked")
        return
    emit(rows, (Column("kind"), Column("source"), Column("loaded"),
                Column("entries", header="revoked", justify="right"), Column("issuer"),
                Column("next_update", header="next update", min_width=10,
                       format=lambda v: str(v or "-").replace("T", " ")),
                Column("error", header="last error")), json_out=json_out)
