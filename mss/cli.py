"""The admin CLI: ``mss [--config PATH] COMMAND ...``.

Each package owns its sub-commands (``trustspace.cli`` gives ``mss whitelist``,
``audit.cli`` gives ``mss audit``); this module mounts them and holds the core ones. Bad
input: one line on stderr, exit status 2, nothing changed.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit, TyperException

from audit.events import Event
from mss import archive_cli
from mss.app_password_cli import app_password_app
from mss.cert_cli import CertDn, CertFile, cert_app, subject_dn
from mss.cli_output import JSON_OPTION, Column, emit, emit_fields, when
from mss.cli_support import (
    PRIVATE_UMASK,
    CliError,
    actor,
    fail,
    handled,
    next_hop,
    node,
    password_hash_from_stdin,
    report,
    require_private_dir,
    require_tls_files,
)
from mss.lifecycle_cli import (
    delete,
    domain_remove,
    domain_resume,
    domain_set,
    domain_suspend,
    enable,
    passwd,
    rename,
    resume,
    suspend,
    undelete,
)
from mss.retention_cli import hold, hold_fields, release, show_hold

if TYPE_CHECKING:
    import click

# Each command imports what it uses when it runs, and a package's sub-commands are loaded
# only when named: 'mss whitelist check D' must not pay for sqlalchemy's ORM, the protocols
# and the audit exporters (tests/test_cli.py measures it).
SUBCOMMANDS = MappingProxyType({  # name: (module, Typer attribute)
    "whitelist": ("trustspace.cli", "whitelist_app"),
    "audit": ("audit.cli", "audit_app"),
    "directory": ("directory.cli", "directory_app"),
    "pki": ("trustspace.cli", "pki_app"),
    "queue": ("proxy.outbound.cli", "queue_app"),
    "relay": ("trustspace.relay_cli", "relay_app"),
    "backup": ("mss.backup_cli", "backup_app"),
    "db": ("mss.db_cli", "db_app"),
    "auth": ("mss.identity_cli", "auth_app"),  # issue 15: token issuers
    "dns": ("mss.dns_cli", "dns_app"),
    "retention": ("mss.retention_cli", "retention_app"),  # issue 16
    "peer": ("trustspace.peer_cli", "peer_app"),  # issue 16: local peer blocks
    "operator": ("mss.operator_cli", "operator_app"),  # issue 16: migration logins
    "sessions": ("mss.sessions_cli", "sessions_app"),  # issue 16
})


class LazyGroup(TyperGroup):
    """The ``mss`` group: the SUBCOMMANDS packages imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *SUBCOMMANDS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return super().get_command(ctx, cmd_name)
        module, attribute = SUBCOMMANDS[cmd_name]
        mount = _typer()  # mounted as add_typer would: the root's settings (plain help)
        mount.add_typer(getattr(importlib.import_module(module), attribute), name=cmd_name)
        return typer.main.get_group(mount).commands[cmd_name]


def _typer(**options: object) -> typer.Typer:
    return typer.Typer(no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False, rich_markup_mode=None,
                       **options)  # type: ignore[arg-type]


app = _typer(cls=LazyGroup, help="mss: secure health messaging node (MSSanté).")
domain_app = typer.Typer(no_args_is_help=True, help="Hosted domains.")
mailbox_app = typer.Typer(no_args_is_help=True, help="Hosted mailboxes.")
keys_app = typer.Typer(no_args_is_help=True,
                        help="Key-encryption key, master key versions, mailbox keys.")
