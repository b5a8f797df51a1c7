"""The lifecycle commands of mailboxes and domains (issue 16, docs/lifecycle.md), attached
to ``mss mailbox`` and ``mss domain`` by mss/cli.py.

``mss mailbox passwd|suspend|resume|enable|rename|delete|undelete`` and ``mss domain
set|suspend|resume|remove``. Each change commits with its audit record; a refused one (an
unknown mailbox, a state that does not allow it) exits 2 with one line, changes nothing and
is audited as a minor failure (reason in the record).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from audit.events import Event
from mss.cli_support import actor, fail, next_hop, node, password_hash_from_stdin

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from mss.app import App

MIN_PASSWORD = 8  # as mss mailbox add --password-stdin


@contextmanager
def _change(ctx: typer.Context, event: Event, *, mailbox: str | None = None,
            domain: str | None = None) -> Iterator[tuple[App, Connection]]:
    """The node and a transaction for one change; a StoreError / CliError raised in it
    rolls the transaction back and is audited (outcome 4, its text as the reason) before
    the CLI reports it (one line, exit 2)."""
    from audit.events import Outcome
    from audit.journal import AuditRecord
    from mss.cli_support import CliError
    from mss.mailstore.errors import StoreError

    with node(ctx) as node_app:
        try:
            with node_app.engine.begin() as conn:
                yield node_app, conn
        except (StoreError, CliError) as exc:
            node_app.audit(AuditRecord(event, Outcome.MINOR_FAILURE, actor=actor(),
                                       mailbox=mailbox[:320] if mailbox else None,
                                       reason=str(exc),
                                       detail={"domain": domain} if domain else {}))
            raise


def _audit(conn: Connection, event: Event, mailbox: str | None = None,
           **detail: object) -> None:
    from audit.journal import AuditRecord, append

    append(conn, [AuditRecord(event, actor=actor(), mailbox=mailbox,
                              detail=detail)])


# --------------------------------------------------------------------------- mailboxes

def passwd(ctx: typer.Context, address: str,
           no_password: Annotated[bool, typer.Option(
               "--no-password", help="Remove the password (a mailbox logging in by "
               "certificate or token only).")] = False) -> None:
    """Set a mailbox's password from the first line of stdin; every session opened with
    the old one ends (IMAP within imap.enabled_check seconds)."""
    from mss.mailstore import lifecycle

    password_hash = None if no_password else password_hash_from_stdin(MIN_PASSWORD)
    with _change(ctx, Event.ADMIN_MAILBOX_PASSWD, mailbox=address) as (_app, conn):
        m = lifecycle.set_password(conn, address, password_hash)
        _audit(conn, Event.ADMIN_MAILBOX_PASSWD, m.address,
               password="removed" if no_password else "set")
    print(f"mailbox {m.address}: password {'removed' if no_password else 'set'}, "
          "sessions ended")


def suspend(ctx: typer.Context, address: str) -> None:
    """Suspend a mailbox: logins refused, sessions ended, inbound mail deferred (450 4.2.1)
    or kept, as lifecycle.suspended_inbound says; mss mailbox resume undoes it."""
    from mss.mailstore import lifecycle

    with _change(ctx, Event.ADMIN_MAILBOX_SUSPEND, mailbox=address) as (node_app, conn):
        m = lifecycle.suspend(conn, address)
        inbound = node_app.config.lifecycle.suspended_inbound
        _audit(conn, Event.ADMIN_MAILBOX_SUSPEND, m.address, inbound=inbound)
    print(f"mailbox {m.address} suspended (inbound mail: {inbound})")


def resume(ctx: typer.Context, address: str) -> None:
    """Resume a suspended mailbox."""
    from mss.mailstore import lifecycle

    with _change(ctx, Event.ADMIN_MAILBOX_RESUME, mailbox=address) as (_app, conn):
        m = lifecycle.resume(conn, address)
        _audit(conn, Event.ADMIN_MAILBOX_RESUME, m.address)
    print(f"mailbox {m.address} resumed")


def enable(ctx: typer.Context, address: str) -> None:
    """Enable a disabled mailbox again (mss mailbox disable)."""
    from mss.mailstore import lifecycle

    with _change(ctx, Event.ADMIN_MAILBOX_ENABLE, mailbox=address) as (_app, conn):
        m = lifecycle.enable(conn, address)
        _audit(conn, Event.ADMIN_MAILBOX_ENABLE, m.address)
    print(f"mailbox {m.address} enabled")


def rename(ctx: typer.Context, address: str,
           new_address: Annotated[str, typer.Argument(
               metavar="NEW", help="The new address, in a hosted domain.")]) -> None:
    """Give a mailbox another address (its domain or another hosted one): its folders,
    messages, grants and credentials follow; its sessions end."""
    from mss.mailstore import lifecycle

    with _change(ctx, Event.ADMIN_MAILBOX_RENAME, mailbox=address) as (_app, conn):
        old, new = lifecycle.rename(conn, address, new_address)
        _audit(conn, Event.ADMIN_MAILBOX_RENAME, old.address, new_address=new.address)
    print(f"mailbox {old.address} renamed {new.address}")


def delete(ctx: typer.Context, address: str,
           now: Annotated[bool, typer.Option(
               "--now", help="Purge at once instead of after lifecycle.delete_grace (needs "
               "--yes).")] = False,
           yes: Annotated[bool, typer.Option(
               "--yes", help="Confirm --now: the mail is destroyed for good.")] = False) -> None:
    """Delete a mailbox: logins refused and inbound mail refused as unknown at once, then
    after lifecycle.delete_grace its rows are purged and its key destroyed (mss mailbox
    undelete cancels meanwhile). Refused under legal hold."""
    from mss.cli_output import when
    from mss.mailstore import lifecycle

    purged = None
    with _change(ctx, Event.ADMIN_MAILBOX_DELETE, mailbox=address) as (node_app, conn):
        if now and not yes:
            fail(f"deleting {address} now destroys its mail for good: add --yes")
        if not now:
            m = lifecycle.schedule_delete(conn, address, node_app.config.lifecycle.delete_grace)
            _audit(conn, Event.ADMIN_MAILBOX_DELETE, m.address, delete_after=m.delete_after)
        else:
            from mss.mailstore.mailboxes import require_mailbox

            m = require_mailbox(conn, address)
            purged = lifecycle.purge(conn, node_app.keyring, m.id, immediate=True)
            assert purged is not None
            _audit(conn, Event.ADMIN_MAILBOX_DELETE, m.address, now=True)
            _audit(conn, Event.MAILBOX_PURGE, m.address, type=m.type, **purged.counts())
    if purged is not None:
        # committed (the node above is closed): this process ratchets its key file or
        # token now, the older KEK generation erased (docs/keys.md)
        with node(ctx) as again, again.reader.connect() as ratchet_conn:
            again.keyring.catch_up(ratchet_conn)
        print(f"mailbox {m.address} purged: {purged.messages} message(s) removed, key "
              "destroyed")
    else:
        print(f"mailbox {m.address} deleted: purged after {when(m.delete_after)} "
              f"(mss mailbox undelete {m.address} cancels until then)")


def undelete(ctx: typer.Context, address: str) -> None:
    """Cancel a mailbox's deletion during its grace period."""
    from mss.mailstore import lifecycle

    with _change(ctx, Event.ADMIN_MAILBOX_UNDELETE, mailbox=address) as (_app, conn):
        m = lifecycle.cancel_delete(conn, address)
        _audit(conn, Event.ADMIN_MAILBOX_UNDELETE, m.address)
    print(f"mailbox {m.address}: deletion cancelled (state {m.state})")


