"""``mss audit ...``: read the audit trail."""

from __future__ import annotations

import json
import os
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from audit.checkpoints import (
    CheckpointError,
    purge,
    read_witness,
    signing_key,
    verify_all,
    write_checkpoint,
)
from audit.dicom import audit_source, to_xml
from audit.events import CATALOGUE, Event, Outcome
from audit.fhir import to_audit_event
from audit.journal import AuditRecord, append, count, query
from audit.shipper import Outbox
from mss.cli_output import JSON_OPTION, Column, emit, when
from mss.cli_support import actor, fail, node

audit_app = typer.Typer(no_args_is_help=True, help="The audit trail.")


def _since(value: str, option: str = "--since") -> str:
    """ISO 8601 date or date-time -> the journal's UTC text form (sortable as text); an
    error names *option*, the one the value was given for."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option}: not an ISO 8601 date or time: {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


MailboxOpt = Annotated[str | None, typer.Option("--mailbox", help="Only this mailbox.")]
SinceOpt = Annotated[str | None, typer.Option("--since", help="ISO 8601 start time.")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="ISO 8601 end time (excluded).")]
ActorOpt = Annotated[str | None, typer.Option("--actor", help="Only this actor.")]
EventOpt = Annotated[str | None, typer.Option(
    "--event", help="An event kind, or a dotted prefix such as 'smtp' or 'admin.mailbox'.")]
OutcomeOpt = Annotated[int | None, typer.Option("--outcome", help="0, 4, 8 or 12.")]
MessageOpt = Annotated[str | None, typer.Option(
    "--message-id", help="RFC 5322 Message-ID, with or without its angle brackets.")]
PatientOpt = Annotated[str | None, typer.Option("--patient", help="Patient pseudonym.")]


def _filters(mailbox: str | None, since: str | None, until: str | None, actor: str | None,
             event: str | None, outcome: int | None, message_id: str | None,
             patient: str | None) -> dict[str, Any]:
    if outcome is not None and outcome not in (0, 4, 8, 12):
        fail(f"--outcome: {outcome} is not 0, 4, 8 or 12")
    stem = (event or "").removesuffix(".")
    if event and not any(k == stem or k.startswith(f"{stem}.") for k in CATALOGUE):
        fail(f"--event: {event!r} is no event kind nor dotted prefix of one "
             "(see docs/audit-events.md)")
    return {"mailbox": mailbox, "since": _since(since) if since else None,
            "until": _since(until, "--until") if until else None, "actor": actor, "event": event,
            "outcome": outcome, "message_id": message_id, "patient": patient}


@audit_app.command("list")
def audit_list(
    ctx: typer.Context, mailbox: MailboxOpt = None, since: SinceOpt = None,
    until: UntilOpt = None, actor_name: ActorOpt = None, event: EventOpt = None,
    outcome: OutcomeOpt = None, message_id: MessageOpt = None, patient: PatientOpt = None,
    json_out: JSON_OPTION = False,
) -> None:
    """List audit records, oldest first (--json: every field of each record)."""
    filters = _filters(mailbox, since, until, actor_name, event, outcome, message_id, patient)
    with node(ctx) as app:
        with app.reader.connect() as conn:
            rows = list(query(conn, **filters))
        with app.engine.begin() as conn:  # reading the trail is itself traced (ATNA)
            used = {k: v for k, v in filters.items() if v is not None}
            append(conn, [AuditRecord(Event.AUDIT_READ, actor=actor(), mailbox=mailbox,
                                      detail={**used, "rows": len(rows)})])
    for row in rows:
        row["about"] = "  ".join(f"{key}={row[key]}" for key in ABOUT if row[key] is not None)
    emit(rows, AUDIT_COLUMNS, json_out=json_out, json_skip=("about",),
         caption=f"{len(rows)} record(s)")


ABOUT = ("remote_addr", "mail_from", "rcpt", "mailbox", "message_id", "reason",
         "whitelist_version")
AUDIT_COLUMNS = (Column("ts", header="time (UTC)", min_width=10,
                        format=lambda v: f"{str(v)[:10]} {str(v)[11:19]}"),
                 Column("event"), Column("outcome", justify="right"), Column("actor"),
                 Column("about"))


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    witness: Annotated[Path | None, typer.Option(
        "--witness", help="The checkpoints as an audit repository received them: its file "
        "of syslog messages (DICOM XML) or JSON lines from 'mss audit export'.")] = None,
) -> None:
    """Check the hash chain and the signed checkpoints; name the first modified, deleted,
    inserted or reordered record; with --witness, that no checkpoint the repository
    received is missing or different here (a cut tail). Exit 0 when intact, 1 when not."""
    witnessed = None
    if witness is not None:
        try:
            witnessed = read_witness(witness.read_text("utf-8", "replace"))
        except OSError as exc:
            fail(f"--witness: cannot read {witness}: {exc.strerror}")
    with node(ctx) as app:
        key = signing_key(app.config.audit.signing_key_file)
        with app.reader.connect() as conn:
            result = verify_all(conn, key, witnessed)
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
        cutoff = _since(before, "--before") if before else _since(
            (now - timedelta(days=days)).isoformat())
        key = signing_key(app.config.audit.signing_key_file)
        try:
            with app.engine.begin() as conn:
                result = purge(conn, key, cutoff, _since(now.isoformat()), days)
                append(conn, [AuditRecord(Event.AUDIT_PURGE, actor=actor(),
                                          detail={"before": cutoff, **result})])
        except CheckpointError as exc:
            app.audit(AuditRecord(Event.AUDIT_PURGE, Outcome.MINOR_FAILURE, actor=actor(),
                                  reason=str(exc), detail={"before": cutoff}))
            fail(str(exc))
    print(f"{result['deleted']} records before {cutoff} deleted; chain now starts after "
          f"signed checkpoint on record {result['checkpoint']}" if result["deleted"]
          else f"no record before {cutoff}")


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option(
        "--format", help="dicom-xml, fhir-json (BALP AuditEvent) or jsonl.")] = "jsonl",
    since: SinceOpt = None, until: UntilOpt = None,
) -> None:
    """Export records, one per line: DICOM AuditMessage XML, FHIR AuditEvent JSON, or raw.
    The export is itself traced (audit.export), as listing is (ATNA "Audit Log Used")."""
    if fmt not in ("dicom-xml", "fhir-json", "jsonl"):
        fail(f"--format: unknown format {fmt!r} (dicom-xml, fhir-json, jsonl)")
    filters = _filters(None, since, until, None, None, None, None, None)
    window = {"since": filters["since"], "until": filters["until"]}
    used = {k: v for k, v in window.items() if v is not None}
    with node(ctx) as app:
        source = audit_source(app.config)
        with app.engine.begin() as conn:  # traced before any row is printed
            rows = count(conn, **window)
            append(conn, [AuditRecord(Event.AUDIT_EXPORT, actor=actor(),
                                      detail={"format": fmt, **used, "rows": rows})])
        with app.reader.connect() as conn:  # streamed: the trail may be large
            for row in query(conn, **window, limit=rows) if rows else ():
                if fmt == "jsonl":
                    print(json.dumps(row, ensure_ascii=False, sort_keys=True))
                elif fmt == "fhir-json":
                    print(json.dumps(to_audit_event(row, source), ensure_ascii=False))
                else:
                    print(to_xml(row, source).decode("utf-8"))


@audit_app.command("status")
def audit_status(ctx: typer.Context, json_out: JSON_OPTION = False) -> None:
    """Per configured destination: backlog, last record shipped, last success, last error."""
    with node(ctx) as app:
        destinations = app.config.audit.destinations
        if not destinations and not json_out:
            print("no audit destination configured ([[audit.destinations]])")
            return
        rows = Outbox(app.engine, app.reader).status([d.name for d in destinations])
    listing: list[dict[str, object]] = [
        {"destination": dest.name, "transport": dest.transport,
         "address": f"{dest.host}:{dest.port}", "backlog": row["backlog"],
         "shipped": row["last_id"], "newest": row["newest_id"],
         "last_success_at": row.get("last_success_at"),
         "last_error_at": row.get("last_error_at"), "last_error": row.get("last_error")}
        for dest, row in zip(destinations, rows, strict=True)]
    for r in listing:  # the table's cells
        r["to"] = f"{r['transport']} {r['address']}"
        r["up_to"] = f"{r['shipped']} of {r['newest']}"
        r["error"] = (f"{when(r['last_error_at'])}: {r['last_error']}" if r["last_error"]
                      else None)
    emit(listing, STATUS_COLUMNS, json_out=json_out, json_skip=("to", "up_to", "error"))


STATUS_COLUMNS = (Column("destination"), Column("to"), Column("backlog", justify="right"),
                  Column("up_to", header="shipped up to"),
                  Column("last_success_at", header="last success", format=when, min_width=10),
                  Column("error", header="last error"))


_PSEUDONYM = re.compile(r"pp-[0-9a-f]{32}")


@audit_app.command("reveal-request")
def audit_reveal_request(
    ctx: typer.Context,
    patient: Annotated[str, typer.Argument(help="The patient pseudonym (pp-...).")],
    reason: Annotated[str, typer.Option(
        "--reason", help="Why (an investigation, a court order's reference): recorded.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the request here (0600) instead of stdout.")] = None,
) -> None:
    """Record that the identifier behind a pseudonym is to be revealed, and write what the
    trusted third party needs ('mss-ttp reveal'): the sealed values the trail holds for
    it. The node cannot open them (docs/mssante-messages.md)."""
    if not _PSEUDONYM.fullmatch(patient):
        fail(f"{patient!r} is not a patient pseudonym (pp- and 32 hexadecimal digits)")
    reason = " ".join(reason.split())
    if not reason or len(reason) > 500:
        fail("--reason: give the investigation's reason (1 to 500 characters)")
    request_id = secrets.token_hex(8)
    with node(ctx) as app:
        sealed: dict[str, str] = {}  # key id -> the newest value sealed to that key
        records: list[int] = []
        with app.reader.connect() as conn:
            for row in query(conn, patient=patient, event=Event.SMTP_MESSAGE_ACCEPTED):
                value = (row.get("detail") or {}).get("patient_sealed")
                if isinstance(value, str) and value.count(".") == 2:
                    sealed[value.split(".")[1]] = value
                    records.append(int(row["id"]))
        detail = {"patient": patient, "request": request_id, "sealed": len(sealed),
                  "records": records[-20:]}
        if not sealed:
            app.audit(AuditRecord(Event.AUDIT_REVEAL_REQUEST, Outcome.MINOR_FAILURE,
                                  actor=actor(), reason=reason, detail=detail))
            fail(f"no sealed identifier for {patient} in the trail (audit."
                 "ttp_public_key_file was not set when its messages came in)")
        request = {"request": request_id, "pseudonym": patient, "reason": reason,
                   "requested_by": actor(), "node": app.config.smtp.hostname,
                   "requested_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "sealed": list(sealed.values()), "records": records}
        with app.engine.begin() as conn:  # recorded before anything leaves the node
            append(conn, [AuditRecord(Event.AUDIT_REVEAL_REQUEST, actor=actor(),
                                      reason=reason, detail=detail)])
    text = json.dumps(request, indent=2) + "\n"
    if output is None:
        print(text, end="")
        return
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        fail(f"--output: cannot write {output}: {exc.strerror}")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    print(f"reveal request {request_id} written to {output} ({len(sealed)} sealed value(s))")