app.add_typer(domain_app, name="domain")
app.add_typer(mailbox_app, name="mailbox")
app.add_typer(keys_app, name="keys")
mailbox_app.add_typer(cert_app, name="cert")  # mss mailbox cert add|remove|list (issue 15)
mailbox_app.add_typer(app_password_app, name="app-password")  # issue 15
mailbox_app.command("hold")(hold)  # issue 16: legal hold
mailbox_app.command("release")(release)
# issue 16, lifecycle (mss/lifecycle_cli.py)
mailbox_app.command("passwd")(passwd)
mailbox_app.command("suspend")(suspend)
mailbox_app.command("resume")(resume)
mailbox_app.command("enable")(enable)
mailbox_app.command("rename")(rename)
mailbox_app.command("delete")(delete)
mailbox_app.command("undelete")(undelete)
domain_app.command("set")(domain_set)
domain_app.command("suspend")(domain_suspend)
domain_app.command("resume")(domain_resume)
domain_app.command("remove")(domain_remove)
mailbox_app.command("export")(archive_cli.export)  # issue 16: reversibility
mailbox_app.command("import")(archive_cli.import_command)


@app.callback()
def _global(ctx: typer.Context,
            config: Annotated[Path | None, typer.Option(
                "--config", envvar="MSS_CONFIG",
                help="Configuration file (default ./var/mss.toml).")] = None) -> None:
    ctx.obj = {"config": config}


# --------------------------------------------------------------------------- init / serve

@app.command()
def init(data_dir: Annotated[Path, typer.Option("--data-dir", help="Directory to create.")],
         domain: Annotated[str, typer.Option("--domain", help="First hosted domain.")],
         force: Annotated[bool, typer.Option(
             "--force", help="Overwrite existing keys and drop mss's tables from the "
             "database (destroys mail).")]
         = False,
         database_url: Annotated[str, typer.Option(
             "--database-url", help="SQLAlchemy URL of the database (default: SQLite in the "
             "data dir; postgresql+psycopg://user@host/db for PostgreSQL).")]
         = "sqlite:///mss.db",
         hostname: Annotated[list[str] | None, typer.Option(
             "--hostname", help="Another DNS name of the development certificate "
             "(repeatable; mx.DOMAIN and localhost always).")] = None,
         ip: Annotated[list[str] | None, typer.Option(
             "--ip", help="Another IP address of the development certificate (repeatable; "
             "127.0.0.1 always).")] = None) -> None:
    """Create a data dir: config, master key, development PKI; the database (SQLite in the
    data dir, or --database-url, which must be empty) at the schema's head revision, with
    the queue key and the hosted domain. The development certificate names mx.DOMAIN,
    localhost, 127.0.0.1 and each --hostname and --ip (mss pki dev-cert reissues it)."""
    from audit.checkpoints import signing_key
    from audit.journal import AuditRecord, append
    from audit.patient import pseudonym_key
    from mss import crypto
    from mss.addresses import normalize_domain
    from mss.app import open_app
    from mss.config import DEFAULT_CONFIG_NAME, render_default_config, resolve_database_url
    from mss.db_cli import drop_mss_tables, require_empty_database
    from mss.mailstore import domains
    from trustspace.pki import generate_dev_pki, parse_names

    try:
        domain = normalize_domain(domain)
    except ValueError as exc:
        fail(f"invalid domain {domain!r}: {exc}")
    try:
        names, addresses = parse_names(hostname or [], ip or [])
    except ValueError as exc:
        fail(str(exc))
    key_file = data_dir / "keys" / "master.key"
    if key_file.exists() and not force:
        fail(f"{data_dir} already holds keys ({key_file}); use --force to replace them "
             "(mail stored with them becomes unreadable)")
    url = resolve_database_url(database_url, data_dir)
    if not force:
        require_empty_database(url)  # before anything is written
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.chmod(0o700)  # an existing 0755 directory too: keys, mail and logs are inside
    if force:
        for name in ("mss.db", "mss.db-wal", "mss.db-shm"):
            (data_dir / name).unlink(missing_ok=True)
        drop_mss_tables(url)  # PostgreSQL, or a SQLite file outside the data dir
        shutil.rmtree(data_dir / "keys", ignore_errors=True)
        shutil.rmtree(data_dir / "pki", ignore_errors=True)
    config_path = data_dir / DEFAULT_CONFIG_NAME
    config_path.write_text(render_default_config(domain, database_url), encoding="utf-8")
    crypto.new_master_key_file(key_file)
    generate_dev_pki(data_dir / "pki", domain, [f"mx.{domain}", "localhost", *names],
                     addresses)
    signing_key(data_dir / "keys" / "audit-signing.key")  # audit checkpoints (Ed25519)
    pseudonym_key(data_dir / "keys" / "pseudonym.key")  # patient pseudonyms in the trail
    node_app = open_app(config_path, init=True)  # the schema made at its head revision
    try:
        with node_app.engine.begin() as conn:
            node_app.keyring.register_current_master(conn)
            node_app.keyring.create_key(conn, crypto.QUEUE_KEY_ID)
            domains.add_domain(conn, domain)
            append(conn, [
                AuditRecord(Event.ADMIN_INIT, actor=actor(), detail={
                    "data_dir": str(data_dir), "hostnames": ",".join(names),
                    "ips": ",".join(str(a) for a in addresses)}),
                AuditRecord(Event.ADMIN_DOMAIN_ADD, actor=actor(), detail={"domain": domain}),
            ])
    finally:
        node_app.close()
    print(f"initialised {data_dir} for {domain}")
    print(f"  config:     {config_path}")
    print(f"  master key: {key_file} (mode 0600; back it up apart from the database)")
    print(f"  TLS:        {data_dir / 'pki'} (DEVELOPMENT ONLY certificates)")
    print(f"next: export MSS_CONFIG={config_path}; mss serve")