# --------------------------------------------------------------------------- domains

def domain_set(ctx: typer.Context, name: str,
               relay_to: Annotated[str | None, typer.Option(
                   "--relay-to", help="HOST:PORT of the institution's own server: mail for "
                   "the domain is queued to it instead of stored here.")] = None,
               no_relay: Annotated[bool, typer.Option(
                   "--no-relay", help="Store the domain's mail here again.")] = False) -> None:
    """Change where a hosted domain's mail goes: --relay-to HOST:PORT or --no-relay."""
    from mss.mailstore import domains, lifecycle

    if (relay_to is None) == (not no_relay):
        fail("give one of --relay-to HOST:PORT or --no-relay")
    if relay_to is not None:
        relay_to = next_hop(relay_to)
    with _change(ctx, Event.ADMIN_DOMAIN_RELAY, domain=name) as (_app, conn):
        domain = lifecycle.require_domain(conn, name)
        if domain.relay_to == relay_to:
            fail(f"domain {domain.name}: " + (f"already relayed to {relay_to}" if relay_to
                                               else "its mail is already stored here"))
        domains.set_relay(conn, domain.name, relay_to)
        _audit(conn, Event.ADMIN_DOMAIN_RELAY, domain=domain.name, relay_to=relay_to,
               previous=domain.relay_to)
    print(f"domain {domain.name}: " + (f"mail relayed to {relay_to}" if relay_to
                                       else "mail stored here"))


def domain_suspend(ctx: typer.Context, name: str) -> None:
    """Suspend a domain: each of its mailboxes as suspended (logins refused, sessions
    ended, inbound mail deferred or kept); mss domain resume undoes it."""
    from mss.mailstore import lifecycle

    with _change(ctx, Event.ADMIN_DOMAIN_SUSPEND, domain=name) as (node_app, conn):
        domain = lifecycle.suspend_domain(conn, name)
        inbound = node_app.config.lifecycle.suspended_inbound
        _audit(conn, Event.ADMIN_DOMAIN_SUSPEND, domain=domain.name,
               mailboxes=domain.mailboxes, inbound=inbound)
    print(f"domain {domain.name} suspended ({domain.mailboxes} mailbox(es); inbound mail: "
          f"{inbound})")


def domain_resume(ctx: typer.Context, name: str) -> None:
    """Resume a suspended domain."""
    from mss.mailstore import lifecycle

    with _change(ctx, Event.ADMIN_DOMAIN_RESUME, domain=name) as (_app, conn):
        domain = lifecycle.resume_domain(conn, name)
        _audit(conn, Event.ADMIN_DOMAIN_RESUME, domain=domain.name)
    print(f"domain {domain.name} resumed")


def domain_remove(ctx: typer.Context, name: str) -> None:
    """Stop hosting a domain (refused while it has mailboxes)."""
    from mss.mailstore import lifecycle

    with _change(ctx, Event.ADMIN_DOMAIN_REMOVE, domain=name) as (_app, conn):
        domain = lifecycle.remove_domain(conn, name)
        _audit(conn, Event.ADMIN_DOMAIN_REMOVE, domain=domain.name)
    print(f"domain {domain.name} removed")
