"""``mss mailbox app-password add|list|revoke``: the operator's side of app passwords
(mss/mailstore/app_passwords.py; docs/app-passwords.md). Each change is audited; the secret
is printed once and is in no log nor audit record."""

from __future__ import annotations

from typing import Annotated

import typer

from audit.events import Event
from mss.cli_output import JSON_OPTION, Column, emit, when
from mss.cli_support import actor, fail, node

app_password_app = typer.Typer(
    no_args_is_help=True,
    help="App passwords: per device, scoped to IMAP and/or SMTP, shown once, revocable.")


@app_password_app.command("add")
def add(ctx: typer.Context, address: str,
        label: Annotated[str, typer.Option("--label", help="The device it is for.")],
        scope: Annotated[str, typer.Option(
            "--scope", help="imap, smtp or imap,smtp.")] = "imap,smtp") -> None:
    """Make an app password for ADDRESS and print its secret (once: it is stored hashed)."""
    from audit.journal import AuditRecord, append
    from mss.mailstore import app_passwords, mailboxes

    with node(ctx) as node_app, node_app.engine.begin() as conn:
        mailbox = mailboxes.require_mailbox(conn, address)
        made, secret = app_passwords.create(conn, mailbox.id, label, scope, "operator")
        append(conn, [AuditRecord(Event.ADMIN_APP_PASSWORD_ADD, actor=actor(),
                                  mailbox=mailbox.address,
                                  detail={"app_password": str(made.id), "label": made.label,
                                          "scopes": ",".join(made.scopes)})])
    print(f"app password {made.id} of {mailbox.address} ({made.label}; "
          f"{','.join(made.scopes)}), shown this once:")
    print(secret)


@app_password_app.command("list")
def list_command(ctx: typer.Context, address: str, json_out: JSON_OPTION = False) -> None:
    """List the app passwords of ADDRESS: id, label, scopes, created, last use, from, state."""
    from mss.mailstore import app_passwords, mailboxes

    with node(ctx) as node_app, node_app.reader.connect() as conn:
        mailbox = mailboxes.require_mailbox(conn, address)
        rows = app_passwords.list_for(conn, mailbox.id)
    listing = [{"id": p.id, "label": p.label, "scopes": list(p.scopes),
                "created_at": p.created_at, "last_used_at": p.last_used_at,
                "last_used_from": p.last_used_from, "state": p.state} for p in rows]
    emit(listing, (Column("id", justify="right"), Column("label"), Column("scopes"),
                   Column("created_at", header="created", format=when, min_width=10),
                   Column("last_used_at", header="last use", format=when, min_width=10),
                   Column("last_used_from", header="from"), Column("state")),
         json_out=json_out)


@app_password_app.command("revoke")
def revoke(ctx: typer.Context, address: str, app_password_id: Annotated[int, typer.Argument(
        metavar="ID", help="The id 'list' shows.")]) -> None:
    """Revoke an app password of ADDRESS: refused from the next login on."""
    from audit.journal import AuditRecord, append
    from mss.mailstore import app_passwords, mailboxes

    with node(ctx) as node_app, node_app.engine.begin() as conn:
        mailbox = mailboxes.require_mailbox(conn, address)
        found = app_passwords.get(conn, mailbox.id, app_password_id)
        if found is None:
            fail(f"{mailbox.address} has no app password {app_password_id}")
        if not app_passwords.revoke(conn, mailbox.id, app_password_id):
            fail(f"app password {app_password_id} of {mailbox.address} is already revoked")
        append(conn, [AuditRecord(Event.ADMIN_APP_PASSWORD_REVOKE, actor=actor(),
                                  mailbox=mailbox.address,
                                  detail={"app_password": str(found.id), "label": found.label})])
    print(f"app password {found.id} of {mailbox.address} ({found.label}) revoked")