@app.command()
def serve(ctx: typer.Context) -> None:
    """Start the listeners from the configuration (SIGTERM: finish in-flight, exit 0)."""

    from mss.config import load_config, resolve_config_path
    from mss.logs import configure, route_crashes

    config = load_config(resolve_config_path(ctx.obj.get("config") if ctx.obj else None))
    require_private_dir(config.data_dir)  # before any file is created in it
    require_tls_files(config.tls)
    # JSON from here on, before the listeners' imports (a library's import-time warning)
    # and before the node opens; a refusal to start stays the CLI's one line on stderr
    configure(config.log_level, config.log_file)
    route_crashes()
    from mss.server import loop_factory, run_loop, serve_workers
    from mss.server import serve as run

    with node(ctx) as node_app:  # checks config and master key before any fork
        loop_factory(node_app.config.server.event_loop)  # uvloop installed, if named
        workers = node_app.config.workers
        if workers == 1:
            run_loop(node_app.config.server.event_loop, run(node_app))
            return
        config_path = node_app.config.path
    raise typer.Exit(serve_workers(config_path, workers))


# --------------------------------------------------------------------------- domains

@domain_app.command("add")
def domain_add(ctx: typer.Context, name: str,
               relay_to: Annotated[str | None, typer.Option(
                   "--relay-to", help="HOST:PORT of the institution's own server: mail for "
                   "the domain is queued to it instead of stored here.")] = None) -> None:
    """Host a domain."""
    from audit.journal import AuditRecord, append
    from mss.mailstore import domains

    if relay_to is not None:
        relay_to = next_hop(relay_to)
    with node(ctx) as node_app, node_app.engine.begin() as conn:
        domain = domains.add_domain(conn, name)
        append(conn, [AuditRecord(Event.ADMIN_DOMAIN_ADD, actor=actor(),
                                  detail={"domain": domain})])
        if relay_to is not None:
            domains.set_relay(conn, domain, relay_to)
            append(conn, [AuditRecord(Event.ADMIN_DOMAIN_RELAY, actor=actor(),
                                      detail={"domain": domain, "relay_to": relay_to})])
    print(f"domain {domain} added" + (f", mail relayed to {relay_to}" if relay_to else ""))


