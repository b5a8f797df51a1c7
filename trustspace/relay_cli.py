"""``mss relay add|list|remove``: institutions' mail servers on the relay listener."""

from __future__ import annotations

from typing import Annotated

import typer

from audit.events import Event
from audit.journal import AuditRecord, append
from mss.cli_output import JSON_OPTION, Column, emit
from mss.cli_support import actor, fail, node, password_hash_from_stdin
from mss.mailstore.domains import is_hosted_domain
from trustspace import relays

relay_app = typer.Typer(no_args_is_help=True,
                        help="Institutions' mail servers allowed on the relay listener.")


@relay_app.command("add")
def relay_add(
    ctx: typer.Context,
    name: str,
    domains: Annotated[str, typer.Option(
        "--domains", help="Comma-separated hosted domains the relay may send as.")],
    cert_dn: Annotated[str | None, typer.Option(
        "--cert-dn", help="Subject DN (RFC 4514) of the server's client certificate.")] = None,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="SMTP AUTH: read the password from the first line of "
        "stdin (the login is NAME).")] = False,
) -> None:
    """Allow an institution's mail server to send as its domains (relay listener)."""
    relays.check_identity(cert_dn, password_stdin)  # before stdin is read
    names = relays.parse_domains(domains)
    password_hash = password_hash_from_stdin(12) if password_stdin else None
    with node(ctx) as app, app.engine.begin() as conn:
        for domain in names:
            if not is_hosted_domain(conn, domain):
                fail(f"domain {domain} is not hosted here (mss domain add {domain} first)")
        relay = relays.add_relay(conn, name, names, cert_dn, password_hash)
        detail = {"relay": name, "method": relay.method, "domains": names}
        if cert_dn:
            detail["cert_dn"] = cert_dn
        append(conn, [AuditRecord(Event.ADMIN_RELAY_ADD, actor=actor(), detail=detail)])
    print(f"relay {name} added ({relay.method}), may send as {','.join(names)}")


@relay_app.command("list")
def relay_list(ctx: typer.Context, json_out: JSON_OPTION = False) -> None:
    """List relays: name, method, domains, certificate DN."""
    with node(ctx) as app, app.reader.connect() as conn:
        rows = [{"name": r.name, "method": r.method, "domains": sorted(r.domains),
                 "cert_dn": r.cert_dn} for r in relays.list_relays(conn)]
    emit(rows, (Column("name"), Column("method"), Column("domains", header="may send as"),
                Column("cert_dn", header="certificate DN")), json_out=json_out)


@relay_app.command("remove")
def relay_remove(ctx: typer.Context, name: str) -> None:
    """Remove a relay: its server may no longer open sessions (one already authenticated
    keeps its identity until it ends)."""
    with node(ctx) as app, app.engine.begin() as conn:
        relay = relays.remove_relay(conn, name)
        append(conn, [AuditRecord(Event.ADMIN_RELAY_REMOVE, actor=actor(),
                                  detail={"relay": relay.name, "method": relay.method})])
    print(f"relay {name} removed")
