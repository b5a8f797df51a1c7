"""``mss audit ...``: read the audit trail."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from audit.checkpoints import CheckpointError, purge, signing_key, verify_all, write_checkpoint
from audit.dicom import audit_source, to_xml
from audit.events import Outcome
from audit.journal import AuditRecord, append, query
from audit.shipper import Outbox
from mss.cli_support import actor, fail, node

audit_app = typer.Typer(no_args_is_help=True, help="The audit trail.")


def _since(value: str) -> str:
    """ISO 8601 date or date-time -> the journal's UTC text form (sortable as text)."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--since: not an ISO 8601 date or time: {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    mailbox: Annotated[str | None, typer.Option("--mailbox", help="Only this mailbox.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601 start time.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List audit records, oldest first."""
    since_text = _since(since) if since else None
    with node(ctx) as app:
        with app.reader.connect() as conn:
            rows = list(query(conn, mailbox=mailbox, since=since_text))
        with app.engine.begin() as conn:  # reading the trail is itself traced (ATNA)
            append(conn, [AuditRecord("audit.read", actor=actor(), mailbox=mailbox,
                                      detail={"since": since_text, "rows": len(rows)})])
    for row in rows:
        if as_json:
            print(json.dumps(row, ensure_ascii=False, sort_keys=True))
        else:
            parts = [row["ts"], row["event"], str(row["outcome"]), row["actor"] or "-"]
            for key in ("remote_addr", "mail_from", "rcpt", "mailbox", "message_id", "reason",
                        "whitelist_version"):
                if row[key] is not None:
                    parts.append(f"{key}={row[key]}")
            print("  ".join(parts))


@audit_app.command("verify")
def audit_verify(ctx: typer.Context) -> None:
    """Check the hash chain and the signed checkpoints; name the first modified, deleted,
    inserted or reordered record. Exit 0 when intact, 1 when not."""
    with node(ctx) as app:
        key = signing_key(app.config.audit.signing_key_file)
        with app.reader.connect() as conn:
            result = verify_all(conn, key)
    print(result.message)
    if not result.ok:
        raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint(ctx: typer.Context) -> None:
    """Sign a checkpoint on the newest record now (mss serve does it periodically)."""
    with node(ctx) as app:
        key = signing_key(app.config.audit.signing_key_file)
        with app.engine.begin() as conn:
            record = write_checkpoint(conn, key)
    print(f"checkpoint on record {record}" if record else "audit trail is empty")


@audit_app.command("purge")
def audit_purge(
    ctx: typer.Context,
    before: Annotated[str | None, typer.Option(
        "--before", help="ISO 8601 time; default: now minus audit.retention_days.")] = None,
) -> None:
    """Delete records older than the retention period, keeping the chain verifiable."""
    now = datetime.now(UTC)
    with node(ctx) as app:
        days = app.config.audit.retention_days
        cutoff = _since(before) if before else _since(
            (now - timedelta(days=days)).isoformat())
        key = signing_key(app.config.audit.signing_key_file)
        try:
            with app.engine.begin() as conn:
                result = purge(conn, key, cutoff, _since(now.isoformat()), days)
                append(conn, [AuditRecord("audit.purge", actor=actor(),
                                          detail={"before": cutoff, **result})])
        except CheckpointError as exc:
            app.audit(AuditRecord("audit.purge", Outcome.MINOR_FAILURE, actor=actor(),
                                  reason=str(exc), detail={"before": cutoff}))
            fail(str(exc))
    print(f"{result['deleted']} records before {cutoff} deleted; chain now starts after "
          f"signed checkpoint on record {result['checkpoint']}" if result["deleted"]
          else f"no record before {cutoff}")


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", help="dicom-xml or jsonl.")] = "jsonl",
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601 start time.")] = None,
) -> None:
    """Export records, one per line: DICOM PS3.15 A.5 AuditMessage XML, or JSON."""
    if fmt not in ("dicom-xml", "jsonl"):
        fail(f"--format: unknown format {fmt!r} (dicom-xml, jsonl)")
    since_text = _since(since) if since else None
    with node(ctx) as app, app.reader.connect() as conn:
        source = audit_source(app.config)
        for row in query(conn, since=since_text):
            if fmt == "jsonl":
                print(json.dumps(row, ensure_ascii=False, sort_keys=True))
            else:
                print(to_xml(row, source).decode("utf-8"))


@audit_app.command("status")
def audit_status(ctx: typer.Context) -> None:
    """Per configured destination: backlog, last record shipped, last success, last error."""
    with node(ctx) as app:
        names = [d.name for d in app.config.audit.destinations]
        if not names:
            print("no audit destination configured ([[audit.destinations]])")
            return
        rows = Outbox(app.engine, app.reader).status(names)

    def when(value: float | None) -> str:
        if value is None:
            return "never"
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")

    for dest, row in zip(app.config.audit.destinations, rows, strict=True):
        print(f"{dest.name} ({dest.transport} {dest.host}:{dest.port}): backlog {row['backlog']}"
              f", shipped up to {row['last_id']} of {row['newest_id']}, last success "
              f"{when(row.get('last_success_at'))}"
              + (f", last error {when(row.get('last_error_at'))}: {row['last_error']}"
                 if row.get("last_error") else ""))