@domain_app.command("list")
def domain_list(ctx: typer.Context, json_out: JSON_OPTION = False) -> None:
    """List hosted domains: name, where its mail goes (stored here or relayed), state
    (active or suspended), mailboxes."""
    from mss.mailstore import lifecycle

    with node(ctx) as node_app, node_app.reader.connect() as conn:
        rows = [{"domain": d.name, "relay_to": d.relay_to, "state": d.state,
                 "mailboxes": d.mailboxes} for d in lifecycle.list_domains(conn)]
    emit(rows, (Column("domain"), Column("relay_to", header="relayed to",
                                         format=lambda v: str(v) if v else "stored here"),
                Column("state"), Column("mailboxes", justify="right")),
         json_out=json_out)


# --------------------------------------------------------------------------- mailboxes

@mailbox_app.command("add")
def mailbox_add(
    ctx: typer.Context,
    address: str,
    mailbox_type: Annotated[str, typer.Option(
        "--type", help="PER, ORG, APP or CAB (a practice).")],
    rpps: Annotated[str | None, typer.Option("--rpps", help="RPPS number (PER).")] = None,
    finess: Annotated[str | None, typer.Option("--finess", help="FINESS (ORG/APP).")] = None,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password from the first line of stdin.")] = False,
    no_password: Annotated[bool, typer.Option(
        "--no-password", help="No password: the mailbox logs in by token or certificate "
        "only, or is reached through grants (ORG, CAB).")] = False,
    liste_rouge: Annotated[bool, typer.Option(
        "--liste-rouge", help="Never publish this mailbox in the directory.")] = False,
    cert: CertFile = None,
    cert_dn: CertDn = None,
) -> None:
    """Create a mailbox (with its own encryption key and default folders): with a password
    (--password-stdin), or bound to a client certificate (APP: --cert FILE or --cert-dn DN,
    SASL EXTERNAL), or --no-password (tokens, grants; mss mailbox passwd sets one later)."""
    from audit.journal import AuditRecord, append
    from mss.mailstore import identities, mailboxes

    bound = None
    if cert is not None or cert_dn is not None:
        if mailbox_type.upper() != "APP":
            fail("--cert/--cert-dn: only APP mailboxes log in with a certificate")
        bound = subject_dn(cert, cert_dn)
    if password_stdin and no_password:
        fail("--password-stdin and --no-password: choose one")
    password_hash = password_hash_from_stdin(8) if password_stdin else None
    with node(ctx) as node_app, node_app.engine.begin() as conn:
        mailbox = mailboxes.add_mailbox(conn, node_app.keyring, address, mailbox_type, rpps=rpps,
                                    finess=finess, password_hash=password_hash,
                                    liste_rouge=liste_rouge)
        if password_hash is None and bound is None and not no_password:  # rolled back
            fail("nobody could log in to this mailbox: give --password-stdin, a certificate "
                 "(--cert/--cert-dn) or --no-password")
        records = [AuditRecord(Event.ADMIN_MAILBOX_ADD, actor=actor(), mailbox=mailbox.address,
                               detail={"type": mailbox.type})]
        if bound is not None:
            identities.bind_certificate(conn, mailbox.address, *bound)
            records.append(AuditRecord(Event.ADMIN_MAILBOX_CERT_BIND, actor=actor(),
                                       mailbox=mailbox.address, detail={"cert_dn": bound[0]}))
        append(conn, records)
    print(f"mailbox {mailbox.address} ({mailbox.type}) created"
          + (f", certificate DN {bound[0]} bound" if bound else ""))


@mailbox_app.command("list")
def mailbox_list(ctx: typer.Context, json_out: JSON_OPTION = False) -> None:
    """List mailboxes: address, type, state (active, suspended, disabled, deleting), RPPS,
    FINESS."""
    from mss.mailstore import mailboxes

    with node(ctx) as node_app, node_app.reader.connect() as conn:
        rows = [{"address": m.address, "type": m.type, "state": m.state, "rpps": m.rpps,
                 "finess": m.finess} for m in mailboxes.list_mailboxes(conn)]
    emit(rows, (Column("address"), Column("type"), Column("state"), Column("rpps"),
                Column("finess")), json_out=json_out, caption=f"{len(rows)} mailbox(es)")


