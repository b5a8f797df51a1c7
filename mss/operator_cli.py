"""``mss operator add|list|remove``: operator accounts for migrations (issue 16,
reversibility; mss/mailstore/operators.py, docs/export.md). An operator logs in over IMAP as
any mailbox (SASL PLAIN, authzid = the mailbox, authcid = the operator; or the login
``MAILBOX*OPERATOR``), each use audited as delegated access. Every change audited."""

from __future__ import annotations

from typing import Annotated

import typer

from audit.events import Event
from mss.cli_output import JSON_OPTION, Column, emit, when
from mss.cli_support import actor, fail, node, password_hash_from_stdin

operator_app = typer.Typer(
    no_args_is_help=True,
    help="Operator accounts: IMAP logins acting as a mailbox (migrations), audited.")


@operator_app.command("add")
def add(ctx: typer.Context, name: str,
        password_stdin: Annotated[bool, typer.Option(
            "--password-stdin", help="Read the password from the first line of stdin.")]
        = False) -> None:
    """Create operator NAME (a-z 0-9 . _ -) with the password on stdin (12 characters or
    more)."""
    from audit.journal import AuditRecord, append
    from mss.mailstore import operators

    if not password_stdin:
        fail("an operator needs a password: --password-stdin")
    name = operators.normalise_name(name)
    password_hash = password_hash_from_stdin(12)
    with node(ctx) as node_app, node_app.engine.begin() as conn:
        made = operators.add(conn, name, password_hash)
        append(conn, [AuditRecord(Event.ADMIN_OPERATOR_ADD, actor=actor(),
                                  detail={"operator": made.name})])
    print(f"operator {made.name} created: it may log in over IMAP as any mailbox "
          f"(PLAIN authzid, or MAILBOX{operators.SEPARATOR}{made.name})")


@operator_app.command("list")
def list_command(ctx: typer.Context, json_out: JSON_OPTION = False) -> None:
    """List the operators: name, created, last use."""
    from mss.mailstore import operators

    with node(ctx) as node_app, node_app.reader.connect() as conn:
        rows = [{"name": o.name, "created_at": o.created_at, "last_used_at": o.last_used_at}
                for o in operators.list_all(conn)]
    emit(rows, (Column("name"), Column("created_at", header="created", format=when),
                Column("last_used_at", header="last use", format=when)),
         json_out=json_out, caption=f"{len(rows)} operator(s)")


@operator_app.command("remove")
def remove(ctx: typer.Context, name: str) -> None:
    """Remove operator NAME: refused from the next login on (open sessions end at their
    next state check when the mailbox's sessions are ended: mss sessions end)."""
    from audit.journal import AuditRecord, append
    from mss.mailstore import operators

    with node(ctx) as node_app, node_app.engine.begin() as conn:
        gone = operators.remove(conn, name)
        append(conn, [AuditRecord(Event.ADMIN_OPERATOR_REMOVE, actor=actor(),
                                  detail={"operator": gone.name})])
    print(f"operator {gone.name} removed")
