"""``mss mailbox hold|release`` (legal hold, mss/mailstore/holds.py) and ``mss retention
run|rules`` ([[retention.rules]], mss/mailstore/retention.py; docs/retention.md). Every
change is audited, every refusal too (one line, exit 2, nothing changed)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from audit.events import Event
from mss.cli_output import JSON_OPTION, Column, emit, when
from mss.cli_support import actor, fail, node

if TYPE_CHECKING:
    from mss.app import App
    from mss.mailstore.retention import Expunged

retention_app = typer.Typer(
    no_args_is_help=True,
    help="Message retention: [[retention.rules]] applied by 'mss serve' (docs/retention.md).")

MAX_REASON = 500  # characters of a hold's reason (a case reference, not a file)


@contextmanager
def _audited_refusal(node_app: App, event: Event, address: str) -> Iterator[None]:
    """A refused change (bad address, unknown mailbox, wrong state) audited (8), then
    reported as the command's one line."""
    from audit.events import Outcome
    from audit.journal import AuditRecord
    from mss.addresses import AddressError
    from mss.mailstore.errors import StoreError

    try:
        yield
    except (StoreError, AddressError) as exc:
        node_app.audit(AuditRecord(event, Outcome.SERIOUS_FAILURE, actor=actor(),
                                   mailbox=address, reason=str(exc)))
        raise


def hold(ctx: typer.Context, address: str,
         reason: Annotated[str | None, typer.Option(
             "--reason", help="Why (e.g. a case reference): shown by 'mailbox show', "
             "audited.")] = None) -> None:
    """Put a mailbox under legal hold: nothing of it is removed (IMAP EXPUNGE refused,
    CLOSE keeps \\Deleted messages, no MOVE out, no retention, no delete nor key shredding)
    until 'mss mailbox release'."""
    from audit.journal import AuditRecord, append
    from mss.mailstore import holds, mailboxes

    text = (reason or "").strip() or None
    if text is not None and ("\n" in text or "\r" in text or len(text) > MAX_REASON):
        fail(f"--reason: one line of at most {MAX_REASON} characters")
    with node(ctx) as node_app, _audited_refusal(node_app, Event.ADMIN_MAILBOX_HOLD,
                                                 address), node_app.engine.begin() as conn:
        mailbox = mailboxes.require_mailbox(conn, address)
        at = holds.hold(conn, mailbox.id, mailbox.address, text)
        append(conn, [AuditRecord(Event.ADMIN_MAILBOX_HOLD, actor=actor(),
                                  mailbox=mailbox.address, detail={"reason": text or ""})])
    print(f"mailbox {mailbox.address} under legal hold since {when(at)}")


def release(ctx: typer.Context, address: str) -> None:
    """End a mailbox's legal hold: expunge, retention and delete apply again."""
    from audit.journal import AuditRecord, append
    from mss.mailstore import holds, mailboxes

    with node(ctx) as node_app, _audited_refusal(node_app, Event.ADMIN_MAILBOX_RELEASE,
                                                 address), node_app.engine.begin() as conn:
        mailbox = mailboxes.require_mailbox(conn, address)
        holds.release(conn, mailbox.id, mailbox.address)
        append(conn, [AuditRecord(Event.ADMIN_MAILBOX_RELEASE, actor=actor(),
                                  mailbox=mailbox.address,
                                  detail={"held_since": mailbox.held_at,
                                          "reason": mailbox.hold_reason or ""})])
    print(f"mailbox {mailbox.address} released from legal hold (held since "
          f"{when(mailbox.held_at)})")


def hold_fields(held_at: float | None, reason: str | None) -> dict[str, object]:
    """The ``hold`` and ``hold_reason`` of 'mss mailbox show'."""
    return {"hold": held_at, "hold_reason": reason}


def show_hold(value: object) -> str:
    return "none" if value is None else f"since {when(value)}"


def _folder(row: Expunged) -> str:
    # a folder by id and special-use attribute: its name is content (mss/mailstore/names.py)
    return f"#{row.folder_id}" + (f" {row.special_use}" if row.special_use else "")


@retention_app.command("run")
def run(ctx: typer.Context,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Count what the rules would expunge now; change nothing.")]
        = False,
        json_out: JSON_OPTION = False) -> None:
    """Apply [[retention.rules]] now (as the job of 'mss serve' does every
    retention.interval): per folder, the messages expunged (folders by id and special-use
    attribute, never by name)."""
    from mss.mailstore.retention import run_round

    with node(ctx) as node_app:
        cfg = node_app.config.retention
        if not cfg.rules:
            fail("no [[retention.rules]] in the configuration: nothing to apply")
        report = run_round(node_app.engine, node_app.reader, node_app.keyring, cfg,
                           dry_run=dry_run, actor=actor())
    rows = [{"mailbox": f.mailbox, "folder_id": f.folder_id, "special_use": f.special_use,
             "folder": _folder(f), "rule": f.rule, "messages": f.messages, "bytes": f.bytes}
            for f in report.folders]
    verb = "would expunge" if dry_run else "expunged"
    emit(rows, (Column("mailbox"), Column("folder"), Column("rule", justify="right"),
                Column("messages", justify="right"), Column("bytes", justify="right")),
         json_out=json_out, json_skip=("folder",),
         caption=f"{verb} {report.messages} message(s), {report.bytes} bytes, from "
         f"{len(report.folders)} folder(s) of {report.mailboxes} mailbox(es); "
         f"{report.held} under legal hold skipped")


@retention_app.command("rules")
def rules(ctx: typer.Context, json_out: JSON_OPTION = False) -> None:
    """List [[retention.rules]] in the order they apply (the first matching a folder)."""
    from mss.config import load_config, resolve_config_path

    config = load_config(resolve_config_path(ctx.obj.get("config") if ctx.obj else None))
    listing = [{"rule": i, "domain": r.domain or "*", "folder": r.folder or "*",
                "days": r.days} for i, r in enumerate(config.retention.rules)]
    emit(listing, (Column("rule", justify="right"), Column("domain"), Column("folder"),
                   Column("days", justify="right",
                          format=lambda v: "kept" if v == 0 else f"{v:g}")),
         json_out=json_out,
         caption=f"every {config.retention.interval:g} s in mss serve"
         if config.retention.interval > 0 else "no job in mss serve (retention.interval 0)")