@mailbox_app.command("show")
def mailbox_show(ctx: typer.Context, address: str, json_out: JSON_OPTION = False) -> None:
    """Show one mailbox."""
    from mss.mailstore import mailboxes
    from mss.mailstore.identities import certificates_of

    with node(ctx) as node_app, node_app.reader.connect() as conn:
        m = mailboxes.require_mailbox(conn, address)
        count, size = mailboxes.mailbox_counts(conn, m.id)
        bound = certificates_of(conn, m.address)
    record = {"address": m.address, "type": m.type, "rpps": m.rpps, "finess": m.finess,
              "state": m.state, "password": "set" if m.password_hash else "none",
              "created_at": m.created_at, "suspended_at": m.suspended_at,
              "delete_after": m.delete_after,
              "messages": count, "bytes": size,
              "cert_dns": [b.cert_dn for b in bound],  # SASL EXTERNAL (mss mailbox cert)
              **hold_fields(m.held_at, m.hold_reason)}  # issue 16: legal hold
    emit_fields(record, json_out=json_out, labels={"created_at": "created",
                                                   "suspended_at": "suspended",
                                                   "delete_after": "purged after",
                                                   "cert_dns": "cert DNs",
                                                   "hold_reason": "reason"},
                formats={"created_at": when, "suspended_at": when, "delete_after": when,
                         "hold": show_hold})


@mailbox_app.command("disable")
def mailbox_disable(ctx: typer.Context, address: str) -> None:
    """Disable a mailbox: no more logins, no more mail accepted for it."""
    from audit.journal import AuditRecord, append
    from mss.mailstore import mailboxes

    with node(ctx) as node_app, node_app.engine.begin() as conn:
        m = mailboxes.disable_mailbox(conn, address)
        append(conn, [AuditRecord(Event.ADMIN_MAILBOX_DISABLE, actor=actor(), mailbox=m.address)])
    print(f"mailbox {m.address} disabled")


@mailbox_app.command("grant")
def mailbox_grant(ctx: typer.Context, address: str, user: str,
                  send: Annotated[bool, typer.Option(
                      "--send", help="Also let the user send as the mailbox (Sender: the "
                      "user). On an existing grant: adds the right; without --send: "
                      "withdraws it.")] = False) -> None:
    """Share an ORG/APP mailbox with a user over IMAP (seen as Shared/ADDRESS/...)."""
    from audit.journal import AuditRecord, append
    from mss.mailstore.grants import grant

    with node(ctx) as node_app, node_app.engine.begin() as conn:
        shared, grantee = grant(conn, address, user, send=send)
        append(conn, [AuditRecord(Event.ADMIN_MAILBOX_GRANT, actor=actor(), mailbox=shared.address,
                                  detail={"grantee": grantee.address, "can_send": send})])
    print(f"{grantee.address} now has access to {shared.address}"
          + (" and may send as it" if send else " (no send right)"))


@mailbox_app.command("revoke")
def mailbox_revoke(ctx: typer.Context, address: str, user: str) -> None:
    """Remove a user's access to a shared mailbox (effective at their next command)."""
    from audit.journal import AuditRecord, append
    from mss.mailstore.grants import revoke

    with node(ctx) as node_app, node_app.engine.begin() as conn:
        shared, grantee = revoke(conn, address, user)
        append(conn, [AuditRecord(Event.ADMIN_MAILBOX_REVOKE, actor=actor(),
                                  mailbox=shared.address, detail={"grantee": grantee.address})])
    print(f"{grantee.address} no longer has access to {shared.address}")


# --------------------------------------------------------------------------- doctor

@app.command()
def doctor(ctx: typer.Context,
           domains: Annotated[list[str] | None, typer.Argument(
               metavar="DOMAIN", help="Also check the DNS records of these hosted "
               "domains.", show_default=False)] = None,
           every_domain: Annotated[bool, typer.Option(
               "--dns", help="Check the DNS records of every hosted domain.")] = False,
           nameserver: Annotated[str | None, typer.Option(
               "--nameserver", help="Ask this server (IP[:PORT]) instead of the system "
               "resolver.")] = None,
           timeout: Annotated[float, typer.Option(
               "--timeout", min=0.1, help="Seconds per lookup or connection.")] = 5.0,
           json_out: Annotated[bool, typer.Option(
               "--json", help="A JSON list of {check, status, fix}.")] = False) -> None:
    """Check the node as an MSSanté auditor would (certificate and its DN in the whitelist,
    CRLs, anchors, audit and directory destinations, key modes, schema, listeners, issuers)
    and the DNS records of each DOMAIN: a table check/status/fix; exit 0 no fail, 1 a fail."""
    from mss.config import resolve_config_path
    from mss.doctor import run

    config_path = resolve_config_path(ctx.obj.get("config") if ctx.obj else None)
    code = run(config_path, domains or [], every_domain=every_domain, nameserver=nameserver,
               timeout=timeout, json_out=json_out)
    if code:
        raise typer.Exit(code)


# --------------------------------------------------------------------------- report

@app.command("report")
def report_command(ctx: typer.Context,
           month: Annotated[str, typer.Option(
               "--month", help="The month, YYYY-MM (UTC).")],
           fmt: Annotated[str, typer.Option(
               "--format", help="csv (a header line) or json (a list of objects).")] = "csv"
           ) -> None:
    """The month's indicators from the audit journal (no content): mailboxes by type and
    state, messages sent and received per domain and peer operator, logins per method and
    outcome, refusals per reason (docs/report.md)."""
    from mss.report import run_report

    run_report(ctx, month, fmt)


# --------------------------------------------------------------------------- keys

@keys_app.command("rotate")
def keys_rotate(ctx: typer.Context) -> None:
    """Add a master key version (in the database, wrapped by the provider's KEK: every
    node sees it) and re-wrap every mailbox key (messages untouched)."""
    from audit.events import Outcome
    from audit.journal import AuditRecord, append
    from mss import crypto

    with node(ctx) as node_app:
        try:
            with node_app.engine.begin() as conn:
                version, count = node_app.keyring.rotate(conn)
                append(conn, [AuditRecord(Event.ADMIN_KEYS_ROTATE, actor=actor(),
                                          detail={"version": version, "keys": count})])
        except (crypto.KeyringError, crypto.TamperedError) as exc:
            node_app.audit(AuditRecord(Event.ADMIN_KEYS_ROTATE, Outcome.SERIOUS_FAILURE,
                                       actor=actor(), reason=str(exc)))
            raise
    print(f"master key version {version}; {count} keys re-wrapped")


@keys_app.command("status")
def keys_status(ctx: typer.Context, json_out: JSON_OPTION = False) -> None:
    """Show the master key versions: the key-encryption key wrapping each, how many keys
    each wraps, the current one (titled with the key-encryption key in use)."""
    with node(ctx) as node_app, node_app.reader.connect() as conn:
        status = node_app.keyring.status(conn)
    versions = sorted({*status.versions, *status.wrapped_by_version})
    rows = [{"version": v, "current": v == status.current_version,
             "wrapped_by": status.versions.get(v), "keys": status.wrapped_by_version.get(v, 0),
             "kek_in_use": status.kek_id} for v in versions]
    emit(rows, (Column("version", header="master version", justify="right"),
                Column("current"), Column("wrapped_by", header="wrapped by"),
                Column("keys", header="keys wrapped", justify="right")),
         json_out=json_out, title=f"key-encryption key in use: {status.kek_id}")


@keys_app.command("shred")
def keys_shred(ctx: typer.Context, address: str,
               yes: Annotated[bool, typer.Option(
                   "--yes", help="Confirm: every message of the mailbox becomes unreadable, "
                   "for good.")] = False) -> None:
    """Crypto-shred a mailbox: destroy its key on every node and disable it."""
    from audit.events import Outcome
    from audit.journal import AuditRecord, append
    from mss import crypto
    from mss.mailstore import mailboxes
    from mss.mailstore.state import lock

    with node(ctx) as node_app:
        if not yes:
            node_app.audit(AuditRecord(Event.ADMIN_KEYS_SHRED, Outcome.MINOR_FAILURE,
                                       actor=actor(), mailbox=address,
                                       reason="not confirmed (--yes)"))
            fail(f"shredding {address} makes every message of it unreadable for good: "
                 "add --yes")
        held = None
        with node_app.engine.begin() as conn:
            lock(conn)  # a legal hold set meanwhile is seen (mss/mailstore/holds.py)
            mailbox = mailboxes.require_mailbox(conn, address)
            if mailbox.held_at is not None:  # issue 16: a held mailbox's mail stays
                held = mailbox.address
            elif mailbox.enabled:  # no more logins nor mail for a mailbox without a key
                mailboxes.disable_mailbox(conn, mailbox.address)
            if held is None:
                node_app.keyring.destroy(conn, crypto.mailbox_key_id(mailbox.id))
                generation = node_app.keyring.kek_generation(conn)
                append(conn, [AuditRecord(Event.ADMIN_KEYS_SHRED, actor=actor(),
                                          mailbox=mailbox.address,
                                          detail={"kek_generation": generation})])
        if held is not None:  # the transaction is over: its refusal audited apart
            node_app.audit(AuditRecord(Event.ADMIN_KEYS_SHRED, Outcome.MINOR_FAILURE,
                                       actor=actor(), mailbox=held, reason="legal hold"))
            fail(f"mailbox {held} is under legal hold (mss mailbox release first)")
        with node_app.reader.connect() as conn:  # committed: erase the older KEK here
            node_app.keyring.catch_up(conn)
    print(f"mailbox {mailbox.address}: key destroyed, mailbox disabled; key-encryption key "
          f"ratcheted to generation {generation} (older copies of the database no longer "
          f"open with this node's keys)")


@keys_app.command("init-hsm")
def keys_init_hsm(ctx: typer.Context) -> None:
    """Generate the key-encryption key in the PKCS#11 token of [keys] (non-extractable)."""
    from audit.journal import AuditRecord
    from mss.app import token_config
    from mss.config import load_config, resolve_config_path
    from mss.pkcs11 import generate_kek

    config = load_config(resolve_config_path(ctx.obj.get("config") if ctx.obj else None))
    cfg = token_config(config)
    generate_kek(cfg)
    print(f"generated {cfg.describe()} (AES-256, non-extractable)")
    if config.keys.provider != "pkcs11":
        print('next: set [keys] provider = "pkcs11", then run: mss keys rotate')
        return
    with node(ctx) as node_app:
        node_app.audit(AuditRecord(Event.ADMIN_KEYS_INIT_HSM, actor=actor(),
                                   detail={"token": cfg.token_label, "key": cfg.key_label}))
    print("next: mss keys rotate (moves every key under the token's KEK)")


# --------------------------------------------------------------------------- entry point

def main(argv: list[str] | None = None) -> None:
    os.umask(PRIVATE_UMASK)  # every file and directory mss creates: owner only
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="mss", standalone_mode=False)
    except Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except Abort:
        print("mss: aborted", file=sys.stderr)
        raise SystemExit(130) from None
    except TyperException as exc:  # usage errors: one line, not a help page
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare 'mss' or 'mss GROUP': help
            print(exc.format_message(), file=sys.stderr)
            raise SystemExit(2) from None
        print(f"mss: error: {exc.format_message()}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as exc:
        if isinstance(exc, handled()):
            report(exc)
        raise
    raise SystemExit(result if isinstance(result, int) else 0)


__all__ = ["app", "main", "CliError"]
